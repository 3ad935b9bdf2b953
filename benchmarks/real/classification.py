"""UCR/UEA classification on the sets aeon ships offline (official splits).

Per dataset: a TemporalEncoder is pretrained per objective on the TRAIN series only; every
layer's pooled tokens are probed with tslayers' LogisticProbe; C, the layer and the objective
are chosen by stratified k-fold CV inside TRAIN; the probe is refitted on TRAIN and scored on
TEST. Controls on the same splits: the untrained twin (same architecture, random weights,
same CV protocol) and a raw-window logistic probe. Baselines run here: MiniRocket + ridge
classifier (aeon ``MiniRocketClassifier``) and 1-NN DTW with a Sakoe-Chiba window (aeon
``KNeighborsTimeSeriesClassifier``). Intervals: bootstrap over test series, paired.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from .common import log, pretrain_arrays, untrained_twin


def fixed_length(obs: np.ndarray) -> np.ndarray:
    """(N, T, C) with NaN tails -> every series linearly resampled to T steps."""
    n, t, c = obs.shape
    out = obs.copy()
    grid = np.linspace(0.0, 1.0, t)
    for i in range(n):
        ok = np.isfinite(obs[i]).any(-1)
        length = int(np.flatnonzero(ok)[-1]) + 1 if ok.any() else 0
        if length in (t, 0):
            continue
        src = np.linspace(0.0, 1.0, length)
        for j in range(c):
            out[i, :, j] = np.interp(grid, src, obs[i, :length, j])
    return out


def load_arrays(name: str) -> dict[str, Any]:
    """Official splits as (N, T, C) float32. Rules applied to every set alike (no per-dataset
    choice): variable-length series are linearly resampled to the longest length; multivariate
    sets are standardised per channel with TRAIN statistics (their per-channel level and spread
    carry the class, so the encoder's per-series instance scaling is switched off for them)."""
    from tslayers.data import load_dataset

    ds = load_dataset(f"ucr/{name}")
    obs = ds["obs"].values.astype(np.float32)
    ragged = bool(np.isnan(obs).any())
    if ragged:
        obs = fixed_length(obs)
    split = ds["split"].values.astype(str)
    y = ds["label"].values.astype(np.int64)
    tr, te = split == "train", split == "test"
    multivariate = obs.shape[-1] > 1
    if multivariate:
        mu = obs[tr].mean(axis=(0, 1), keepdims=True)
        sd = obs[tr].std(axis=(0, 1), keepdims=True)
        obs = (obs - mu) / np.where(sd > 0, sd, 1.0)
    return dict(x_train=obs[tr], y_train=y[tr], x_test=obs[te], y_test=y[te],
                n_classes=int(y.max()) + 1, ragged=ragged, multivariate=multivariate)


def encoder_settings(base: dict, length: int, channels: int, multivariate: bool) -> dict:
    """Patching by a length rule (the same for every set): patch 4 with stride 2 up to 64
    steps, 8 up to 512, else 16 (ACSF1's 1460 steps -> 91 tokens)."""
    if length <= 64:
        patch = dict(patch_len=4, stride=2)
    elif length <= 512:
        patch = dict(patch_len=8)
    else:
        patch = dict(patch_len=16)
    return {**base, **patch, "n_channels": channels, "scaling": not multivariate}


@torch.no_grad()
def pooled_features(encoder, x: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """(N, T, C) -> (L+1, N, F): per layer, mean and max of the patch tokens over observed
    patches (registers excluded), channels concatenated for channel-independent encoders."""
    from einops import rearrange

    from tslayers.probing.sources import all_layers

    chunks = []
    for s in range(0, len(x), batch_size):
        xb = torch.from_numpy(np.ascontiguousarray(x[s:s + batch_size]))
        hidden, out = all_layers(encoder, xb)
        w = out.patched.observed.amax(-1)
        w = w / w.sum(1, keepdim=True).clamp(min=1)
        layers = []
        for layer in range(encoder.n_layers + 1):
            h = hidden[layer][:, out.num_prefix:].float()
            p = torch.cat([(h * w[..., None]).sum(1),
                           h.masked_fill(w[..., None] == 0, float("-inf")).amax(1)], -1)
            if not encoder.config.channel_mixing:
                p = rearrange(p, "(b c) d -> b (c d)", c=xb.shape[-1])
            layers.append(p.numpy())
        chunks.append(np.stack(layers))
    return np.concatenate(chunks, axis=1)


def probe_layers(f_tr: np.ndarray, y_tr: np.ndarray, f_te: np.ndarray, y_te: np.ndarray,
                 n_classes: int, Cs: list[float], folds: int, seed: int) -> dict[str, Any]:
    """C per layer and the layer by stratified k-fold CV on train (ties -> the strongest
    penalty, then the deeper layer); refit on all of train; per-series test correctness."""
    from sklearn.model_selection import StratifiedKFold

    from tslayers.probing import LogisticProbe

    n_layers = f_tr.shape[0]
    k = max(2, min(folds, int(np.bincount(y_tr).min())))
    cv = np.zeros((n_layers, len(Cs)))
    for tr, va in StratifiedKFold(k, shuffle=True, random_state=seed).split(f_tr[0], y_tr):
        for j, C in enumerate(Cs):
            probe = LogisticProbe([C]).fit(f_tr[:, tr], y_tr[tr], n_classes=n_classes)
            cv[:, j] += (probe.predict(f_tr[:, va]) == y_tr[va]).sum(1)
    cv /= len(y_tr)
    best_c = cv.argmax(1)
    correct = np.zeros((n_layers, len(y_te)), dtype=bool)
    for j in np.unique(best_c):
        probe = LogisticProbe([Cs[j]]).fit(f_tr, y_tr, n_classes=n_classes)
        hit = probe.predict(f_te) == y_te
        correct[best_c == j] = hit[best_c == j]
    cv_best = cv.max(1)
    chosen = n_layers - 1 - int(np.argmax(cv_best[::-1]))
    return dict(cv=cv_best.tolist(), test=correct.mean(1).tolist(), chosen=chosen,
                C=[Cs[j] for j in best_c], correct=correct[chosen].astype(int).tolist(),
                correct_last=correct[-1].astype(int).tolist(), folds=k)


def baselines(data: dict, cfg: dict, seed: int) -> dict[str, dict]:
    """MiniRocket + RidgeClassifierCV and 1-NN DTW on the same arrays; per-series
    correctness and fit+predict seconds."""
    import time

    from aeon.classification.convolution_based import MiniRocketClassifier
    from aeon.classification.distance_based import KNeighborsTimeSeriesClassifier

    xtr = np.ascontiguousarray(data["x_train"].transpose(0, 2, 1), dtype=np.float64)
    xte = np.ascontiguousarray(data["x_test"].transpose(0, 2, 1), dtype=np.float64)
    models = {
        "MiniRocket": MiniRocketClassifier(n_kernels=int(cfg["minirocket_kernels"]),
                                           random_state=seed, n_jobs=1),
        "1-NN DTW": KNeighborsTimeSeriesClassifier(
            n_neighbors=1, distance="dtw", distance_params={"window": float(cfg["dtw_window"])},
            n_jobs=1),
    }
    out = {}
    for name, model in models.items():
        t0 = time.perf_counter()
        pred = model.fit(xtr, data["y_train"]).predict(xte)
        hit = (np.asarray(pred).astype(np.int64) == data["y_test"]).astype(int)
        out[name] = dict(correct=hit.tolist(), secs=time.perf_counter() - t0)
        log(f"  {name}: test acc {hit.mean():.3f} ({out[name]['secs']:.0f}s)")
    return out


def run_dataset(name: str, cfg: dict, seed: int, work: Path) -> dict:
    """Everything for one classification set, as a JSON-able dict."""
    c = cfg["classification"]
    data = load_arrays(name)
    n_tr, t, ch = data["x_train"].shape
    log(f"classification {name}: {n_tr} train / {len(data['y_test'])} test series, length {t}, "
        f"{ch} channels, {data['n_classes']} classes")
    enc_cfg = encoder_settings(c["encoder"], t, ch, data["multivariate"])
    pr = c["probe"]
    Cs, folds = [float(v) for v in pr["Cs"]], int(pr["folds"])

    def probe(encoder):
        return probe_layers(pooled_features(encoder, data["x_train"]), data["y_train"],
                            pooled_features(encoder, data["x_test"]), data["y_test"],
                            data["n_classes"], Cs, folds, seed)

    res: dict[str, Any] = dict(dataset=name, n_train=n_tr, n_test=len(data["y_test"]),
                               length=t, channels=ch, n_classes=data["n_classes"],
                               ragged=data["ragged"], encoder=enc_cfg, objectives={})
    k = min(int(c["val_copies"]), n_tr)
    encoder = None
    for objective in c["objectives"]:
        encoder, _, secs = pretrain_arrays(
            list(data["x_train"]), list(data["x_train"][:k]), enc_cfg,
            {"name": objective, **c["objective"].get(objective, {})}, int(c["steps"]),
            int(c["batch_size"]), float(c["lr"]), context=t, horizon=0, stride=None,
            seed=seed, out=work / f"cls-{name}-{objective}",
            extra_train={"weight_decay": float(c["weight_decay"])})
        r = probe(encoder)
        r["secs"] = secs
        res["objectives"][objective] = r
        log(f"  {objective}: pretrain {secs:.0f}s; test acc by layer "
            f"{np.round(r['test'], 3).tolist()}, CV layer {r['chosen']}")
    res["n_layers"] = encoder.n_layers
    res["untrained"] = probe(untrained_twin(encoder, seed))
    raw_tr = data["x_train"].reshape(n_tr, -1)[None]
    raw_te = data["x_test"].reshape(len(data["y_test"]), -1)[None]
    res["raw"] = probe_layers(raw_tr, data["y_train"], raw_te, data["y_test"],
                              data["n_classes"], Cs, folds, seed)
    # the headline: the objective whose CV-chosen layer has the best CV accuracy (train only)
    cv_of = {o: r["cv"][r["chosen"]] for o, r in res["objectives"].items()}
    res["selected_objective"] = max(cv_of, key=lambda o: cv_of[o])
    res["baselines"] = baselines(data, c, seed)
    res["y_test"] = data["y_test"].tolist()
    return res
