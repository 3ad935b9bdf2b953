"""Real-data benchmark: every offline UCR/UEA classification set, the shipped anomaly sets,
and shipped forecasting collections, each with baselines run here and bootstrap intervals, over
several training seeds.

The work lives in ``benchmarks/real/`` (one module per task kind); this script selects what to
run, caches each (dataset, seed) result as JSON under ``--work`` (an interrupted run resumes;
seeds are the outer loop, so a finished seed is complete), and writes the markdown report with
the command, date, machine and wall time per seed.

    python benchmarks/real_data.py                          # full run
    python benchmarks/real_data.py --quick                  # smoke run (< 10 min on 2 cores)
    python benchmarks/real_data.py --kinds classification --datasets GunPoint,ArrowHead
    python benchmarks/real_data.py --seeds 0,1                # other training seeds
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
    p.add_argument("--seeds", help="comma-separated training seeds (default: the config's "
                   "`seeds`); each re-trains every learned model, the test split is fixed")
    args = p.parse_args(argv)

    quiet()
    torch.set_num_threads(args.threads)
    cfg = load_bench_config(args.config, args.quick)
    cfg["seeds"] = ([int(v) for v in args.seeds.split(",")] if args.seeds
                    else [int(v) for v in cfg["seeds"]])
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

    # --datasets picks from every set a kind knows, not only its config list
    names = {kind: list(cfg[kind]["datasets"]) if wanted is None else [
        d for d in _known(kind, cfg) if d in wanted] for kind in kinds}
    # results[kind][i] = dataset i's per-seed results, in the order of cfg["seeds"]
    results: dict[str, list[list[dict]]] = {k: [[] for _ in names[k]] for k in kinds}
    for seed in cfg["seeds"]:
        for kind in kinds:
            for i, name in enumerate(names[kind]):
                torch.set_num_threads(args.threads)  # Lightning/gluonts may change it
                settings = {"kind": kind, "name": name, "cfg": cfg[kind], "seed": seed,
                            "n_boot": cfg["n_boot"]}
                res = cached(work, kind, name, settings,
                             lambda k=kind, n=name, s=seed: KINDS[k](n, cfg, s, work / "runs"),
                             force=args.force)
                results[kind][i].append(res)
                log(f"{kind} {name} seed {seed}: done ({res['wall_s']:.0f}s of compute)")

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
    runs = [runs for per_kind in results.values() for runs in per_kind]
    per_seed = [sum(r[j]["wall_s"] for r in runs) for j in range(len(cfg["seeds"]))]
    shown = [rel(Path(a)) if Path(a).is_absolute() else a
             for a in (argv if argv is not None else sys.argv[1:])]
    cmd = ("python benchmarks/real_data.py " + " ".join(shown)).strip()
    header = (
        "# Real-data benchmark: classification, anomaly localisation, forecasting\n\n"
        f"- command: `{cmd}`\n"
        f"- date: {dt.datetime.now(dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}\n"
        f"- machine: {machine_note(args.threads)}\n"
        f"- wall time: {sum(per_seed) / 60:.1f} min of per-dataset compute; per seed: "
        + ", ".join(f"seed {s} {t / 60:.1f} min" for s, t in zip(cfg["seeds"], per_seed))
        + f" (this invocation {total / 60:.1f} min; results computed earlier are read from "
        f"the JSON cache under --work), config "
        f"`{rel(args.config)}`{' (quick)' if args.quick else ''}\n"
        "- per-dataset compute (s, per seed): " + ", ".join(
            f"{r[0]['dataset']} " + "/".join(f"{x['wall_s']:.0f}" for x in r) for r in runs)
        + "\n")
    text = (header + "\n## Summary\n\n" + report.summary_table(summary, cfg["seeds"]) + "\n\n"
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
