"""Anomaly localisation on the anomaly sets aeon ships offline.

KDD-TSAD_135 (UCR anomaly archive, InternalBleeding16): the file's first ``train_end`` points
are anomaly-free by the archive's construction and are the train part; the rest is the test
part (one labelled anomaly segment). The train part is split in time into a fit part and a
calibration part (the last ``calib_fraction``), used only to set detection thresholds.

Per-patch scores on the test part (patch = the encoder's patch, non-overlapping windows):
- tslayers reconstruction error: a TemporalEncoder pretrained with masked reconstruction on
  the fit part; every patch is masked once (``mask_passes`` passes of every k-th patch) and its
  reconstruction MSE is the score;
- tslayers per-layer feature novelty: the mean distance of a patch's token (each layer,
  standardised with fit-part statistics) to its ``knn`` nearest fit-part tokens - a label-free
  layerwise probe of the frozen features;
- the same per-layer novelty from the untrained twin (control);
- baselines run here: scikit-learn IsolationForest on sliding windows of the fit part, and the
  absolute residual of a seasonal-naive forecast (season = the autocorrelation peak of the fit
  part).
Metrics: per-patch AUROC (tslayers' auroc) with a block bootstrap over blocks of test patches,
and point-adjusted F1 (PA-F1: a true segment counts as wholly detected if any of its points is
flagged; optimistic by construction) at the threshold = the largest calibration-part score.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from tslayers.probing.metrics import auroc, bootstrap_counts, interval, row_weights

from .common import log, pretrain_arrays, untrained_twin


def segments(labels: np.ndarray) -> list[tuple[int, int]]:
    d = np.diff(np.r_[0, (np.asarray(labels) > 0).astype(int), 0])
    return list(zip(np.flatnonzero(d == 1).tolist(), np.flatnonzero(d == -1).tolist()))


def pa_f1(labels: np.ndarray, flagged: np.ndarray) -> float:
    """Point-adjusted F1 (Xu et al. 2018 convention used across the TSAD literature)."""
    pred = np.asarray(flagged, bool).copy()
    y = np.asarray(labels) > 0
    for s, e in segments(y):
        if pred[s:e].any():
            pred[s:e] = True
    tp, fp, fn = (pred & y).sum(), (pred & ~y).sum(), (~pred & y).sum()
    return float(2 * tp / max(2 * tp + fp + fn, 1))


def best_pa_f1(labels: np.ndarray, scores: np.ndarray) -> float:
    """The best PA-F1 over all thresholds chosen on the test part itself (what many TSAD papers
    report: an oracle, listed only for comparability)."""
    return max(pa_f1(labels, scores >= t) for t in np.unique(scores))


def season_by_acf(x: np.ndarray, max_lag: int) -> int:
    x = (x - x.mean()) / (x.std() + 1e-12)
    acf = np.array([np.dot(x[:-k], x[k:]) / len(x) for k in range(1, max_lag + 1)])
    # the highest autocorrelation after the first zero crossing (skips the trivial lag-1 peak)
    neg = np.flatnonzero(acf < 0)
    start = int(neg[0]) if len(neg) else 1
    return int(start + np.argmax(acf[start:]) + 1)


@torch.no_grad()
def encode_windows(encoder, x: np.ndarray, ctx: int, objective=None, passes: int = 4):
    """Non-overlapping windows of ``x`` (T,) -> per-patch tokens {layer: (n_patches, D)} and,
    if ``objective`` is given, per-patch masked-reconstruction MSE (n_patches,). A tail shorter
    than one window is covered by one last window aligned to the end."""
    from tslayers.probing.sources import all_layers

    starts = list(range(0, len(x) - ctx + 1, ctx))
    tail = len(x) - (starts[-1] + ctx)
    if tail:
        starts.append(len(x) - ctx)
    win = torch.from_numpy(np.stack([x[s:s + ctx] for s in starts]).astype(np.float32))[..., None]
    hidden, out = all_layers(encoder, win)
    p = out.patched.values.shape[1]
    keep = [slice(0, p)] * (len(starts) - 1) + [slice(p - tail // encoder.config.patch_len, p)
                                                 if tail else slice(0, p)]
    feats = {l: torch.cat([h[i, out.num_prefix:][k] for i, k in enumerate(keep)]).numpy()
             for l, h in hidden.items()}
    err = None
    if objective is not None:
        err_w = torch.zeros(len(starts), p)
        for k in range(passes):
            mask = torch.zeros(len(starts), p, dtype=torch.bool)
            mask[:, k::passes] = True
            o = encoder(win, patch_mask=mask)
            pred = objective.head(o.patch_tokens)
            e = ((pred - o.patched.values) ** 2).mean(-1)
            err_w[mask] = e[mask]
        err = torch.cat([err_w[i, k] for i, k in enumerate(keep)]).numpy()
    return feats, err


@torch.no_grad()
def reference_tokens(encoder, x: np.ndarray, ctx: int, step: int) -> dict[int, np.ndarray]:
    """Every patch token of overlapping windows (start every ``step`` points) of the fit part."""
    from tslayers.probing.sources import all_layers

    win = np.stack([x[s:s + ctx] for s in range(0, len(x) - ctx + 1, step)]).astype(np.float32)
    hidden, out = all_layers(encoder, torch.from_numpy(win)[..., None])
    return {l: h[:, out.num_prefix:].reshape(-1, h.shape[-1]).numpy() for l, h in hidden.items()}


def knn_novelty(ref: np.ndarray, query: np.ndarray, k: int) -> np.ndarray:
    mu, sd = ref.mean(0), ref.std(0) + 1e-6
    r, q = (ref - mu) / sd, (query - mu) / sd
    d = ((q**2).sum(1)[:, None] - 2 * q @ r.T + (r**2).sum(1)[None]).clip(min=0)
    return np.sqrt(np.sort(d, axis=1)[:, :k]).mean(1)


def per_patch(points: np.ndarray, patch: int, reduce=np.max) -> np.ndarray:
    n = len(points) // patch
    return reduce(points[: n * patch].reshape(n, patch), axis=1)


def run_kdd(name: str, cfg: dict, seed: int, work: Path) -> dict:
    from aeon.datasets import load_kdd_tsad_135
    from sklearn.ensemble import IsolationForest

    a = cfg["anomaly"]
    x, y = load_kdd_tsad_135(split="test")  # the whole series: train part + test part
    x = x.astype(np.float64)
    train_end, ctx = int(a["train_end"]), int(a["context"])
    enc_cfg = {**a["encoder"], "n_channels": 1}
    patch = int(enc_cfg["patch_len"])
    calib_start = train_end - int(round(a["calib_fraction"] * train_end)) // ctx * ctx
    fit_x, cal_x = x[:calib_start], x[calib_start:train_end]
    test_x, test_y = x[train_end:], y[train_end:]
    n_test_p = len(test_x) // patch
    test_x, test_y = test_x[: n_test_p * patch], test_y[: n_test_p * patch]
    y_patch = per_patch(test_y, patch).astype(int)
    log(f"anomaly {name}: fit {len(fit_x)} / calibration {len(cal_x)} / test {len(test_x)} "
        f"points; anomaly segments in train part {len(segments(y[:train_end]))}, in test "
        f"{len(segments(test_y))} ({int(test_y.sum())} points, {int(y_patch.sum())} patches)")

    encoder, objective, secs = pretrain_arrays(
        [fit_x], [fit_x[-ctx * 2:]], enc_cfg, {"name": "reconstruct", **a["objective"]},
        int(a["steps"]), int(a["batch_size"]), float(a["lr"]), context=ctx, horizon=0,
        stride=1, seed=seed, out=work / f"anom-{name}")
    scores: dict[str, dict[str, np.ndarray]] = {"test": {}, "cal": {}}
    ref = reference_tokens(encoder, fit_x, ctx, int(a["ref_step"]))
    for part, series in (("test", test_x), ("cal", cal_x)):
        feats, err = encode_windows(encoder, series, ctx, objective, int(a["mask_passes"]))
        scores[part]["tslayers reconstruction error"] = err
        for layer, f in feats.items():
            scores[part][f"tslayers layer {layer} novelty"] = knn_novelty(ref[layer], f,
                                                                          int(a["knn"]))
    twin = untrained_twin(encoder, seed)
    ref_u = reference_tokens(twin, fit_x, ctx, int(a["ref_step"]))
    for part, series in (("test", test_x), ("cal", cal_x)):
        feats, _ = encode_windows(twin, series, ctx)
        for layer, f in feats.items():
            scores[part][f"untrained twin layer {layer} novelty"] = knn_novelty(
                ref_u[layer], f, int(a["knn"]))
    # baselines run here
    w = int(a["iforest_window"])
    fit_w = np.lib.stride_tricks.sliding_window_view(fit_x, w)
    forest = IsolationForest(n_estimators=200, random_state=seed).fit(fit_w)
    m = season_by_acf(fit_x, int(a["max_season"]))
    for part, series, prev in (("test", test_x, x[train_end - w:train_end]),
                               ("cal", cal_x, fit_x[-w:])):
        full = np.r_[prev, series]
        win = np.lib.stride_tricks.sliding_window_view(full, w)[1:]  # windows ending at t
        pts = -forest.score_samples(win)
        scores[part]["IsolationForest (sliding windows)"] = per_patch(pts, patch)
        hist = np.r_[x[: train_end if part == "test" else calib_start], series]
        resid = np.abs(hist[m:] - hist[:-m])[-len(series):]
        scores[part][f"seasonal-naive residual (season {m})"] = per_patch(resid, patch)

    block = int(a["block_patches"])
    groups = np.arange(n_test_p) // block
    rows = {}
    for method, s in scores["test"].items():
        thr = float(scores["cal"][method].max())
        flagged = np.repeat(s > thr, patch)
        rows[method] = dict(
            auroc=float(auroc(y_patch, s)), pa_f1=pa_f1(test_y, flagged),
            best_pa_f1=best_pa_f1(test_y, np.repeat(s, patch)), flagged_share=float(
                (s > thr).mean()))
    # block bootstrap of AUROC over test blocks (all methods share the draws); PA-F1 gets no
    # interval: with one segment it is a detected / not-detected event plus false alarms
    counts = bootstrap_counts(groups, int(cfg["n_boot"]), seed, "test")
    wts = row_weights(counts, groups, groups)
    pos_reps = wts @ y_patch
    for method, s in scores["test"].items():
        reps = auroc(y_patch, s, wts)
        rows[method]["auroc_ci"] = list(interval(reps, 0.9))
    return dict(dataset=name, methods=rows, season=m, secs=secs, n_layers=encoder.n_layers,
                encoder=enc_cfg, n_test_patches=n_test_p, positive_patches=int(y_patch.sum()),
                test_segments=len(segments(test_y)), train_segments=len(segments(y[:train_end])),
                no_anomaly_share=float((pos_reps == 0).mean()), block=block, patch=patch,
                split=dict(fit=len(fit_x), calibration=len(cal_x), test=len(test_x)))


def run_daphnet(name: str, cfg: dict, seed: int, work: Path) -> dict:
    """The shipped Daphnet excerpt: count its labels; no detector can be scored without any."""
    import warnings

    from aeon.datasets import load_daphnet_s06r02e0

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        x, y = load_daphnet_s06r02e0()
    log(f"anomaly {name}: {x.shape[0]} points x {x.shape[1]} channels, "
        f"{int(np.sum(y))} anomalous points")
    return dict(dataset=name, points=int(x.shape[0]), channels=int(x.shape[1]),
                anomalous_points=int(np.sum(y)), methods={})


RUNNERS = {"KDD-TSAD_135": run_kdd, "Daphnet_S06R02E0": run_daphnet}


def run_dataset(name: str, cfg: dict, seed: int, work: Path) -> dict:
    return RUNNERS[name](name, cfg, seed, work)
