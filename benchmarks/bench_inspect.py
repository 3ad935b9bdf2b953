"""Inspect an external 12-layer model: tslayers taps + streaming all-layer ridge vs
hand-written hooks + scikit-learn ``RidgeCV`` per layer, on the same data, in one run.

Model: a randomly initialised Hugging Face PatchTST (12 layers, d_model 128; a 12-layer plain
PyTorch transformer when ``transformers`` is absent). Task: decode a per-patch latent state
(sin and cos of an oscillator's phase at each patch's last step) from every layer's per-patch
tokens (channels concatenated), the dense task of the probing protocol. Protocol on both
sides: standardise with train statistics, solve a lambda grid on train, choose lambda on val
(lowest MSE), refit at that lambda on train + val (what ``RidgeCV(cv=...)`` does), score R^2 on
test. Each side runs in its own process so its peak memory (max RSS) is its own.

Run: ``python benchmarks/bench_inspect.py`` (about 6 minutes on 2 CPU cores;
``--channels 7 --repeats 1``: about 6 minutes too).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

import numpy as np
import torch
from threadpoolctl import threadpool_limits
from torch import nn

LAMBDAS = tuple(float(x) for x in np.logspace(-2, 7, 10))
SPLITS = ("train", "val", "test")


# ---------------------------------------------------------------------------- data
def make_data(n: dict[str, int], length: int, channels: int, patch: int, seed: int = 0):
    """Noisy 3-channel views of oscillators with random frequency; per-patch target:
    (sin, cos) of the phase at the patch's last step. Returns {split: (x (W,T,C), y (W,N,2))}."""
    rng = np.random.default_rng(seed)
    out = {}
    for split in SPLITS:
        w = n[split]
        freq = rng.uniform(0.01, 0.08, (w, 1))
        phase = 2 * np.pi * (freq * np.arange(length) + rng.uniform(0, 1, (w, 1)))
        gains = rng.uniform(0.5, 2.0, (w, 1, channels))
        shifts = rng.uniform(0, np.pi / 2, (1, 1, channels))
        x = gains * np.sin(phase[..., None] + shifts) + 0.3 * rng.normal(size=(w, length,
                                                                             channels))
        ends = np.arange(patch - 1, length, patch)
        y = np.stack([np.sin(phase[:, ends]), np.cos(phase[:, ends])], -1)
        out[split] = (torch.tensor(x, dtype=torch.float32), y.astype(np.float64))
    return out


