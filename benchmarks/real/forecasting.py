"""Forecasting shipped collections with GluonTS evaluation at the standard seasonality.

Models at the same gradient-step budget: GluonTS seasonal naive (season from
``gluonts.time_feature.get_seasonality``), GluonTS DeepAR and PatchTST (torch), tslayers'
forecast objective (quantile head) and tslayers forecast-aligned (contrastive pretraining ->
truncation at the layer a ridge probe picks on the end of the train period -> projector +
decoder warm-up -> full tuning). Plus the layerwise probe: a ridge probe per layer of the
forecast-objective encoder (last patch token -> scaled horizon, lambda chosen on the end of the
train period), each layer's point forecast scored on the same test windows. Metrics per test
window from ``gluonts.model.evaluate_model``: MASE and mean weighted quantile loss (wQL); the
intervals resample series (many-series collections) or blocks of windows (single series).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .common import log, pretrain_arrays, untrained_twin
from .forecast_data import gluonts_data, load_collection


def quantile_predictor(fn, prediction_length: int, context: int, quantiles: list[float]):
    """A GluonTS Predictor around ``fn(x (B, context, 1)) -> (B, H, Q)`` in original units
    (contexts shorter than ``context`` are left-padded with NaN = unobserved)."""
    from gluonts.model.forecast import QuantileForecast
    from gluonts.model.predictor import Predictor

    class _P(Predictor):
        def predict(self, dataset, **kwargs: Any):
            entries = list(dataset)
            ctx = np.full((len(entries), context), np.nan, np.float32)
            for i, e in enumerate(entries):
                t = np.asarray(e["target"], np.float32)[-context:]
                ctx[i, context - len(t):] = t
            with torch.no_grad():
                q = np.sort(np.asarray(fn(torch.from_numpy(ctx)[..., None]), np.float64), -1)
            keys = [str(v) for v in quantiles]
            for e, arr in zip(entries, q):
                yield QuantileForecast(arr.T, start_date=e["start"] + len(e["target"]),
                                       forecast_keys=keys, item_id=e.get("item_id"))

    return _P(prediction_length=prediction_length)


def evaluate(predictor, data: dict, season: int, quantiles: list[float]) -> dict[str, list]:
    """Per-window MASE and wQL numerator (wQL x sum|y|) from gluonts' evaluate_model; the
    collection's wQL is sum(num) / sum(den), its MASE the mean over windows."""
    from gluonts.ev.metrics import MASE, MeanWeightedSumQuantileLoss
    from gluonts.model import evaluate_model

    df = evaluate_model(predictor, test_data=data["test"], seasonality=season, axis=1,
                        metrics=[MASE(), MeanWeightedSumQuantileLoss(quantile_levels=quantiles)])
    mase = df[[c for c in df.columns if str(c).startswith("MASE")][0]].to_numpy(np.float64)
    wql = df[[c for c in df.columns if "weighted_sum_quantile_loss" in str(c)][0]].to_numpy(
        np.float64)
    den = np.array([np.abs(lab).sum() for lab in data["labels"]])
    return dict(mase=mase.tolist(), wql_num=(wql * den).tolist())


def windows(values: list[np.ndarray], ctx: int, h: int, min_ctx: int, val_fraction: float
            ) -> dict[str, np.ndarray]:
    """(n, ctx + h) windows of the train parts (contexts left-padded with NaN down to
    ``min_ctx`` observed steps); 'val' = windows whose horizon ends in the last
    ``val_fraction`` of their series' train part, 'train' = windows ending before it."""
    out: dict[str, list] = {"train": [], "val": []}
    for v in values:
        pad = np.r_[np.full(ctx - min_ctx, np.nan), v]
        cut = len(pad) - max(h, int(round(val_fraction * len(v))))
        for s in range(0, len(pad) - ctx - h + 1):
            end = s + ctx + h
            if end <= cut:
                out["train"].append(pad[s:end])
            elif s + ctx >= cut:
                out["val"].append(pad[s:end])
    return {k: np.asarray(w, np.float32).reshape(-1, ctx + h) for k, w in out.items()}


