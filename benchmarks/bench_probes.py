"""All-layer streaming ridge vs sklearn ``RidgeCV`` fitted per layer: time, peak memory, scores.

Issue target: on a 12-layer, d_model=256 encoder with 20,000 windows the streaming probe is at
least 20x faster than ``RidgeCV`` per layer (same features, same lambda grid, same train/val
split, same chosen lambdas and test scores), and its peak memory does not grow with the number
of windows (shown for two sizes). Feature extraction (one forward pass tapping all 13 layers)
is timed separately; both probes then read the same in-memory features, the streaming probe in
batches. Peak memory of the fitting step is measured with ``tracemalloc`` (numpy reports its
allocations there); the feature array itself is allocated before tracing starts.

The probe is shown twice: float64 batches (the default; identical lambdas and scores to sklearn)
and float32 batch products (faster; on the nearly rank-deficient features of a random-init
encoder it can pick a different lambda at the smallest grid values, so it is opt-in).

Run: ``python benchmarks/bench_probes.py`` (add ``--windows 4000 --small 1000`` for a quick run).
"""

from __future__ import annotations

import argparse
import time
import tracemalloc
from pathlib import Path

import numpy as np
import torch

from tslayers.model import EncoderConfig, TemporalEncoder
from tslayers.probing import RidgeProbe
from tslayers.probing.sources import all_layers

LAMBDAS = [1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1e3, 1e4, 1e5]


def make_features(n: int, context: int, horizon: int, batch: int, seed: int = 0):
    """AR(2) windows -> mean-pooled tokens of all 13 layers, (L, n, D) float32, and targets."""
    rng = np.random.default_rng(seed)
    t = context + horizon
    e = rng.standard_normal((n, t + 50)).astype(np.float32)
    x = np.zeros_like(e)
    for i in range(2, t + 50):
        x[:, i] = 1.6 * x[:, i - 1] - 0.8 * x[:, i - 2] + e[:, i]
    x = x[:, 50:]
    torch.manual_seed(seed)
    enc = TemporalEncoder(EncoderConfig(n_channels=1, patch_len=16, d_model=256, n_layers=12,
                                        n_heads=8)).eval()
    feats = np.empty((enc.n_layers + 1, n, 256), dtype=np.float32)
    with torch.inference_mode():
        for s in range(0, n, batch):
            hidden, _ = all_layers(enc, torch.from_numpy(x[s : s + batch, :context, None]))
            for l, h in hidden.items():
                feats[l, s : s + batch] = h.mean(1).numpy()
    return feats, x[:, context:]


def streaming(feats, y, tr, va, te, batch, dtype=np.float64):
    """Train/val statistics in batches, lambda grid from one eigendecomposition per layer,
    refit on train+val at the chosen lambda (as RidgeCV does), test MSE from predictions."""
    layers = range(len(feats))
    probe = RidgeProbe(LAMBDAS, refit=True, dtype=dtype)
    for split, rows in (("train", tr), ("val", va)):
        for s in range(rows.start, rows.stop, batch):
            e = min(s + batch, rows.stop)
            probe.update({l: feats[l, s:e] for l in layers}, y[s:e], split)
    probe.fit("val")
    sse = np.zeros(len(feats))
    for s in range(te.start, te.stop, batch):
        e = min(s + batch, te.stop)
        pred = probe.predict({l: feats[l, s:e] for l in layers})
        sse += np.array([((pred[l] - y[s:e]) ** 2).sum() for l in layers])
    lam = np.array([probe.chosen_lambda()[l][0] for l in layers])
    return lam, sse / ((te.stop - te.start) * y.shape[1])


