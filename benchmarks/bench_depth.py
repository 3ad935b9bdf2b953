"""How long will a depth study take? Short measurements, extrapolated to the whole config.

Measures at two depths (default 2 and 8):
- seconds per training step of every objective (fwd + bwd + AdamW after a warm-up;
  ``bench_pretrain.step_time``);
- one real pretrain stage of 2 steps (the fixed cost of a stage: data, Lightning, checkpoints)
  and one probe stage (every layer, every task, the untrained twin) of the first objective,
  through ``run_study``.
Step time and probe time are taken as linear in depth (a + b L) and summed over the config:
depths x seeds x objectives x (fixed + steps x step + validation batches x step / 3) plus a probe
stage each. Both wall-clock and process-CPU seconds are reported: on a shared machine the wall
clock is inflated by other work, while CPU seconds approximate the wall time on a quiet machine
when a second thread gives these small models little (an upper bound otherwise).

    python benchmarks/bench_depth.py configs/study/depth.yaml            # ~5 min on 2 cores
    python benchmarks/bench_depth.py configs/study/depth.yaml --json t.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from bench_pretrain import step_time

from tslayers.config import load_config
from tslayers.depth import DepthStudyConfig
from tslayers.stages import MARKER
from tslayers.study import run_study
from tslayers.training import PretrainConfig


def _clock() -> np.ndarray:
    return np.array([time.perf_counter(), time.process_time()])


def measure(config: DepthStudyConfig, depth: int) -> dict:
    """(wall, cpu) seconds per step of each objective, and of the fixed pretrain stage and
    the probe stage of the first objective, at one depth."""
    study = config.study
    encoder = dataclasses.replace(study.encoder, n_layers=depth)
    row: dict = {"depth": depth, "step": {}}
    for obj in study.objectives:
        cfg = PretrainConfig(data=dataclasses.replace(study.data), encoder=encoder,
                             objective=obj, train=study.train)
        t0 = _clock()
        wall = step_time(cfg, n=4)
        spent = _clock() - t0
        row["step"][obj.name] = [wall, wall * spent[1] / spent[0]]  # cpu: the call's cpu/wall
    short = dataclasses.replace(study.train, max_steps=2, warmup_steps=1, val_check_interval=2,
                                ckpt_every_n_steps=2)
    one = dataclasses.replace(study, objectives=study.objectives[:1], seeds=study.seeds[:1],
                              encoder=encoder, train=short)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = _clock()
        run_study(one, Path(tmp))
        spent = _clock() - t0
        tag = f"{one.objectives[0].name}-s{one.seeds[0]}"
        secs = {s: json.loads((Path(tmp) / s / tag / MARKER).read_text())["seconds"]
                for s in ("pretrain", "probe")}
        secs["report"] = json.loads((Path(tmp) / "report" / MARKER).read_text())["seconds"]
    ratio = spent[1] / spent[0]  # CPU seconds per wall second over the whole run
    for stage, wall in secs.items():
        row[stage] = [wall, wall * ratio]
    return row


def _linear(rows: list[dict], get) -> tuple[np.ndarray, np.ndarray]:
    """Fit a + b L for the wall and the CPU column; returns the two (a, b) pairs."""
    depths = np.array([r["depth"] for r in rows], float)
    vals = np.array([get(r) for r in rows], float)  # (n, 2)
    fit = [np.polyfit(depths, vals[:, k], 1) if len(rows) > 1 else np.array([0, vals[0, k]])
           for k in range(2)]
    return fit[0], fit[1]


def _at(fit: tuple[np.ndarray, np.ndarray], depth: int) -> np.ndarray:
    return np.array([np.polyval(fit[k], depth) for k in range(2)])


def estimate(config: DepthStudyConfig, rows: list[dict]) -> dict[str, float]:
    """Extrapolate the measured rows to every depth, seed and objective of the config
    (minutes, wall and CPU)."""
    study, train = config.study, config.study.train
    n_val = train.max_steps // train.val_check_interval + 1
    val_batches = n_val * (train.limit_val_batches or 8)
    fixed, probe, report = (_linear(rows, lambda r, s=s: r[s])
                            for s in ("pretrain", "probe", "report"))
    steps = {o.name: _linear(rows, lambda r, o=o.name: r["step"][o]) for o in study.objectives}
    total = np.zeros(2)
    for depth in config.depths:
        for step in steps.values():
            per_run = (_at(fixed, depth) + _at(step, depth) * (train.max_steps + val_batches / 3)
                       + _at(probe, depth))
            total += len(study.seeds) * per_run
        total += _at(report, depth)
    return {"wall_min": float(total[0] / 60), "cpu_min": float(total[1] / 60)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config", nargs="?", default="configs/study/depth.yaml")
    ap.add_argument("overrides", nargs="*", help="config overrides key.sub=value")
    ap.add_argument("--depths", default="2,8", help="depths to measure at")
    ap.add_argument("--json", default=None, help="also write the measurements here")
    args = ap.parse_args()
    config = load_config(DepthStudyConfig, args.config, args.overrides)
    rows = [measure(config, int(d)) for d in args.depths.split(",")]
    result = {"config": args.config, "overrides": args.overrides, "measured": rows,
              "load_avg": os.getloadavg(), "cpus": os.cpu_count(),
              "estimate": estimate(config, rows)}
    for r in rows:
        steps = ", ".join(f"{k} {v[0] * 1e3:.0f} ms ({v[1] * 1e3:.0f} cpu)"
                          for k, v in r["step"].items())
        print(f"L={r['depth']}: step {steps}; pretrain stage (2 steps) {r['pretrain'][0]:.1f} s, "
              f"probe stage {r['probe'][0]:.1f} s ({r['probe'][1]:.1f} cpu), report "
              f"{r['report'][0]:.1f} s")
    est = result["estimate"]
    print(f"estimate for {args.config}: {est['wall_min']:.0f} min at this machine's load "
          f"(load average {result['load_avg'][0]:.1f} on {result['cpus']} CPUs), "
          f"{est['cpu_min']:.0f} CPU-min (~ quiet-machine wall time, upper bound)")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
