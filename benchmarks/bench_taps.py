"""Cost of tapping every layer in one pass (forward hooks on the stable tap modules) vs a plain
forward vs L truncated forwards.

Issue target: tapping all layers costs at most 1.15x a plain forward (6 layers, d_model=128,
batch 64, 512 time steps). Run: ``python benchmarks/bench_taps.py``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from tslayers.model import EncoderConfig, TemporalEncoder
from tslayers.probing.sources import all_layers


def _time_interleaved(fns: dict, repeats: int) -> dict[str, float]:
    """Median seconds per call, the variants run round-robin so drifts in machine load hit all
    of them alike (a 50 ms pass on a shared 2-core box is noisy)."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for fn in fns.values():
        fn()  # warm-up
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(t) for name, t in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--length", type=int, default=512)
    ap.add_argument("--channels", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=25)
    args = ap.parse_args()
    torch.manual_seed(0)
    cfg = EncoderConfig(n_channels=args.channels, patch_len=16, d_model=128, n_layers=6, n_heads=4)
    enc = TemporalEncoder(cfg).eval()
    x = torch.randn(args.batch, args.length, args.channels)
    truncated = [enc.truncated(i) for i in range(1, enc.n_layers + 1)]
    with torch.inference_mode():
        t = _time_interleaved({
            "plain": lambda: enc(x),
            "tapped": lambda: all_layers(enc, x),
            "stats": lambda: all_layers(enc, x, attn_stats=True),
            "separate": lambda: [m(x) for m in truncated],
        }, args.repeats)
    plain, tapped, stats, separate = t["plain"], t["tapped"], t["stats"], t["separate"]
    print(f"encoder: 6 layers, d_model=128, batch={args.batch}, T={args.length}, "
          f"C={args.channels}, threads={torch.get_num_threads()} "
          f"(median of {args.repeats}, interleaved)")
    print(f"{'pass':<34}{'seconds':>10}{'x plain':>10}")
    for name, sec in [("plain forward", plain), ("forward tapping all 7 layers", tapped),
                    ("taps + attention statistics", stats),
                    ("6 separate truncated forwards", separate)]:
        print(f"{name:<34}{sec:>10.4f}{sec / plain:>10.2f}")
    verdict = "meets" if tapped / plain <= 1.15 else "misses"
    print(f"target taps <= 1.15x plain: {tapped / plain:.3f}x ({verdict})")


if __name__ == "__main__":
    main()
