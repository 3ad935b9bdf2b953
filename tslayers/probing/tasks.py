"""Task families (DESIGN.md section 3), each a small function from features to test scores.

- forecasting: ``forecast/h{h}/{last,all,mean}`` (ridge from tokens; mse, r2, mse_vs_naive)
  and ``lens/h{h}`` (the model's own head on every layer; mse);
- classification: ``classify`` (series label; multinomial logistic on pooled tokens; accuracy);
- dense, per patch: ``latent`` (ridge; r2, mse), ``impute`` (masked patch; ridge; mse, r2),
  ``anomaly`` (ridge score; auroc), ``regime`` (logistic; accuracy);
- zero-shot: ``correspondence`` (kNN label propagation, no training; accuracy).

Every task declares the window fields it needs (:data:`NEEDS`); :func:`resolve_tasks` fails
with a clear message when an explicitly requested task lacks them. Probes are fitted on the
train series, hyper-parameters chosen on validation series, scores reported on test series with
bootstrap intervals over test series.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from . import metrics as M
from .config import TASKS, ProbeConfig
from .features import Features, Windows
from .probes import LogisticProbe, RidgeProbe, knn_propagate

FAMILY = {"forecast": "forecasting", "lens": "forecasting", "classify": "classification",
          "latent": "dense", "impute": "dense", "anomaly": "dense", "regime": "dense",
          "correspondence": "zero-shot"}

#: what each task needs from the data, and how to get it
NEEDS: dict[str, tuple[tuple[str, str], ...]] = {
    "forecast": (("future", "a forecast horizon (probe.horizons) and series long enough for "
                            "context + horizon"),),
    "classify": (("label", "a series-level 'label' variable (e.g. synthetic/mixture)"),),
    "latent": (("latent", "true latent states 'latent' (synthetic systems, e.g. "
                          "synthetic/lgssm)"),),
    "impute": (),
    "anomaly": (("time_label", "per-time anomaly labels 'time_label' with kind='anomaly' "
                               "(e.g. synthetic/seasonal)"),),
    "regime": (("time_label", "per-time regime labels 'time_label' with kind='regime' "
                              "(e.g. synthetic/switching_ar)"),),
    "correspondence": (("time_label|latent", "per-time regime labels or latent states"),),
}


def _missing(task: str, win: Windows) -> str | None:
    for fields, what in NEEDS[task]:
        if not any(getattr(win, f) is not None for f in fields.split("|")):
            return what
    if task == "classify" and len(np.unique(win.label)) < 2:
        return "a series 'label' with at least two classes (found one class)"
    if task == "anomaly" and win.time_label_kind != "anomaly":
        return "per-time labels of kind 'anomaly' (found kind " f"'{win.time_label_kind}')"
    if task == "regime" and win.time_label_kind != "regime":
        return "per-time labels of kind 'regime' (found kind " f"'{win.time_label_kind}')"
    if task == "correspondence" and win.time_label is None and win.latent is None:
        return "per-time regime labels or latent states"
    return None


def resolve_tasks(requested: list[str], win: Windows, data_name: str = "dataset") -> list[str]:
    """Expand "auto" into the tasks the data supports; raise for explicit tasks it does not."""
    if "auto" in requested:
        return [t for t in TASKS if _missing(t, win) is None]
    for task in requested:
        what = _missing(task, win)
        if what is not None:
            raise ValueError(f"task '{task}' needs {what}, which dataset '{data_name}' does not "
                             "provide; remove it from probe.tasks or use a dataset that has it")
    return list(requested)


@dataclass
class Split:
    """Boolean (W,) masks over the window sample; no series is in two of them."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


@dataclass
class Record:
    task: str
    metric: str
    layer: int
    score: float
    lo: float = float("nan")
    hi: float = float("nan")
    control: str = ""  # "" or e.g. "permuted": a model entry "<name>/<control>"


@dataclass
class Context:
    """What a task function gets."""

    feats: Features
    win: Windows
    split: Split
    cfg: ProbeConfig
    seed: int


# ------------------------------------------------------------------------- helpers
def _score(ctx: Context, task: str, metric: str, layer: int, y, pred, groups,
           control: str = "") -> Record:
    s, lo, hi = M.bootstrap_ci(M.METRICS[metric], y, pred, groups, n_boot=ctx.cfg.bootstrap,
                               ci=ctx.cfg.ci, seed=ctx.seed)
    return Record(task, metric, layer, s, lo, hi, control)


