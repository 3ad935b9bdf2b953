"""Throughput of the synthetic engine (series/s), the Kalman optimum and window batching.

    python benchmarks/bench_data.py                   # 10,000 series x 512 steps
    python benchmarks/bench_data.py --n-series 1000   # quicker
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from tslayers.data import WindowDataset, collate_windows, make_mixture
from tslayers.data.kalman import lgssm_optimum
from tslayers.data.synthetic import GENERATORS


def _time(fn, repeat: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n-series", type=int, default=10_000)
    ap.add_argument("--length", type=int, default=512)
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args()
    n, t = args.n_series, args.length
    print(f"synthetic engine: {n} series x {t} steps, 3 channels, "
          f"{torch.get_num_threads()} torch threads, numpy {np.__version__}")
    print(f"{'generator':<16}{'seconds':>10}{'series/s':>12}")
    datasets = {}
    for name, gen in [*GENERATORS.items(), ("mixture", make_mixture)]:
        sec, ds = _time(lambda g=gen: g(n, t, seed=0), args.repeat)
        datasets[name] = ds
        print(f"{name:<16}{sec:>10.2f}{n / sec:>12,.0f}")

    sec, res = _time(lambda: lgssm_optimum(datasets["lgssm"], horizons=(1, 4, 16)), 1)
    print(f"\nlgssm_optimum (filter+smoother+forecasts, whole series): {sec:.2f} s "
          f"({n / sec:,.0f} series/s); filtered R2 {res['filtered_r2_mean']:.3f}, "
          f"smoothed R2 {res['smoothed_r2_mean']:.3f}, "
          f"1-step MSE {res['forecast_mse'][1]:.3f}")
    sec, res = _time(lambda: lgssm_optimum(datasets["lgssm"], horizons=(1,), context=64), 1)
    print(f"lgssm_optimum window/prior, context 64: {sec:.2f} s; filtered R2 "
          f"{res['filtered_r2_mean']:.3f}, 1-step MSE {res['forecast_mse'][1]:.3f}")

    ds = datasets["mixture"]
    sec, w = _time(lambda: WindowDataset(ds, context=256, horizon=32, stride=64), 1)
    loader = torch.utils.data.DataLoader(w, batch_size=256, shuffle=True,
                                         collate_fn=collate_windows)
    t0 = time.perf_counter()
    seen = sum(len(b["x"]) for b in loader)
    sec_it = time.perf_counter() - t0
    print(f"\nWindowDataset(context 256, horizon 32, stride 64): built in {sec:.2f} s, "
          f"{len(w):,} windows; one shuffled epoch at batch 256: {seen / sec_it:,.0f} windows/s")


if __name__ == "__main__":
    main()