def ridge_layer_probe(encoder, win: dict[str, np.ndarray], ctx: int):
    """Ridge per layer (last patch token -> instance-scaled horizon), lambda on 'val'.
    Returns (val MSE per layer, predict(x, layer) -> (B, H) in original units)."""
    from tslayers.probing import RidgeProbe
    from tslayers.probing.sources import all_layers

    probe = RidgeProbe([1e-2, 1e-1, 1.0, 10.0, 100.0, 1e3, 1e4])

    def feats(x: torch.Tensor):
        hidden, out = all_layers(encoder, x)
        return ({l: h[:, -1].numpy() for l, h in hidden.items()},
                out.patched.loc[:, 0, 0].numpy(), out.patched.scale[:, 0, 0].numpy())

    with torch.no_grad():
        for split, w in win.items():
            f, loc, scale = feats(torch.from_numpy(w[:, :ctx, None]))
            probe.update(f, (w[:, ctx:] - loc[:, None]) / scale[:, None], split)
    probe.fit("val")
    mse = {int(l): float(s["mse"]) for l, s in probe.scores("val").items()}

    def predict(x: torch.Tensor, layer: int) -> np.ndarray:
        f, loc, scale = feats(x)
        return probe.predict({layer: f[layer]})[layer] * scale[:, None] + loc[:, None]

    return mse, predict


def batches(win: np.ndarray, ctx: int, batch_size: int, seed: int):
    rng = np.random.default_rng(seed)
    batch_size = min(batch_size, len(win))
    while True:
        order = rng.permutation(len(win))
        for i in range(0, len(order) - batch_size + 1, batch_size):
            w = win[order[i:i + batch_size]]
            yield torch.from_numpy(w[:, :ctx, None]), torch.from_numpy(w[:, ctx:, None])


