"""Real-data benchmark: every offline UCR/UEA classification set, the shipped anomaly sets,
and shipped forecasting collections, each with baselines run here and bootstrap intervals.

The work lives in ``benchmarks/real/`` (one module per task kind); this script selects what to
run, caches each dataset's result as JSON under ``--work`` (an interrupted run resumes), and
writes the markdown report with the command, date, machine and wall time.

    python benchmarks/real_data.py                          # full run
    python benchmarks/real_data.py --quick                  # smoke run (< 10 min on 2 cores)
    python benchmarks/real_data.py --kinds classification --datasets GunPoint,ArrowHead
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.real import anomaly, classification, forecasting, report  # noqa: E402
from benchmarks.real.common import ROOT, cached, elapsed, load_bench_config, log, quiet, rel  # noqa: E402

DEFAULT_CONFIG = ROOT / "configs" / "real" / "real_data.yaml"
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "real_data.md"
DEFAULT_WORK = ROOT / "runs" / "real_data"  # runs/ is gitignored
KINDS = {"classification": classification.run_dataset, "anomaly": anomaly.run_dataset,
         "forecasting": forecasting.run_collection}


def machine_note(threads: int) -> str:
    import gluonts

    return (f"{platform.platform()}, {platform.processor() or platform.machine()}, "
            f"{torch.get_num_threads()} torch threads (requested {threads}), no GPU used; "
            f"python {platform.python_version()}, torch {torch.__version__}, "
            f"gluonts {gluonts.__version__}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    p.add_argument("--quick", action="store_true", help="smoke run: the config's quick section")
    p.add_argument("--kinds", default=",".join(KINDS), help=f"comma-separated, of {list(KINDS)}")
    p.add_argument("--datasets", help="comma-separated names (default: each kind's config list)")
    p.add_argument("--out", type=Path, default=None,
                   help=f"markdown report (default: {rel(DEFAULT_OUT)}; --quick only prints "
                   "unless --out is given)")
    p.add_argument("--work", type=Path, default=DEFAULT_WORK,
                   help="per-dataset JSON cache and run folders (default: runs/real_data)")
    p.add_argument("--force", action="store_true", help="ignore cached per-dataset results")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest here)")
    p.add_argument("--seed", type=int, default=None)
    args = p.parse_args(argv)

    quiet()
    torch.set_num_threads(args.threads)
    cfg = load_bench_config(args.config, args.quick)
    cfg["seed"] = int(cfg.get("seed", 0) if args.seed is None else args.seed)
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    bad = [k for k in kinds if k not in KINDS]
    if bad:
        p.error(f"unknown kinds {bad}; known: {list(KINDS)}")
    wanted = set(args.datasets.split(",")) if args.datasets else None
    if wanted:
        known = {d for k in KINDS for d in _known(k, cfg)}
        if wanted - known:
            p.error(f"unknown datasets {sorted(wanted - known)}; known: {sorted(known)}")
    work = args.work / ("quick" if args.quick else "full")
    out = args.out if args.out is not None else (None if args.quick else DEFAULT_OUT)

    results: dict[str, list[dict]] = {}
    for kind in kinds:
        # --datasets picks from every set a kind knows, not only its config list
        names = list(cfg[kind]["datasets"]) if wanted is None else [
            d for d in _known(kind, cfg) if d in wanted]
        for name in names:
            torch.set_num_threads(args.threads)  # Lightning/gluonts may change it
            settings = {"kind": kind, "name": name, "cfg": cfg[kind], "seed": cfg["seed"],
                        "n_boot": cfg["n_boot"]}
            res = cached(work, kind, name, settings,
                         lambda k=kind, n=name: KINDS[k](n, cfg, cfg["seed"], work / "runs"),
                         force=args.force)
            results.setdefault(kind, []).append(res)
            log(f"{kind} {name}: done ({res['wall_s']:.0f}s of compute)")

    summary: list[str] = []
    sections = []
    if "classification" in results:
        sections.append(report.classification(results["classification"], cfg, summary))
    if "anomaly" in results:
        sections.append(report.anomaly(results["anomaly"], cfg, summary))
    if "forecasting" in results:
        sections.append(report.forecasting(results["forecasting"], cfg, summary))
    torch.set_num_threads(args.threads)
    total = elapsed()
    computed = sum(r["wall_s"] for rs in results.values() for r in rs)
    shown = [rel(Path(a)) if Path(a).is_absolute() else a
             for a in (argv if argv is not None else sys.argv[1:])]
    cmd = ("python benchmarks/real_data.py " + " ".join(shown)).strip()
    header = (
        "# Real-data benchmark: classification, anomaly localisation, forecasting\n\n"
        f"- command: `{cmd}`\n"
        f"- date: {dt.datetime.now(dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}\n"
        f"- machine: {machine_note(args.threads)}\n"
        f"- wall time: {computed / 60:.1f} min of per-dataset compute (this invocation "
        f"{total / 60:.1f} min; results computed earlier are read from the JSON cache under "
        "--work), "
        f"seed {cfg['seed']}, config "
        f"`{rel(args.config)}`{' (quick)' if args.quick else ''}\n"
        "- per-dataset compute (s): " + ", ".join(
            f"{r['dataset']} {r['wall_s']:.0f}" for rs in results.values() for r in rs) + "\n")
    text = (header + "\n## Summary\n\n" + report.summary_table(summary) + "\n\n"
            + "\n\n".join(sections) + "\n")
    print(text)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
        log(f"wrote {rel(out)}")
    log(f"done in {total / 60:.1f} min")
    return 0


def _known(kind: str, cfg: dict) -> list[str]:
    from tslayers.data.adapters import UCR_SHIPPED

    extra = {"classification": UCR_SHIPPED, "anomaly": tuple(anomaly.RUNNERS),
             "forecasting": tuple(cfg["forecasting"]["collections"])}[kind]
    return list(dict.fromkeys([*cfg[kind]["datasets"], *extra]))


if __name__ == "__main__":
    raise SystemExit(main())
