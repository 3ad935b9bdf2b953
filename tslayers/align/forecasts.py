"""The forecast-aligned model judged by what it outputs: its decoder's forecasts, scored with
GluonTS metrics on the probe's *test* series, next to the forecasting objective's own head, the
truncated encoder with a ridge head and seasonal naive.

Test series are those of the probe's split for the seed (``split_series`` with the probe's
fractions), so the forecasts are scored on exactly the series the probes were scored on. Each
(series, channel) is a GluonTS item whose last ``windows x horizon`` steps are forecast in
rolling, non-overlapping windows, every model seeing the same ``context`` steps of true history.
MASE uses the season of ``gluonts.time_feature.get_seasonality(freq)``; the synthetic series
have no calendar, so ``freq`` defaults to "D" (season 1: naive in-sample scaling). Point
forecasts are given as equal quantiles, so their wQL is their weighted absolute error.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable

import numpy as np
import pandas as pd
import torch
import xarray as xr

QUANTILES = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
#: fn(x (B, context, C) tensor) -> (B, horizon, C, Q) numpy forecasts at ``QUANTILES`` or (Q=1)
ForecastFn = Callable[[torch.Tensor], np.ndarray]


def split_parts(data, probe_cfg, seed: int) -> tuple[xr.Dataset, xr.Dataset, xr.Dataset]:
    """(train, val, test) series of a probe source, split exactly as the probe splits them."""
    from tslayers.data import load_dataset, validate_dataset
    from tslayers.data.windows import split_series

    ds = data if isinstance(data, xr.Dataset) else load_dataset(data.name, **data.params)
    return split_series(validate_dataset(ds), probe_cfg.val_fraction, probe_cfg.test_fraction,
                        seed)


def rolling_windows(obs: np.ndarray, context: int, horizon: int, stride: int
                    ) -> tuple[np.ndarray, np.ndarray]:
    """(S, T, C) -> contexts (W, context, C) and futures (W, horizon, C)."""
    starts = range(0, obs.shape[1] - context - horizon + 1, stride)
    x = np.stack([obs[:, s : s + context] for s in starts], 1)
    y = np.stack([obs[:, s + context : s + context + horizon] for s in starts], 1)
    return (x.reshape(-1, context, obs.shape[2]).astype(np.float32),
            y.reshape(-1, horizon, obs.shape[2]).astype(np.float32))


def gluonts_test_data(obs: np.ndarray, horizon: int, windows: int, freq: str):
    """One univariate item per (series, channel); the last ``windows`` x ``horizon`` steps are
    the test period."""
    from gluonts.dataset.common import ListDataset
    from gluonts.dataset.split import split

    s, _, c = obs.shape
    items = [{"start": pd.Period("2000-01-01", freq=freq), "item_id": f"{i}/{j}",
              "target": obs[i, :, j].astype(np.float32)} for i in range(s) for j in range(c)]
    _, template = split(ListDataset(items, freq=freq), offset=-windows * horizon)
    return template.generate_instances(prediction_length=horizon, windows=windows,
                                       distance=horizon)


def _forecasts(fn: ForecastFn, test_data, context: int, n_channels: int) -> list:
    """Forecast every test instance; the channels of one series and window are stacked into
    one input so multichannel models see them together."""
    from gluonts.model.forecast import QuantileForecast

    entries = list(test_data.input)
    ctx = [np.asarray(e["target"], np.float32)[-context:] for e in entries]
    groups = _series_major(entries, n_channels)
    batch = torch.from_numpy(np.stack([np.stack([ctx[i] for i in idx], -1) for idx in groups]))
    with torch.no_grad():
        pred = np.asarray(fn(batch), dtype=np.float64)  # (B, H, C, Q)
    keys = [str(q) for q in QUANTILES]
    out: list = [None] * len(entries)
    for b, idx in enumerate(groups):
        for j, i in enumerate(idx):
            q = np.sort(pred[b, :, j], -1)
            q = np.repeat(q, len(keys), -1) if q.shape[-1] == 1 else q
            e = entries[i]
            out[i] = QuantileForecast(q.T, start_date=e["start"] + len(e["target"]),
                                      forecast_keys=keys, item_id=e.get("item_id"))
    return out


def _series_major(entries: list, n_channels: int) -> list[list[int]]:
    """Group test instances: for each (series, window), the entry index of each channel."""
    ids = [e["item_id"] for e in entries]
    groups: dict[tuple, list] = {}
    seen: dict[str, int] = {}
    for i, item in enumerate(ids):
        series, channel = item.split("/")
        k = seen.get(item, 0)
        seen[item] = k + 1
        groups.setdefault((series, k), [None] * n_channels)[int(channel)] = i
    return list(groups.values())


def score_forecasts(models: dict[str, ForecastFn], obs: np.ndarray, context: int,
                    horizon: int, windows: int = 2, freq: str = "D", n_boot: int = 200,
                    seed: int = 0, ci: float = 0.9) -> dict[str, dict]:
    """{model: {MASE, MASE_lo, MASE_hi, wQL, item_mase}} on the test series ``obs`` (S, T, C),
    plus GluonTS's seasonal naive. MASE intervals: bootstrap over series (shared draws, so
    the per-item arrays ``item_mase`` can be compared pairwise)."""
    from gluonts.ev.metrics import MASE, MeanWeightedSumQuantileLoss
    from gluonts.model import evaluate_forecasts
    from gluonts.model.seasonal_naive import SeasonalNaivePredictor
    from gluonts.time_feature import get_seasonality

    from tslayers.probing.metrics import bootstrap_counts, interval

    season = get_seasonality(freq)
    test = gluonts_test_data(obs, horizon, windows, freq)
    naive = SeasonalNaivePredictor(prediction_length=horizon, season_length=season)
    all_fc = {"seasonal naive": list(naive.predict(test.input))}
    all_fc |= {name: _forecasts(fn, test, context, obs.shape[2]) for name, fn in models.items()}
    metrics = [MASE(), MeanWeightedSumQuantileLoss(quantile_levels=QUANTILES)]
    counts = bootstrap_counts(np.arange(obs.shape[0]), n_boot, seed, "test")
    out = {}
    for name, fc in all_fc.items():
        with _no_progress_bars():
            agg = evaluate_forecasts(fc, test_data=test, metrics=metrics, axis=None,
                                     seasonality=season).iloc[0]
            per = evaluate_forecasts(fc, test_data=test, metrics=[MASE()], axis=1,
                                     seasonality=season).iloc[:, 0].to_numpy()
        per_series = per.reshape(obs.shape[0], -1).mean(1)  # items are (series, channel)
        reps = counts @ per_series / counts.sum(1)
        lo, hi = interval(reps, ci)
        out[name] = {"MASE": float(_col(agg, "MASE")), "MASE_lo": lo, "MASE_hi": hi,
                     "wQL": float(_col(agg, "weighted_sum_quantile_loss")),
                     "series_mase": per_series.tolist()}
    out["_meta"] = {"season": season, "freq": freq, "windows": windows, "horizon": horizon,
                    "context": context, "n_series": int(obs.shape[0])}
    return out


def _col(row: pd.Series, part: str) -> float:
    return next(v for k, v in row.items() if part in str(k))


def mase_difference(scores: dict, a: str, b: str, n_boot: int = 200, seed: int = 0,
                    ci: float = 0.9) -> tuple[float, float, float]:
    """MASE of ``a`` minus ``b`` with a paired bootstrap interval over test series."""
    from tslayers.probing.metrics import bootstrap_counts, interval

    d = np.asarray(scores[a]["series_mase"]) - np.asarray(scores[b]["series_mase"])
    counts = bootstrap_counts(np.arange(len(d)), n_boot, seed, "test")
    return (float(d.mean()), *interval(counts @ d / counts.sum(1), ci))


def at_quantiles(pred: np.ndarray, levels: list[float]) -> np.ndarray:
    """Quantile forecasts (..., Q) at ``levels`` -> (..., len(QUANTILES)) by linear
    interpolation (flat beyond the outermost levels); point forecasts (Q=1) pass through."""
    if pred.shape[-1] == 1:
        return pred
    flat = np.sort(pred.reshape(-1, pred.shape[-1]), -1)
    out = np.stack([np.interp(QUANTILES, levels, row) for row in flat])
    return out.reshape(*pred.shape[:-1], len(QUANTILES))


# ---------------------------------------------------------------------------- the models
def aligner_fn(aligner) -> ForecastFn:
    """The forecast-aligned model's own decoder (quantiles when it has a quantile head)."""
    levels = list(aligner.head_config.quantiles)

    def fn(x: torch.Tensor) -> np.ndarray:
        pred = aligner.eval()(x)[0].numpy()
        return at_quantiles(pred, levels) if levels else pred
    return fn


