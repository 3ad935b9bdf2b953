"""Test-set metrics with optional bootstrap weights, and confidence intervals by resampling
series (windows of one series are correlated, so the series is the unit of resampling).

Every metric takes ``w`` (R, n) sample weights (bootstrap replicate counts) or ``None`` and
returns (R,) scores (a scalar array when ``w`` is None).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

Metric = Callable[[np.ndarray, np.ndarray, np.ndarray | None], np.ndarray]

#: direction of every metric tslayers writes: True = higher is better
HIGHER_IS_BETTER: dict[str, bool] = {
    "mse": False,
    "r2": True,
    "mse_vs_naive": False,
    "accuracy": True,
    "auroc": True,
    "fraction_of_optimum": True,
}


def _w(w: np.ndarray | None, n: int) -> np.ndarray:
    return np.ones((1, n)) if w is None else np.atleast_2d(w).astype(np.float64)


def _out(v: np.ndarray, w: np.ndarray | None) -> np.ndarray:
    return v[0] if w is None else v


def mse(y: np.ndarray, pred: np.ndarray, w: np.ndarray | None = None) -> np.ndarray:
    """Mean squared error over samples and outputs. y, pred (n, k)."""
    err = ((y - pred) ** 2).reshape(len(y), -1).mean(1)
    ww = _w(w, len(y))
    return _out(ww @ err / ww.sum(1), w)


def r2(y: np.ndarray, pred: np.ndarray, w: np.ndarray | None = None) -> np.ndarray:
    """R^2 per output averaged uniformly over outputs (sklearn's ``r2_score`` default)."""
    y2, p2 = y.reshape(len(y), -1), pred.reshape(len(y), -1)
    ww = _w(w, len(y))
    tot = ww.sum(1, keepdims=True)
    sse = ww @ (y2 - p2) ** 2
    sst = ww @ y2**2 - (ww @ y2) ** 2 / tot
    with np.errstate(divide="ignore", invalid="ignore"):
        return _out(np.nanmean(1 - sse / np.where(sst > 1e-12, sst, np.nan), axis=1), w)


def accuracy(y: np.ndarray, pred: np.ndarray, w: np.ndarray | None = None) -> np.ndarray:
    """Fraction correct; ``pred`` are class ids (n,) or scores (n, K)."""
    labels = pred.argmax(-1) if pred.ndim == 2 else pred
    ww = _w(w, len(y))
    return _out(ww @ (labels == y).astype(np.float64) / ww.sum(1), w)


def auroc(y: np.ndarray, pred: np.ndarray, w: np.ndarray | None = None) -> np.ndarray:
    """Weighted area under the ROC curve of binary ``y`` (n,) from scores ``pred`` (n,) or
    (n, 1): P(score_pos > score_neg) + P(tie) / 2, for all weight rows at once (ties exact)."""
    score = pred.reshape(len(y), -1)[:, 0]
    ww = _w(w, len(y))
    pos = (np.asarray(y) > 0).astype(np.float64)
    uniq, inv = np.unique(score, return_inverse=True)
    onehot = np.zeros((len(y), len(uniq)))
    onehot[np.arange(len(y)), inv] = 1.0
    wp, wn = (ww * pos) @ onehot, (ww * (1 - pos)) @ onehot  # (R, U) weight per score value
    below = np.cumsum(wn, axis=1) - wn  # negative weight strictly below each value
    num = (wp * (below + 0.5 * wn)).sum(1)
    den = wp.sum(1) * wn.sum(1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return _out(np.where(den > 0, num / den, np.nan), w)


METRICS: dict[str, Metric] = {"mse": mse, "r2": r2, "accuracy": accuracy, "auroc": auroc}


def bootstrap_ci(
    metric: Metric,
    y: np.ndarray,
    pred: np.ndarray,
    groups: np.ndarray,
    *,
    n_boot: int = 200,
    ci: float = 0.9,
    seed: int = 0,
) -> tuple[float, float, float]:
    """(score, lo, hi): the metric on all samples and a percentile interval from resampling
    ``groups`` (series ids, (n,)) with replacement ``n_boot`` times."""
    score = float(metric(y, pred, None))
    if n_boot <= 0:
        return score, float("nan"), float("nan")
    uniq, inverse = np.unique(groups, return_inverse=True)
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(len(uniq), np.full(len(uniq), 1.0 / len(uniq)), size=n_boot)
    reps = np.asarray(metric(y, pred, counts[:, inverse]), dtype=np.float64)
    alpha = (1 - ci) / 2
    if np.isnan(reps).all():
        return score, float("nan"), float("nan")
    lo, hi = np.nanquantile(reps, [alpha, 1 - alpha])
    return score, float(lo), float(hi)