def sklearn_ridgecv(feats, y, tr, va, te):
    from sklearn.linear_model import RidgeCV
    from sklearn.model_selection import PredefinedSplit
    from sklearn.preprocessing import StandardScaler

    fold = np.r_[np.full(tr.stop - tr.start, -1), np.zeros(va.stop - va.start)]
    lam, mse = [], []
    for l in range(len(feats)):
        x = feats[l].astype(np.float64)  # float64 like the streaming probe (same scores)
        scaler = StandardScaler().fit(x[tr])
        xs = scaler.transform(x[tr.start : va.stop])
        model = RidgeCV(alphas=LAMBDAS, cv=PredefinedSplit(fold),
                        scoring="neg_mean_squared_error").fit(xs, y[tr.start : va.stop])
        pred = model.predict(scaler.transform(x[te]))
        lam.append(model.alpha_)
        mse.append(float(((pred - y[te]) ** 2).mean()))
    return np.array(lam), np.array(mse)


def measure(fn, *args):
    tracemalloc.start()
    t0 = time.perf_counter()
    out = fn(*args)
    seconds = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return out, seconds, peak / 2**20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--windows", type=int, default=20000)
    ap.add_argument("--small", type=int, default=10000,
                    help="second size for the memory check")
    ap.add_argument("--context", type=int, default=64)
    ap.add_argument("--horizon", type=int, default=8)
    ap.add_argument("--batch", type=int, default=1024, help="streaming batch (windows)")
    ap.add_argument("--cache", default=None, help=".npz file to keep/reuse extracted features")
    args = ap.parse_args()
    t0 = time.perf_counter()
    if args.cache and Path(args.cache).is_file():
        with np.load(args.cache) as f:
            feats, y = f["feats"], f["y"]
        if feats.shape[1] < args.windows:
            raise SystemExit(f"--cache holds {feats.shape[1]} windows, fewer than --windows")
    else:
        feats, y = make_features(args.windows, args.context, args.horizon, 512)
        if args.cache:
            np.savez(args.cache, feats=feats, y=y)
    extract = time.perf_counter() - t0
    print(f"encoder: 12 layers (+ embeddings), d_model=256; {args.windows} windows, context "
          f"{args.context}, targets: next {args.horizon} values; threads="
          f"{torch.get_num_threads()}")
    print(f"feature extraction (13 layers, one pass, not in the timings below): {extract:.1f} s"
          + (" (from cache)" if args.cache and extract < 30 else ""))
    print(f"lambda grid: {len(LAMBDAS)} values; split 60/20/20 (one window per series)\n")
    print(f"{'windows':>8} {'method':<34}{'seconds':>9}{'peak MiB':>10}")
    peaks: dict[tuple[str, int], float] = {}
    for n in (args.small, args.windows):
        f, yy = feats[:, :n], y[:n]
        tr, va, te = slice(0, int(0.6 * n)), slice(int(0.6 * n), int(0.8 * n)), \
            slice(int(0.8 * n), n)
        res = {}
        for label, dtype in (("float64", np.float64), ("float32", np.float32)):
            res[label], t, m = measure(streaming, f, yy, tr, va, te, args.batch, dtype)
            peaks[(label, n)] = m
            res[label + "_t"] = t
            print(f"{n:>8} {'streaming RidgeProbe, ' + label + ' batches':<34}{t:>9.2f}{m:>10.1f}")
        if n != args.windows:
            continue
        (lam_k, mse_k), t_k, m_k = measure(sklearn_ridgecv, f, yy, tr, va, te)
        print(f"{n:>8} {'sklearn RidgeCV per layer':<34}{t_k:>9.2f}{m_k:>10.1f}")
        print()
        for label in ("float64", "float32"):
            lam_s, mse_s = res[label]
            rel = float(np.max(np.abs(mse_s - mse_k) / mse_k))
            print(f"{label}: speed-up {t_k / res[label + '_t']:.1f}x; same chosen lambda on all "
                  f"13 layers: {bool((lam_s == lam_k).all())}; max relative test-MSE "
                  f"difference vs sklearn: {rel:.1e}")
    for label in ("float64", "float32"):
        print(f"streaming peak memory ({label}): {peaks[(label, args.small)]:.1f} MiB at "
              f"{args.small} windows, {peaks[(label, args.windows)]:.1f} MiB at {args.windows}")


if __name__ == "__main__":
    main()