def train_aligner(aligner, it, steps: int, lr: float, seed: int) -> None:
    from tslayers.training import param_groups, warmup_cosine

    if steps <= 0:
        return
    torch.manual_seed(seed)
    opt = torch.optim.AdamW(param_groups([aligner], 0.05), lr=lr, betas=(0.9, 0.95))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: warmup_cosine(s, max(1, steps // 10), steps, 0.1))
    params = [p for p in aligner.parameters() if p.requires_grad]
    aligner.train()
    for _ in range(steps):
        x, future = next(it)
        loss = aligner.loss(x, future)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
    aligner.eval()


def gluonts_model(kind: str, spec: dict, fc: dict, steps: int, seed: int, work: Path):
    import lightning as L
    from gluonts.torch.model.deepar import DeepAREstimator
    from gluonts.torch.model.patch_tst import PatchTSTEstimator

    h, ctx = int(spec["horizon"]), int(spec["context"])
    nbpe = min(int(fc["num_batches_per_epoch"]), steps)
    trainer = dict(max_epochs=math.ceil(steps / nbpe), max_steps=steps, accelerator="cpu",
                   devices=1, enable_progress_bar=False, enable_model_summary=False,
                   logger=False, default_root_dir=str(work))
    common = dict(prediction_length=h, context_length=ctx, lr=float(fc["lr"]),
                  batch_size=int(fc["batch_size"]), num_batches_per_epoch=nbpe,
                  trainer_kwargs=trainer)
    L.seed_everything(seed, verbose=False)
    if kind == "PatchTST":
        return PatchTSTEstimator(patch_len=int(spec["patch_len"]),
                                 stride=int(spec["patch_len"]), **common, **fc["patchtst"])
    return DeepAREstimator(freq=spec["freq"], **common, **fc["deepar"])


def run_collection(name: str, cfg: dict, seed: int, work: Path) -> dict:
    from gluonts.model.seasonal_naive import SeasonalNaivePredictor
    from gluonts.time_feature import get_seasonality

    from tslayers.align import ForecastAligner, ForecastHeadConfig

    fc = cfg["forecasting"]
    spec = fc["collections"][name]
    qs = [float(q) for q in fc["quantiles"]]
    h, ctx = int(spec["horizon"]), int(spec["context"])
    min_ctx = int(spec.get("min_context", ctx))
    season = int(get_seasonality(spec["freq"]))
    values, starts = load_collection(spec)
    data = gluonts_data(values, starts, spec)
    win = windows(data["train_values"], ctx, h, min_ctx, float(fc["probe_val_fraction"]))
    log(f"forecasting {name}: {len(values)} series, {data['n_windows']} test window(s) per "
        f"series, horizon {h}, context {ctx}, seasonality {season}; "
        f"{len(win['train'])}+{len(win['val'])} train/val windows")
    steps, bs, lr = int(fc["steps"]), int(fc["batch_size"]), float(fc["lr"])
    models: dict[str, dict] = {}

    def score(label: str, predictor, secs: float, n_steps: int, note: str) -> None:
        models[label] = dict(steps=n_steps, secs=secs, note=note,
                             **evaluate(predictor, data, season, qs))
        log(f"  {label}: MASE {np.mean(models[label]['mase']):.3f} ({secs:.0f}s)")

    score("seasonal naive", SeasonalNaivePredictor(prediction_length=h, season_length=season),
          0.0, 0, f"season {season}")
    for kind in ("DeepAR", "PatchTST"):
        t0 = time.perf_counter()
        pred = gluonts_model(kind, spec, fc, steps, seed, work / f"fc-{name}-{kind}").train(
            data["train"])
        score(kind, pred, time.perf_counter() - t0, steps, "StudentT head")

    enc_cfg = {**fc["encoder"], "patch_len": int(spec["patch_len"])}
    padded = [np.r_[np.full(ctx - min_ctx, np.nan), v] for v in data["train_values"]]
    val = [v[-(ctx + 2 * h):] for v in padded if len(v) >= ctx + 2 * h][:8] or padded[:1]
    encoder, objective, secs = pretrain_arrays(
        padded, val, enc_cfg, {"name": "forecast", "horizon": h, "loss": "quantile",
                               "quantiles": qs}, steps, bs, lr, ctx, h, 1, seed,
        work / f"fc-{name}-forecast")

    def forecast_fn(x, encoder=encoder, objective=objective):
        out = encoder(x)
        q = objective.scaled(out.tokens, out.patched.n_channels)  # (B, H, C, Q)
        q = q * out.patched.scale[..., None] + out.patched.loc[..., None]
        return q[:, :, 0].numpy()

    score("tslayers forecast objective", quantile_predictor(forecast_fn, h, ctx, qs), secs,
          steps, f"{encoder.n_layers}-layer encoder, quantile head")

    # the layerwise probe on the same test windows (point forecasts: every quantile = mean)
    layer_probe: dict[str, dict] = {}
    enough = len(win["train"]) >= int(fc["min_probe_windows"]) and len(win["val"]) >= 1
    for src_name, enc in (("forecast objective", encoder),
                          ("untrained twin", untrained_twin(encoder, seed))):
        if not enough:
            break
        mse, predict = ridge_layer_probe(enc, win, ctx)
        per_layer = {}
        for layer in sorted(mse):
            def fn(x, layer=layer, predict=predict):
                return np.repeat(predict(x, layer)[..., None], len(qs), -1)

            per_layer[layer] = dict(val_mse=mse[layer], **evaluate(
                quantile_predictor(fn, h, ctx, qs), data, season, qs))
        layer_probe[src_name] = per_layer

    t0 = time.perf_counter()
    cs, s1, s2 = (int(fc[k]) for k in ("contrastive_steps", "align_stage1", "align_stage2"))
    c_enc, _, _ = pretrain_arrays(padded, val, enc_cfg, {"name": "contrastive"}, cs, bs, lr,
                                  ctx, 0, 1, seed, work / f"fc-{name}-contrastive")
    c_mse = ridge_layer_probe(c_enc, win, ctx)[0] if enough else {}
    layer = min((l for l in c_mse if l >= 1), key=lambda l: (c_mse[l], -l),
                default=c_enc.n_layers)
    aligner = ForecastAligner(c_enc, layer, ForecastHeadConfig(horizon=h, quantiles=qs))
    it = batches(win["train"] if len(win["train"]) >= bs else np.r_[win["train"], win["val"]],
                 ctx, bs, seed)
    aligner.set_encoder_trainable(False)
    train_aligner(aligner, it, s1, lr, seed)
    aligner.set_encoder_trainable(True)
    aligner.encoder.set_drop_path(float(fc["align_drop_path"]))
    train_aligner(aligner, it, s2, lr * 0.2, seed + 1)
    aligner.encoder.set_drop_path(0.0)
    score("tslayers forecast-aligned", quantile_predictor(
        lambda x: aligner(x)[0][:, :, 0].numpy(), h, ctx, qs), time.perf_counter() - t0,
        cs + s1 + s2, f"contrastive {cs} steps, truncated at layer {layer}/{c_enc.n_layers} "
        f"({'val ridge MSE' if c_mse else 'too few windows for the probe: last layer'}), "
        f"{s1}+{s2} alignment steps")
    return dict(dataset=name, n_series=len(values), n_windows=data["n_windows"], horizon=h,
                context=ctx, season=season, freq=spec["freq"], unit=data["unit"],
                groups=data["groups"].tolist(), den=[float(np.abs(l).sum())
                                                     for l in data["labels"]],
                models=models, layer_probe=layer_probe,
                train_windows=len(win["train"]), val_windows=len(win["val"]),
                n_layers=encoder.n_layers, test_len=int(spec["test_len"]))
