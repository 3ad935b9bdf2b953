"""Metrics with bootstrap weights, paired resampling of series, and permutation p-values.

Every metric takes ``w`` (R, n) sample weights (bootstrap replicate counts) or ``None`` and
returns (R,) scores (a scalar array when ``w`` is None). Windows of one series are correlated,
so the *series* is the unit of resampling; :func:`bootstrap_counts` draws one set of counts per
split and seed from the sorted series ids, so every model, layer and task scored on that split
is resampled with the same draws: differences between them are *paired*.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

Metric = Callable[[np.ndarray, np.ndarray, np.ndarray | None], np.ndarray]


def _w(w: np.ndarray | None, n: int) -> np.ndarray:
    return np.ones((1, n)) if w is None else np.atleast_2d(w).astype(np.float64)


def _out(v: np.ndarray, w: np.ndarray | None) -> np.ndarray:
    return v[0] if w is None else v


def _finite_targets(y: np.ndarray, name: str) -> None:
    if not np.isfinite(np.asarray(y, dtype=np.float64)).all():
        raise ValueError(f"{name}: targets contain NaN or inf; drop those rows before scoring "
                         "(a metric never skips outputs silently)")


def mse(y: np.ndarray, pred: np.ndarray, w: np.ndarray | None = None) -> np.ndarray:
    """Mean squared error over samples and outputs. y, pred (n, k)."""
    _finite_targets(y, "mse")
    err = ((y - pred) ** 2).reshape(len(y), -1).mean(1)
    ww = _w(w, len(y))
    with np.errstate(divide="ignore", invalid="ignore"):  # a replicate without rows: NaN
        return _out(ww @ err / ww.sum(1), w)


def r2(y: np.ndarray, pred: np.ndarray, w: np.ndarray | None = None) -> np.ndarray:
    """R^2 per output averaged uniformly over outputs (sklearn's ``r2_score`` default).
    An output with no variance in the (resampled) targets makes the score NaN."""
    _finite_targets(y, "r2")
    y2, p2 = y.reshape(len(y), -1), pred.reshape(len(y), -1)
    ww = _w(w, len(y))
    tot = ww.sum(1, keepdims=True)
    sse = ww @ (y2 - p2) ** 2
    with np.errstate(divide="ignore", invalid="ignore"):
        sst = ww @ y2**2 - (ww @ y2) ** 2 / tot
        return _out((1 - sse / np.where(sst > 1e-12, sst, np.nan)).mean(1), w)


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
    pos = np.asarray(y).reshape(-1) > 0
    _, inv = np.unique(score, return_inverse=True)
    u = inv.max() + 1 if len(inv) else 0
    # weight of positives / negatives at each distinct score value, per replicate: (R, U)
    offsets = (np.arange(len(ww)) * u)[:, None]
    wp = np.bincount((offsets + inv[None]).ravel(), (ww * pos).ravel(),
                     minlength=len(ww) * u).reshape(len(ww), u)
    wn = np.bincount((offsets + inv[None]).ravel(), (ww * ~pos).ravel(),
                     minlength=len(ww) * u).reshape(len(ww), u)
    below = np.cumsum(wn, axis=1) - wn  # negative weight strictly below each value
    num = (wp * (below + 0.5 * wn)).sum(1)
    den = wp.sum(1) * wn.sum(1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return _out(np.where(den > 0, num / den, np.nan), w)


@dataclass(frozen=True)
class MetricSpec:
    higher_is_better: bool
    fn: Metric | None  # None: derived from baselines (see score_view in the pipeline)
    description: str


#: every metric tslayers writes, with its direction
METRICS: dict[str, MetricSpec] = {
    "mse": MetricSpec(False, mse, "mean squared error"),
    "r2": MetricSpec(True, r2, "coefficient of determination, mean over outputs"),
    "accuracy": MetricSpec(True, accuracy, "share of correct labels"),
    "auroc": MetricSpec(True, auroc, "area under the ROC curve"),
    "mse_vs_naive": MetricSpec(False, None, "MSE / MSE of the naive predictor"),
    "share_of_optimum": MetricSpec(
        True, None, "(MSE_naive - MSE) / (MSE_naive - MSE_optimum): share of the achievable "
        "improvement over the naive predictor (1 = Bayes-optimal)"),
}
HIGHER_IS_BETTER: dict[str, bool] = {k: v.higher_is_better for k, v in METRICS.items()}


def bootstrap_counts(split_series: np.ndarray, n_boot: int, seed: int,
                     split: str) -> np.ndarray:
    """(n_boot, S) multinomial counts over the sorted unique series of one split. The draw
    depends only on (seed, split, series), so every model and task shares it (paired)."""
    uniq = np.unique(split_series)
    salt = {"train": 0, "val": 1, "test": 2}[split]
    rng = np.random.default_rng([seed, salt, 7331])
    return rng.multinomial(len(uniq), np.full(len(uniq), 1.0 / len(uniq)), size=n_boot)


def row_weights(counts: np.ndarray, split_series: np.ndarray,
                row_series: np.ndarray) -> np.ndarray:
    """(R, n) weight of each row in each replicate: the count of its series."""
    idx = np.searchsorted(np.unique(split_series), row_series)
    return counts[:, idx]


def interval(reps: np.ndarray, ci: float) -> tuple[float, float]:
    """Percentile interval of bootstrap replicates (NaN when none is finite). When each tail
    holds less than one replicate (a high level, e.g. a Bonferroni correction, on a few hundred
    replicates) the percentiles would be the replicates' min and max, too narrow; the interval
    is then the normal one from the replicates' mean and standard deviation."""
    from scipy.stats import norm

    reps = np.asarray(reps, dtype=np.float64)
    if reps.size == 0 or np.isnan(reps).all():
        return float("nan"), float("nan")
    a = (1 - ci) / 2
    finite = reps[np.isfinite(reps)]
    if a * len(finite) < 1 and len(finite) > 1:
        half = norm.ppf(1 - a) * finite.std(ddof=1)
        return float(finite.mean() - half), float(finite.mean() + half)
    lo, hi = np.nanquantile(reps, [a, 1 - a])
    return float(lo), float(hi)


def bootstrap_ci(metric: Metric, y: np.ndarray, pred: np.ndarray, groups: np.ndarray, *,
                 n_boot: int = 200, ci: float = 0.9, seed: int = 0) -> tuple[float, float, float]:
    """(score, lo, hi): the metric on all samples and a percentile interval from resampling
    ``groups`` (series ids) with replacement."""
    score = float(metric(y, pred, None))
    if n_boot <= 0:
        return score, float("nan"), float("nan")
    counts = bootstrap_counts(groups, n_boot, seed, "test")
    reps = metric(y, pred, row_weights(counts, groups, groups))
    return (score, *interval(reps, ci))


def permutation_pvalue(metric: str, y: np.ndarray, pred: np.ndarray, blocks: np.ndarray,
                       n_perm: int, seed: int) -> float:
    """P-value of the score of fixed predictions against targets permuted by whole blocks
    (windows, so within-window structure is kept; blocks are exchanged only with blocks of the
    same size): (1 + #{perm score at least as good}) / (1 + n_perm)."""
    spec = METRICS[metric]
    if spec.fn is None or n_perm <= 0:
        return float("nan")
    observed = float(spec.fn(y, pred, None))
    rng = np.random.default_rng([seed, 4242])
    uniq, size = np.unique(blocks, return_counts=True)
    order = np.argsort(blocks, kind="stable")
    pos = np.empty(len(blocks), dtype=np.int64)
    pos[order] = np.arange(len(blocks)) - np.repeat(np.cumsum(size) - size, size)
    first = np.cumsum(size) - size  # offset of each block in the sorted order
    better = 0
    for _ in range(n_perm):
        target = np.arange(len(uniq))
        for s in np.unique(size):
            same = np.flatnonzero(size == s)
            target[same] = rng.permutation(same)
        bidx = np.searchsorted(uniq, blocks)
        src = order[first[target[bidx]] + pos]  # row that gives its target to each row
        value = float(spec.fn(y[src], pred, None))
        if np.isfinite(value) and (value >= observed if spec.higher_is_better
                                   else value <= observed):
            better += 1
    return (1 + better) / (1 + n_perm)