def _ridge(ctx: Context, x: dict[int, np.ndarray], y: np.ndarray, rows: Split,
           groups: list[slice] | None = None) -> tuple[RidgeProbe, dict[int, np.ndarray]]:
    """Fit a streaming all-layer ridge on train rows (in batches), choose lambda on val rows,
    return the probe and its test predictions."""
    probe = RidgeProbe(ctx.cfg.lambdas)
    bs = 4096
    for split, mask in (("train", rows.train), ("val", rows.val)):
        idx = np.flatnonzero(mask)
        if len(idx) < 2:
            raise ValueError(f"too few {split} rows ({len(idx)}) for a ridge probe")
        for s in range(0, len(idx), bs):
            b = idx[s : s + bs]
            probe.update({l: v[b] for l, v in x.items()}, y[b], split)
    probe.fit("val", groups)
    test = np.flatnonzero(rows.test)
    return probe, probe.predict({l: v[test] for l, v in x.items()})


def _per_patch(mask: np.ndarray, n_patches: int) -> np.ndarray:
    return np.repeat(mask, n_patches)


def _rows(split: Split, ok: np.ndarray | None = None) -> Split:
    if ok is None:
        return split
    return Split(split.train & ok, split.val & ok, split.test & ok)


def _all_tokens(tokens: np.ndarray, max_features: int) -> np.ndarray:
    """(W, P, F) -> (W, g*F): the last g = max_features // F tokens concatenated (every token
    when they fit), so the eigendecomposition stays O(max_features^3)."""
    w, p, f = tokens.shape
    g = max(1, min(p, max_features // f))
    return np.ascontiguousarray(tokens[:, p - g :]).reshape(w, g * f)


def series_features(feats: Features, pool: str) -> dict[int, np.ndarray]:
    if pool == "register":
        if feats.registers is None:
            raise ValueError("probe.pool='register' but the encoder has no register tokens "
                             "(encoder.n_registers=0); use pool: mean")
        return feats.registers
    if pool == "last":
        return {l: t[:, -1] for l, t in feats.tokens.items()}
    return {l: t.mean(1) for l, t in feats.tokens.items()}


# ------------------------------------------------------------------------- tasks
def forecast(ctx: Context) -> list[Record]:
    """Predict y_{t+h} (all channels) from the tokens; fitted in the window's scaled units,
    scored in data units (de-scaled like the model's own head would)."""
    f, win, cfg = ctx.feats, ctx.win, ctx.cfg
    hs = sorted(set(cfg.horizons))
    c = win.x.shape[-1]
    raw = win.future[:, [h - 1 for h in hs]]  # (W, nh, C)
    scaled = (raw - f.loc[:, None]) / f.scale[:, None]
    ok = np.isfinite(scaled).all((1, 2))
    y = np.nan_to_num(scaled).reshape(len(raw), -1)
    rows = _rows(ctx.split, ok)
    groups = [slice(i * c, (i + 1) * c) for i in range(len(hs))]
    test = np.flatnonzero(rows.test)
    last = _last_observed(win.x[test], f.loc[test])  # naive forecast
    out: list[Record] = []
    for src in cfg.forecast_from:
        if src == "last":
            x = {l: t[:, -1] for l, t in f.tokens.items()}
        elif src == "mean":
            x = {l: t.mean(1) for l, t in f.tokens.items()}
        else:
            x = {l: _all_tokens(t, cfg.max_features) for l, t in f.tokens.items()}
        _, pred = _ridge(ctx, x, y, rows, groups)
        for l, p in pred.items():
            p = p.reshape(len(test), len(hs), c) * f.scale[test, None] + f.loc[test, None]
            for i, h in enumerate(hs):
                task = f"forecast/h{h}/{src}"
                yt, pt, g = raw[test, i], p[:, i], win.series[test]
                out += [_score(ctx, task, m, l, yt, pt, g) for m in ("mse", "r2")]
                naive = M.mse(yt, last)
                out.append(Record(task, "mse_vs_naive", l, float(M.mse(yt, pt) / naive)))
    return out


def _last_observed(x: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    """Last observed value per window and channel, (W, C)."""
    obs = np.isfinite(x)
    idx = x.shape[1] - 1 - np.argmax(obs[:, ::-1], axis=1)  # (W, C)
    val = np.take_along_axis(x, idx[:, None], axis=1)[:, 0]
    return np.where(obs.any(1), val, fallback)


def lens(ctx: Context) -> list[Record]:
    """Forecast lens: the model's own head decodes every layer's tokens (no training)."""
    f, win = ctx.feats, ctx.win
    if f.lens is None:
        return []
    test = np.flatnonzero(ctx.split.test)
    out = []
    for l, pred in f.lens.items():
        for h in sorted(set(ctx.cfg.horizons)):
            if h > pred.shape[1] or win.future is None or h > win.future.shape[1]:
                continue
            yt, pt = win.future[test, h - 1], pred[test, h - 1]
            out.append(_score(ctx, f"lens/h{h}", "mse", l, yt, pt, win.series[test]))
    return out


def classify(ctx: Context) -> list[Record]:
    """Series classification from pooled tokens with a multinomial logistic probe; the
    "permuted" control refits on shuffled train labels (a null that must sit at chance)."""
    f, win, sp, cfg = ctx.feats, ctx.win, ctx.split, ctx.cfg
    x = series_features(f, cfg.pool)
    y = win.label
    k = win.n_classes or int(y.max()) + 1
    stack = np.stack(list(x.values()))  # (L, W, F)
    tr, va, te = (np.flatnonzero(m) for m in (sp.train, sp.val, sp.test))
    out = []
    runs = [("", y)]
    if "permuted" in cfg.controls:
        rng = np.random.default_rng(ctx.seed + 1)
        yp = y.copy()
        yp[tr], yp[va] = rng.permutation(y[tr]), rng.permutation(y[va])
        runs.append(("permuted", yp))
    for control, yy in runs:
        probe = LogisticProbe(cfg.Cs).fit(stack[:, tr], yy[tr], stack[:, va], yy[va], k)
        pred = probe.predict(stack[:, te])
        for i, l in enumerate(x):
            out.append(_score(ctx, "classify", "accuracy", l, y[te], pred[i], win.series[te],
                              control))
    return out


def _patch_rows(ctx: Context) -> tuple[dict[int, np.ndarray], Split, np.ndarray]:
    f = ctx.feats
    p = len(f.patch_end)
    x = {l: t.reshape(-1, t.shape[-1]) for l, t in f.tokens.items()}  # (W*P, F)
    rows = Split(*(_per_patch(m, p) for m in (ctx.split.train, ctx.split.val, ctx.split.test)))
    return x, rows, np.repeat(ctx.win.series, p)


def _patch_values(arr: np.ndarray, patch_end: np.ndarray) -> np.ndarray:
    """(W, T, ...) -> (W*P, ...) value at each patch's last step (NaN before the window)."""
    idx = np.clip(patch_end, 0, None)
    return arr[:, idx].reshape(-1, *arr.shape[2:])


def latent(ctx: Context) -> list[Record]:
    """Decode the true latent state at each patch's last step from that patch's token."""
    x, rows, series = _patch_rows(ctx)
    y = _patch_values(ctx.win.latent, ctx.feats.patch_end)
    ok = np.isfinite(y).all(1)
    rows = _rows(rows, ok)
    _, pred = _ridge(ctx, x, np.nan_to_num(y), rows)
    te = np.flatnonzero(rows.test)
    out = []
    for l, p in pred.items():
        out += [_score(ctx, "latent", m, l, y[te], p, series[te]) for m in ("r2", "mse")]
    return out


def impute(ctx: Context) -> list[Record]:
    """Reconstruct a masked patch (all channels, scaled units) from the token at its position
    in a second pass where the patch is hidden (NaN)."""
    f, win = ctx.feats, ctx.win
    t = win.x.shape[1]
    start = f.patch_end[f.mask_patch] - f.patch_len + 1  # (W,)
    steps = start[:, None] + np.arange(f.patch_len)[None]  # (W, patch_len)
    inside = (steps >= 0) & (steps < t)
    vals = np.take_along_axis(win.x, np.clip(steps, 0, t - 1)[..., None], axis=1)  # (W, pl, C)
    y = (vals - f.masked_loc[:, None]) / f.masked_scale[:, None]
    y = np.where(inside[..., None], y, 0.0).reshape(len(y), -1)
    ok = np.isfinite(y).all(1) & inside.any(1)
    rows = _rows(ctx.split, ok)
    _, pred = _ridge(ctx, f.masked, np.nan_to_num(y), rows)
    te = np.flatnonzero(rows.test)
    out = []
    for l, p in pred.items():
        out += [_score(ctx, "impute", m, l, y[te], p, win.series[te]) for m in ("mse", "r2")]
    return out


def _patch_labels(ctx: Context, reduce: str) -> np.ndarray:
    """Per-patch labels (W*P,): any() over the patch (anomaly) or the value at its end."""
    f, tl = ctx.feats, ctx.win.time_label
    if reduce == "end":
        return _patch_values(tl, f.patch_end)
    steps = f.patch_end[:, None] - np.arange(f.patch_len)[None]  # (P, patch_len)
    inside = steps >= 0
    lab = tl[:, np.clip(steps, 0, None)] * inside  # (W, P, patch_len)
    return (lab > 0).any(-1).astype(np.int64).reshape(-1)


def anomaly(ctx: Context) -> list[Record]:
    """Anomaly localisation: a linear score per patch token, AUROC over test patches."""
    x, rows, series = _patch_rows(ctx)
    y = _patch_labels(ctx, "any")
    _, pred = _ridge(ctx, x, y.astype(np.float64), rows)
    te = np.flatnonzero(rows.test)
    return [_score(ctx, "anomaly", "auroc", l, y[te], p, series[te]) for l, p in pred.items()]


def regime(ctx: Context) -> list[Record]:
    """Per-patch regime classification with a logistic probe."""
    x, rows, series = _patch_rows(ctx)
    y = _patch_labels(ctx, "end")
    stack = np.stack(list(x.values()))
    tr, va, te = (np.flatnonzero(m) for m in (rows.train, rows.val, rows.test))
    k = int(y.max()) + 1
    probe = LogisticProbe(ctx.cfg.Cs).fit(stack[:, tr], y[tr], stack[:, va], y[va], k)
    pred = probe.predict(stack[:, te])
    return [_score(ctx, "regime", "accuracy", l, y[te], pred[i], series[te])
            for i, l in enumerate(x)]


def correspondence(ctx: Context) -> list[Record]:
    """Zero-shot temporal correspondence: label every test patch by its nearest train patches
    in feature space (no training). Labels: regimes, else quantile bins of the 1st latent."""
    x, rows, series = _patch_rows(ctx)
    if ctx.win.time_label is not None and ctx.win.time_label_kind == "regime":
        y = _patch_labels(ctx, "end")
    else:
        z = _patch_values(ctx.win.latent, ctx.feats.patch_end)[:, 0]
        edges = np.quantile(z[rows.train], np.linspace(0, 1, ctx.cfg.n_bins + 1)[1:-1])
        y = np.digitize(z, edges)
    ref, qry = np.flatnonzero(rows.train), np.flatnonzero(rows.test)
    k = int(y.max()) + 1
    out = []
    for l, v in x.items():
        scores = knn_propagate(v[ref], y[ref], v[qry], k=ctx.cfg.knn_k, n_classes=k)
        out.append(_score(ctx, "correspondence", "accuracy", l, y[qry], scores.argmax(-1),
                          series[qry]))
    return out


RUNNERS: dict[str, Callable[[Context], list[Record]]] = {
    "forecast": forecast, "classify": classify, "latent": latent, "impute": impute,
    "anomaly": anomaly, "regime": regime, "correspondence": correspondence, "lens": lens,
}


# ------------------------------------------------------------------------- Kalman optimum
def kalman_optimum(ds, win: Windows, feats: Features, test: np.ndarray,
                   horizons: list[int]) -> dict[tuple[str, str], float]:
    """Bayes-optimal scores on exactly the probe's test rows (LGSSM data only).

    Latent: RTS smoother within each window started from the stationary prior (what a
    bidirectional window model can know at best), evaluated at the probed patch ends; forecast:
    ``C A^h`` times the filtered state at the window's last step. Returns {(task, metric): v}.
    """
    from tslayers.data.kalman import (
        kalman_filter,
        kalman_forecast,
        kalman_smoother,
        system_matrices,
    )

    idx = np.flatnonzero(test)
    systems = win.label[idx] if (win.label is not None and "system" in ds.dims) else \
        np.zeros(len(idx), dtype=int)
    p = len(feats.patch_end)
    s = win.latent.shape[-1]
    smooth = np.zeros((len(idx), p, s))
    fc = {h: np.zeros((len(idx), win.x.shape[-1])) for h in horizons}
    for k in np.unique(systems):
        sel = systems == k
        mats = system_matrices(ds, int(k))
        filt = kalman_filter(win.x[idx[sel]], **mats)
        sm = kalman_smoother(filt, mats["A"])
        smooth[sel] = sm.mean[:, np.clip(feats.patch_end, 0, None)]
        for h, pred in kalman_forecast(filt.mean[:, -1], mats["A"], mats["C"], horizons).items():
            fc[h][sel] = pred
    out: dict[tuple[str, str], float] = {}
    true = _patch_values(win.latent[idx], feats.patch_end)
    est = smooth.reshape(-1, s)
    out[("latent", "r2")] = float(M.r2(true, est))
    out[("latent", "mse")] = float(M.mse(true, est))
    if win.future is not None:
        for h in horizons:
            if h <= win.future.shape[1]:
                yt = win.future[idx, h - 1]
                for src in ("last", "all", "mean"):
                    out[(f"forecast/h{h}/{src}", "mse")] = float(M.mse(yt, fc[h]))
                    out[(f"forecast/h{h}/{src}", "r2")] = float(M.r2(yt, fc[h]))
    return out