# ---------------------------------------------------------------------------- model
class PlainTransformer(nn.Module):
    """Fallback when transformers is absent: channel-independent patch tokens, 12 blocks,
    blocks hold (B*C, N, D)."""

    def __init__(self, patch: int, d: int, layers: int, heads: int):
        super().__init__()
        self.patch = patch
        self.embed = nn.Linear(patch, d)
        self.layers = nn.ModuleList(nn.TransformerEncoderLayer(d, heads, 2 * d, dropout=0.0,
                                                               batch_first=True)
                                    for _ in range(layers))

    def forward(self, x):
        b, t, c = x.shape
        h = self.embed(x.permute(0, 2, 1).reshape(b * c, t // self.patch, self.patch))
        for layer in self.layers:
            h = layer(h)
        return h


def build_model(args):
    """(module taking (B, T, C), tap names, per-batch regrouping of a block output to
    (B, N, C*D), description)."""
    try:
        from tslayers.probing.public_models import patchtst

        pm = patchtst(context_length=args.length, num_input_channels=args.channels,
                      patch_length=args.patch, patch_stride=args.patch, d_model=args.d_model,
                      num_hidden_layers=12, num_attention_heads=4, ffn_dim=2 * args.d_model,
                      seed=0)
        names = pm.layer_names()

        def regroup(t):  # (B, C, N, D) -> (B, N, C*D)
            return t.permute(0, 2, 1, 3).flatten(2)

        return pm.module, names, pm.tap_kwargs, regroup, "HF PatchTST (random init)"
    except ImportError:
        torch.manual_seed(0)
        model = PlainTransformer(args.patch, args.d_model, 12, 4).eval()
        names = [f"layers.{i}" for i in range(12)]
        c = args.channels

        def regroup(t):  # (B*C, N, D) -> (B, N, C*D)
            return t.reshape(-1, c, *t.shape[1:]).permute(0, 2, 1, 3).flatten(2)

        kwargs = {"transform": lambda name, t: regroup(t)}
        return model, names, kwargs, regroup, "plain 12-layer transformer (no transformers)"


def batches(x: torch.Tensor, y: np.ndarray, size: int):
    for i in range(0, len(x), size):
        yield x[i : i + size], y[i : i + size]


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


# ---------------------------------------------------------------------------- the two sides
def run_tslayers(args, data, model, names, tap_kwargs, regroup) -> dict:
    from tslayers.probing import LayerTaps, RidgeProbe

    probe = RidgeProbe(LAMBDAS, refit=True, dtype=np.float32)
    t0 = time.perf_counter()
    forward = 0.0
    with LayerTaps(model, names, reduce="tokens", **tap_kwargs) as taps:
        for split in SPLITS:
            for xb, yb in batches(*data[split], args.batch):
                t1 = time.perf_counter()
                feats = taps.run(model, xb)  # {name: (B, N, C*D)}
                forward += time.perf_counter() - t1
                probe.update({k: v.flatten(0, 1) for k, v in feats.items()},
                             yb.reshape(-1, 2), split)
    probe.fit("val")
    scores = probe.scores("test")
    total = time.perf_counter() - t0
    return {"total_s": total, "forward_s": forward, "probe_s": total - forward,
            "r2": [scores[n]["r2"] for n in names],
            "lambda": [float(probe.chosen_lambda()[n][0]) for n in names]}


def run_sklearn(args, data, model, names, tap_kwargs, regroup) -> dict:
    from sklearn.linear_model import RidgeCV
    from sklearn.metrics import r2_score
    from sklearn.model_selection import PredefinedSplit
    from sklearn.preprocessing import StandardScaler

    t0 = time.perf_counter()
    blocks = [model.get_submodule(n) for n in names]
    store: dict[str, list[list[torch.Tensor]]] = {s: [[] for _ in names] for s in SPLITS}
    current: list[list[torch.Tensor]] = []

    def hook(i):
        def fn(module, inputs, output):
            t = output[0] if isinstance(output, tuple) else output
            current[i].append(regroup(t.detach()).flatten(0, 1).clone())

        return fn

    handles = [b.register_forward_hook(hook(i)) for i, b in enumerate(blocks)]
    with torch.no_grad():
        for split in SPLITS:
            current[:] = store[split]
            for xb, _ in batches(*data[split], args.batch):
                model(xb)
    for h in handles:
        h.remove()
    forward = time.perf_counter() - t0
    ys = {s: data[s][1].reshape(-1, 2) for s in SPLITS}
    fold = np.r_[np.full(len(ys["train"]), -1), np.zeros(len(ys["val"]))]
    r2, lam = [], []
    for i in range(len(names)):
        feats = {s: torch.cat(store[s][i]).numpy() for s in SPLITS}
        scaler = StandardScaler().fit(feats["train"])
        x_fit = scaler.transform(np.concatenate([feats["train"], feats["val"]]))
        ridge = RidgeCV(alphas=LAMBDAS, cv=PredefinedSplit(fold),
                        scoring="neg_mean_squared_error")
        ridge.fit(x_fit, np.concatenate([ys["train"], ys["val"]]))
        r2.append(float(r2_score(ys["test"], ridge.predict(scaler.transform(feats["test"])))))
        lam.append(float(ridge.alpha_))
    total = time.perf_counter() - t0
    return {"total_s": total, "forward_s": forward, "probe_s": total - forward, "r2": r2,
            "lambda": lam}


def child(args) -> None:
    torch.set_num_threads(args.threads)
    n = {"train": args.train, "val": args.val, "test": args.test}
    data = make_data(n, args.length, args.channels, args.patch)
    model, names, tap_kwargs, regroup, desc = build_model(args)
    rss0 = rss_mb()
    run = run_tslayers if args.variant == "tslayers" else run_sklearn
    # numpy/scipy BLAS threads, the same for both sides: multi-threaded OpenBLAS on a loaded
    # 2-core machine makes a 3000 x 384 Ridge fit 20x slower than one thread does
    with torch.no_grad(), threadpool_limits(args.blas_threads, user_api="blas"):
        result = run(args, data, model, names, tap_kwargs, regroup)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result.update(peak_rss_mb=peak, added_peak_mb=peak - rss0, model=desc,
                  rows=int(sum(v[1].shape[0] * v[1].shape[1] for v in data.values())),
                  dim=int(args.channels * args.d_model))
    print("RESULT " + json.dumps(result))


def _best(runs: list[dict]) -> dict:
    """Fastest run's figures, each time taken as its minimum over runs, memory as maximum."""
    best = dict(min(runs, key=lambda r: r["total_s"]))
    for key in ("total_s", "forward_s", "probe_s"):
        best[key] = min(r[key] for r in runs)
    for key in ("peak_rss_mb", "added_peak_mb"):
        best[key] = max(r[key] for r in runs)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train", type=int, default=1024)
    ap.add_argument("--val", type=int, default=384)
    ap.add_argument("--test", type=int, default=384)
    ap.add_argument("--repeats", type=int, default=2, help="alternating runs per side")
    ap.add_argument("--length", type=int, default=256)
    ap.add_argument("--channels", type=int, default=3)
    ap.add_argument("--patch", type=int, default=16)
    ap.add_argument("--d-model", type=int, default=128)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2, help="torch threads (forward passes)")
    ap.add_argument("--blas-threads", type=int, default=1,
                    help="numpy/scipy BLAS threads on both sides (probes)")
    ap.add_argument("--variant", choices=("tslayers", "sklearn"), default=None,
                    help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.variant:
        return child(args)
    load0 = os.getloadavg()[0]
    runs: dict[str, list[dict]] = {"tslayers": [], "sklearn": []}
    for _ in range(args.repeats):  # alternate, so load from other jobs hits both sides alike
        for variant in runs:
            cmd = [sys.executable, __file__, *sys.argv[1:], "--variant", variant]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            runs[variant].append(json.loads(out.split("RESULT ", 1)[1]))
    ts, sk = (_best(runs[v]) for v in ("tslayers", "sklearn"))
    print(f"model: {ts['model']}, 12 layers; windows train/val/test = "
          f"{args.train}/{args.val}/{args.test}, T={args.length}, C={args.channels}; "
          f"per-patch rows {ts['rows']}, feature dim {ts['dim']}; {len(LAMBDAS)} lambdas; "
          f"torch threads {args.threads}, BLAS threads {args.blas_threads}; best of "
          f"{args.repeats} alternating runs; "
          f"{platform.processor() or platform.machine()}")
    print(f"1-min load average {load0:.1f} at start, {os.getloadavg()[0]:.1f} at end "
          f"({os.cpu_count()} cores)")
    print(f"{'':<30}{'tslayers':>12}{'hooks+sklearn':>15}{'ratio':>8}")
    rows = [("total wall time (s)", "total_s"), ("  forward + capture (s)", "forward_s"),
            ("  probes (s)", "probe_s"), ("peak RSS (MB)", "peak_rss_mb"),
            ("peak RSS above model (MB)", "added_peak_mb")]
    for label, key in rows:
        print(f"{label:<30}{ts[key]:>12.1f}{sk[key]:>15.1f}{sk[key] / ts[key]:>7.1f}x")
    print(f"{'layer':<8}{'R2 tslayers':>14}{'R2 sklearn':>14}{'|diff|':>10}"
          f"{'lambda':>10}{'lambda sk':>10}")
    for i, (a, b) in enumerate(zip(ts["r2"], sk["r2"])):
        print(f"{i + 1:<8}{a:>14.6f}{b:>14.6f}{abs(a - b):>10.1e}"
              f"{ts['lambda'][i]:>10.3g}{sk['lambda'][i]:>10.3g}")
    diff = max(abs(a - b) for a, b in zip(ts["r2"], sk["r2"]))
    speed = sk["total_s"] / ts["total_s"]
    print(f"max |R2 diff| {diff:.1e}; same lambdas: {ts['lambda'] == sk['lambda']}; "
          f"speed-up end to end {speed:.1f}x, probes alone "
          f"{sk['probe_s'] / ts['probe_s']:.1f}x (target >= 10x: "
          f"{'met' if speed >= 10 else 'not met'} end to end)")


if __name__ == "__main__":
    main()
