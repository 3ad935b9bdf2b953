"""Alignment against the right baselines, measured in one run on the quickstart's data.

Pretrains the quickstart's forecasting and contrastive encoders (fewer steps), probes both on
the quickstart's probe sources, then runs both alignments of the study with every ablation:
forecast alignment of the encoder with the larger validation forecasting gap (truncate /
frozen-head / full; its decoder scored with GluonTS next to the forecasting objective's head,
truncation + ridge and seasonal naive) and dynamics alignment of the encoder with the larger
dense gap (self / corr / both; teachers: the other encoder (learned), spectral, latent states
(oracle, trained on LGSSM series since the mixture has no latent states)).

    python benchmarks/bench_align.py                 # the recorded run (<= 10 min, 2 cores)
    python benchmarks/bench_align.py --small         # smoke run
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from tslayers.align import AlignConfig, align
from tslayers.config import load_config
from tslayers.data import DataConfig
from tslayers.probing import merge_results, probe_sources, read_results, write_results
from tslayers.probing.analysis import largest_gap_model
from tslayers.report import alignment_markdown
from tslayers.study import StudyConfig

ROOT = Path(__file__).resolve().parents[1]


def _train(cfg, steps: int, **kw):
    return dataclasses.replace(cfg, max_steps=steps, warmup_steps=max(1, steps // 10),
                               val_check_interval=max(1, steps // 2),
                               ckpt_every_n_steps=max(1, steps // 2), limit_val_batches=4,
                               progress_bar=False, **kw)


def pretrain_and_probe(study: StudyConfig, work: Path, steps: int) -> dict[str, Path]:
    """Forecasting and contrastive encoders, each probed (no controls) on every source."""
    from tslayers.model import TemporalEncoder
    from tslayers.objectives import load_objective
    from tslayers.training import PretrainConfig, pretrain

    files = {}
    for obj in study.objectives:
        if obj.name not in ("forecast", "contrastive"):
            continue
        cfg = PretrainConfig(data=study.data, encoder=dataclasses.replace(study.encoder),
                             objective=obj, train=_train(study.train, steps))
        run = pretrain(cfg, out_dir=work / "pretrain" / obj.name)
        enc = TemporalEncoder.from_pretrained(run).eval()
        res = probe_sources(enc, study.probe_data, study.probe, model_name=obj.name,
                            objective=load_objective(run / "objective", enc.config))
        files[obj.name] = write_results(res, work / "probe" / f"{obj.name}.nc")
    return files


def align_configs(study: StudyConfig, work: Path, files: dict[str, Path], steps: int,
                  oracle: DataConfig) -> list[AlignConfig]:
    merged = merge_results([read_results(p) for p in files.values()])
    out = []
    for spec in study.align:
        name = largest_gap_model(merged, list(files), spec.target_task)
        other = next(n for n in files if n != name)
        kw = dict(objective=name, name=name, checkpoint=str(work / "pretrain" / name),
                  results=str(files[name]), reuse_before=True, data=study.data,
                  probe=study.probe, probe_data=study.probe_data,
                  stage1=_train(spec.stage1, steps), stage2=_train(spec.stage2, steps))
        if spec.kind == "forecast":
            kw["forecast_reference"] = str(work / "pretrain" / "forecast")
        else:
            kw.update(teachers=["encoder", "spectral", "latent"], oracle_data=oracle,
                      teacher_checkpoint=str(work / "pretrain" / other),
                      teacher_results=str(files[other]), teacher_name=other,
                      dynamics=dataclasses.replace(spec.dynamics, locality_layer=None))
        out.append(dataclasses.replace(spec, **kw))
    return out


def _ci(v: float, lo: float, hi: float, fmt: str = "+.3f", flag: bool = True) -> str:
    flag = " *" if flag and np.isfinite(lo) and (lo > 0 or hi < 0) else ""
    return f"{v:{fmt}} [{lo:{fmt}}, {hi:{fmt}}]{flag}"


def headline(kind: str, summary: dict) -> list[str]:
    """The figures the issue asks for, one line each."""
    lines = [f"## {kind} alignment of {summary['before']}", ""]
    for model, ab in summary["ablations"].items():
        short = model.split("/align-", 1)[1]
        for key, row in ab["scores"].items():
            fam = ("target" if row["target"] else "cost") + f" ({row['family']})"
            text = f"- {short} | {ab['teacher']} | {key} [{fam}]: vs unaligned " \
                   f"{_ci(row['change'], row['change_lo'], row['change_hi'])}"
            if "vs_reference" in row:
                text += " | vs truncation " + _ci(row["vs_reference"], row["vs_reference_lo"],
                                                  row["vs_reference_hi"])
            lines.append(text)
    if "beyond_truncation" in summary:
        b = summary["beyond_truncation"]
        share = "not defined (no target task has a validation gap above its interval)" \
            if not np.isfinite(b["share"]) else \
            f"{b['share']:.0%} [{b['lo']:.0%}, {b['hi']:.0%}] over {b['n_tasks']} task(s)"
        lines += ["", f"gap closed beyond truncation: {share}"]
    fc = summary.get("forecasts", {})
    if "_meta" in fc:
        from tslayers.align.forecasts import mase_difference

        lines += ["", f"Decoder forecasts (GluonTS, season {fc['_meta']['season']}):"]
        for name, row in fc.items():
            if name != "_meta":
                mase = _ci(row["MASE"], row["MASE_lo"], row["MASE_hi"], ".3f", False)
                lines.append(f"- {name}: MASE {mase}, wQL {row['wQL']:.4f}")
        for ref in ("forecast objective head", "seasonal naive", "truncate + ridge"):
            if ref in fc:
                d = mase_difference(fc, "full decoder", ref)
                lines.append(f"- MASE full decoder - {ref}: {_ci(*d)}")
    return lines + [""]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pretrain-steps", type=int, default=300)
    ap.add_argument("--align-steps", type=int, default=80)
    ap.add_argument("--max-windows", type=int, default=128)
    ap.add_argument("--small", action="store_true", help="tiny smoke run")
    ap.add_argument("--work", default="runs/bench_align")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "align.md"))
    args = ap.parse_args()
    t0 = time.perf_counter()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    study = load_config(StudyConfig, ROOT / "configs" / "quickstart.yaml", [])
    study.probe = dataclasses.replace(study.probe, controls=[], permutations=0,
                                      max_windows=args.max_windows, progress=False)
    if args.small:
        args.pretrain_steps, args.align_steps = 4, 2
        study.probe = dataclasses.replace(study.probe, max_windows=48, bootstrap=10)
    oracle = dataclasses.replace(study.probe_data[0].data, batch_size=study.data.batch_size,
                                 params={**study.probe_data[0].data.params, "seed": 2})
    work = Path(args.work)
    files = pretrain_and_probe(study, work, args.pretrain_steps)
    lines, summaries = [], {}
    for cfg in align_configs(study, work, files, args.align_steps, oracle):
        out = align(cfg, work / "align" / cfg.kind)
        summary = json.loads((out / "summary.json").read_text())
        summary["before"] = cfg.name
        summaries[f"{cfg.kind}-{cfg.name}-s0"] = summary
        lines += headline(cfg.kind, summary)
    wall = (time.perf_counter() - t0) / 60
    print("\n".join(lines))
    args.max_windows = study.probe.max_windows
    write_report(Path(args.out), args, lines, alignment_markdown(summaries), wall)
    print(f"wall time {wall:.1f} min -> {args.out}")


def write_report(path: Path, args, lines: list[str], tables: str, wall: float) -> None:
    cmd = "python benchmarks/bench_align.py" + (" --small" if args.small else "")
    head = [
        "# Alignment against the right baselines (benchmarks/bench_align.py)", "",
        f"- command: `{cmd}` (pretrain {args.pretrain_steps} steps per objective, "
        f"alignment {args.align_steps} steps per stage / ablation, probe max_windows "
        f"{args.max_windows}, no probe controls or permutations: shrunk for a 10-minute budget)",
        f"- date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC",
        f"- machine: {platform.machine()} 2-core CPU (shared), torch "
        f"{torch.__version__}, {torch.get_num_threads()} threads, no GPU",
        f"- wall time: {wall:.1f} min; data: configs/quickstart.yaml (train: synthetic "
        "mixture; probes: its five probe sources); one pretraining seed (0)",
        "- intervals: 90% paired bootstrap over test series; * = interval excludes 0", ""]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(head + lines) + "\n" + tables)


if __name__ == "__main__":
    main()