def objective_fn(encoder, objective, horizon: int) -> ForecastFn | None:
    """A forecasting objective's own head on its encoder's last layer (None when its horizon
    is shorter than ``horizon``)."""
    if getattr(objective, "horizon", 0) < horizon or not hasattr(objective, "scaled"):
        return None
    levels = [float(q) for q in objective.quantiles]

    def fn(x: torch.Tensor) -> np.ndarray:
        out = encoder.eval()(x)
        pred = objective.scaled(out.tokens, out.patched.n_channels)[:, :horizon]
        pred = pred * out.patched.scale[..., None] + out.patched.loc[..., None]
        return at_quantiles(pred.numpy(), levels) if len(levels) > 1 else pred.numpy()
    return fn


def _token_rows(encoder, x: np.ndarray, future: np.ndarray | None = None):
    """Last-token features (rows, D) of the encoder's last layer and (scaled) targets."""
    with torch.no_grad():
        out = encoder.eval()(torch.from_numpy(x))
    feats = out.tokens[:, -1].numpy()
    mixing = encoder.config.channel_mixing
    if future is None:
        return feats, out, None
    y = (torch.from_numpy(future) - out.patched.loc) / out.patched.scale  # (B, H, C)
    y = y.reshape(len(y), -1) if mixing else y.permute(0, 2, 1).reshape(-1, y.shape[1])
    return feats, out, y.numpy()


