"""Cost of tapping every layer in one pass vs a plain forward vs L truncated forwards.

Issue target: tapping all layers costs at most 1.15x a plain forward (6 layers, d_model=128,
batch 64, 512 time steps). Run: ``python benchmarks/bench_taps.py``.
"""

from __future__ import annotations

import argparse
import time

import torch

from tslayers.model import EncoderConfig, TemporalEncoder


def _time(fn, repeats: int) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--length", type=int, default=512)
    ap.add_argument("--channels", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    torch.manual_seed(0)
    cfg = EncoderConfig(n_channels=args.channels, patch_len=16, d_model=128, n_layers=6, n_heads=4)
    enc = TemporalEncoder(cfg).eval()
    x = torch.randn(args.batch, args.length, args.channels)
    truncated = [enc.truncated(i) for i in range(1, enc.n_layers + 1)]
    with torch.inference_mode():
        plain = _time(lambda: enc(x), args.repeats)
        tapped = _time(lambda: enc(x, taps="all"), args.repeats)
        stats = _time(lambda: enc(x, taps="all", attn_stats=True), args.repeats)
        separate = _time(lambda: [t(x) for t in truncated], args.repeats)
    print(f"encoder: 6 layers, d_model=128, batch={args.batch}, T={args.length}, "
          f"C={args.channels}, threads={torch.get_num_threads()} (best of {args.repeats})")
    print(f"{'pass':<34}{'seconds':>10}{'x plain':>10}")
    for name, t in [("plain forward", plain), ("forward tapping all 7 layers", tapped),
                    ("taps + attention statistics", stats),
                    ("6 separate truncated forwards", separate)]:
        print(f"{name:<34}{t:>10.4f}{t / plain:>10.2f}")
    verdict = "meets" if tapped / plain <= 1.15 else "misses"
    print(f"target taps <= 1.15x plain: {tapped / plain:.3f}x ({verdict})")


if __name__ == "__main__":
    main()
