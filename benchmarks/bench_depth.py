"""How long will a depth study take? Short CPU-time measurements, extrapolated to the config.

At each measured depth (default 2 and 8), in one thread:
- ``step``: CPU seconds of one bare training step (fwd + bwd + AdamW) of every objective;
- ``pretrain_2`` / ``pretrain_N``: CPU seconds of a real pretrain stage (``pretrain``: data,
  Lightning, validation, checkpoints, export) of the first objective with 2 and 2 + ``--steps``
  steps; their difference gives the per-step cost inside Lightning, their intercept the fixed
  cost of a stage;
- ``probe``: CPU seconds of the probe stage of that encoder (every layer, task and control).
Every cost is taken as linear in depth (a + b L) and summed over depths x seeds x objectives.
CPU seconds are used because the machine may be shared (wall time then says little); in one
thread they are the wall time a quiet machine needs, and an upper bound for two threads.

    python benchmarks/bench_depth.py configs/study/depth.yaml            # ~4 min, 1 thread
    python benchmarks/bench_depth.py configs/study/depth.yaml --json t.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from tslayers.config import load_config
from tslayers.data import SeriesDataModule
from tslayers.depth import DepthStudyConfig
from tslayers.model import TemporalEncoder
from tslayers.objectives import load_objective
from tslayers.probing import probe_sources
from tslayers.training import PretrainConfig, pretrain
from tslayers.training.pretraining import build_models

REPORT_S = 10.0  # CPU seconds of a per-depth report stage (markdown + figures), measured once


def _cpu(work: Callable[[], object]) -> float:
    t = time.process_time()
    work()
    return time.process_time() - t


def step_cpu(config: PretrainConfig, n: int = 6) -> float:
    """Median CPU seconds of a bare training step, after one warm-up step."""
    batch = next(iter(SeriesDataModule(config.data).train_dataloader()))
    encoder, objective = build_models(config.encoder, config)
    opt = torch.optim.AdamW([p for m in (encoder, objective) for p in m.parameters()
                             if p.requires_grad])

    def step() -> None:
        loss = objective(encoder, batch).loss
        opt.zero_grad()
        loss.backward()
        opt.step()

    return float(np.median([_cpu(step) for _ in range(n + 1)][1:]))


def measure(config: DepthStudyConfig, depth: int, steps: int) -> dict:
    """The CPU costs (seconds) of one depth: bare steps, two pretrain stages, one probe."""
    study = config.study
    encoder_cfg = dataclasses.replace(study.encoder, n_layers=depth)
    cfgs = {o.name: PretrainConfig(data=dataclasses.replace(study.data), encoder=encoder_cfg,
                                   objective=o, train=study.train) for o in study.objectives}
    row: dict = {"depth": depth, "step": {name: step_cpu(c) for name, c in cfgs.items()}}
    first = study.objectives[0].name
    with tempfile.TemporaryDirectory() as tmp:
        for n in (2, 2 + steps):
            train = dataclasses.replace(study.train, max_steps=n, warmup_steps=1,
                                        val_check_interval=n, ckpt_every_n_steps=n)
            cfg = dataclasses.replace(cfgs[first], train=train)
            run = Path(tmp) / f"steps{n}"
            row[f"pretrain_{n}"] = _cpu(lambda c=cfg, d=run: pretrain(c, out_dir=d))
        encoder = TemporalEncoder.from_pretrained(run / "encoder").eval()
        objective = load_objective(run / "objective", encoder.config)
        probe_cfg = dataclasses.replace(study.probe, seeds=study.seeds[:1])
        row["probe"] = _cpu(lambda: probe_sources(encoder, study.probe_data, probe_cfg,
                                                  model_name=first, objective=objective))
    row["overhead"] = (row[f"pretrain_{2 + steps}"] - row["pretrain_2"]) / (
        steps * row["step"][first])
    row["fixed"] = row["pretrain_2"] - 2 * row["overhead"] * row["step"][first]
    return row


def _linear(rows: list[dict], get: Callable[[dict], float], depth: int) -> float:
    """a + b L through the measured depths, evaluated at ``depth`` (never below 0)."""
    x = [r["depth"] for r in rows]
    y = [get(r) for r in rows]
    fit = np.polyfit(x, y, 1) if len(rows) > 1 else np.array([0.0, y[0]])
    return max(0.0, float(np.polyval(fit, depth)))


def estimate(config: DepthStudyConfig, rows: list[dict]) -> dict[str, float]:
    """CPU minutes of the whole config, split into pretraining, probing and reports."""
    study, train = config.study, config.study.train
    n_val = train.max_steps // train.val_check_interval + 1
    val_steps = n_val * (train.limit_val_batches or 8) / 3  # forward only: ~1/3 of a step
    overhead = float(np.mean([r["overhead"] for r in rows]))
    out = {"pretrain": 0.0, "probe": 0.0, "report": 0.0}
    for depth in config.depths:
        for obj in study.objectives:
            step = _linear(rows, lambda r, o=obj.name: r["step"][o], depth)
            run = _linear(rows, lambda r: r["fixed"], depth) + \
                overhead * step * (train.max_steps + val_steps)
            out["pretrain"] += len(study.seeds) * run
            out["probe"] += len(study.seeds) * _linear(rows, lambda r: r["probe"], depth)
        out["report"] += REPORT_S
    out = {k: v / 60 for k, v in out.items()}
    out["total"] = sum(out.values())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config", nargs="?", default="configs/study/depth.yaml")
    ap.add_argument("overrides", nargs="*", help="config overrides key.sub=value")
    ap.add_argument("--depths", default="2,8", help="depths to measure at")
    ap.add_argument("--steps", type=int, default=20, help="extra steps of the second pretrain")
    ap.add_argument("--threads", type=int, default=1, help="torch threads while measuring")
    ap.add_argument("--json", default=None, help="also write the measurements here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    config = load_config(DepthStudyConfig, args.config, args.overrides)
    rows = [measure(config, int(d), args.steps) for d in args.depths.split(",")]
    est = estimate(config, rows)
    for r in rows:
        steps = ", ".join(f"{k} {v * 1e3:.0f}" for k, v in r["step"].items())
        print(f"L={r['depth']}: bare step CPU ms: {steps}; Lightning x{r['overhead']:.2f}; "
              f"pretrain stage fixed {r['fixed']:.1f} s; probe stage {r['probe']:.1f} s")
    print(f"estimate for {args.config} {' '.join(args.overrides)}: {est['total']:.0f} CPU-min "
          f"(pretrain {est['pretrain']:.0f}, probe {est['probe']:.0f}, reports "
          f"{est['report']:.0f}); load average during the measurement {os.getloadavg()[0]:.1f} "
          f"on {os.cpu_count()} CPUs")
    if args.json:
        Path(args.json).write_text(json.dumps({"config": args.config, "overrides": args.overrides,
                                               "threads": args.threads, "measured": rows,
                                               "estimate_cpu_min": est}, indent=1))


if __name__ == "__main__":
    main()