def ridge_fn(encoder, train_obs: np.ndarray, val_obs: np.ndarray, context: int,
             horizon: int, lambdas: list[float], stride: int | None = None) -> ForecastFn:
    """A linear (ridge) head from the encoder's last-layer last token to the whole horizon,
    fitted on train-series windows with lambda chosen on val-series windows."""
    from tslayers.probing.probes import RidgeProbe

    probe = RidgeProbe(lambdas)
    for split, obs in (("train", train_obs), ("val", val_obs)):
        x, y = rolling_windows(obs, context, horizon, stride or horizon)
        for s in range(0, len(x), 256):
            feats, _, target = _token_rows(encoder, x[s : s + 256], y[s : s + 256])
            probe.update({0: feats}, target, split)
    probe.fit("val")
    mixing = encoder.config.channel_mixing

    def fn(x: torch.Tensor) -> np.ndarray:
        feats, out, _ = _token_rows(encoder, x.numpy())
        pred = torch.from_numpy(probe.predict({0: feats})[0]).float()
        b, c = x.shape[0], x.shape[2]
        pred = pred.reshape(b, horizon, c) if mixing else \
            pred.reshape(b, c, horizon).permute(0, 2, 1)
        return (pred * out.patched.scale + out.patched.loc).numpy()[..., None]
    return fn


@contextlib.contextmanager
def _no_progress_bars():
    """GluonTS's evaluation draws a tqdm bar per call (``tqdm()`` without ``disable``, and tqdm
    reads its environment only at import); a study should print none of them."""
    import gluonts.model.evaluation as evaluation

    original = evaluation.tqdm
    evaluation.tqdm = functools.partial(original, disable=True)
    try:
        yield
    finally:
        evaluation.tqdm = original
