"""The task registry: every probing task is one :class:`Task` object.

A task carries its family (the paper analogue), what it needs from the data, its metrics (the
first is the primary one; directions live in :data:`tslayers.probing.metrics.METRICS`) and a
``build`` function that turns one source's features into :class:`Problem` s: rows, per-layer
inputs, targets and how to score predictions. Fitting, selection on validation series and
scoring are shared (:mod:`tslayers.probing.pipeline`), so a new task is ~20 lines::

    register_task(Task("my_task", family="dense", metrics=("r2", "mse"), dense=True,
                       needs=lambda win: None if win.latent is not None else "latent states",
                       build=my_builder))

Built-in tasks: ``forecast`` (ridge from tokens; results ``forecast/h{h}/{last,all,mean}``),
``lens`` (the model's own head on every layer), ``classify`` (logistic on pooled tokens),
``latent``, ``impute``, ``anomaly``, ``regime`` (per token), ``correspondence`` (kNN, zero-shot),
``series_target`` and ``step_target`` (the user's own targets named in ``probe.targets``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from .features import Features, Windows, token_values, window_scaling


@dataclass
class Split:
    """Boolean (n,) masks over rows; no series is in two of them."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray

    def masks(self) -> dict[str, np.ndarray]:
        return {"train": self.train, "val": self.val, "test": self.test}

    def restrict(self, ok: np.ndarray) -> Split:
        return Split(self.train & ok, self.val & ok, self.test & ok)

    def per_token(self, n_tokens: int) -> Split:
        return Split(*(np.repeat(m, n_tokens) for m in (self.train, self.val, self.test)))


@dataclass
class View:
    """How one result (a task name in the results file) is scored from a problem's predictions.

    ``cols``: the prediction columns it reads; ``target`` (n, ...) in scoring units;
    ``decode(pred, rows)`` maps predictions of ``rows`` to scoring units; ``baselines``:
    reference predictions in scoring units ("naive" and "optimum" enable ``mse_vs_naive`` and
    ``share_of_optimum``)."""

    metrics: tuple[str, ...]
    target: np.ndarray
    cols: slice = field(default_factory=lambda: slice(None))
    decode: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None
    baselines: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class Problem:
    """One probe fitted on every layer at once. ``kind``: ``regress`` (ridge), ``classify``
    (logistic) or ``neighbours`` (kNN from train rows, no training). ``x[l]`` (n, F), ``y``
    (n, k) floats or (n,) class ids, ``groups`` (n,) series ids (bootstrap unit), ``blocks`` (n,)
    window ids (permutation unit)."""

    kind: str
    x: dict[int, np.ndarray]
    y: np.ndarray
    rows: Split
    groups: np.ndarray
    blocks: np.ndarray
    views: dict[str, View]
    n_classes: int = 0
    output_groups: list[slice] | None = None


@dataclass
class Context:
    """What a task's ``build`` gets: one source's features on the window sample."""

    win: Windows
    feats: Features
    split: Split  # over windows
    cfg: object  # ProbeConfig
    instance_scaled: bool
    optimum: Callable[[Features], dict | None] = lambda feats: None


@dataclass(frozen=True)
class Task:
    name: str
    family: str
    metrics: tuple[str, ...]
    needs: Callable[[Windows], str | None]
    build: Callable[[Context], list[Problem]]
    dense: bool = False  # needs time-aligned tokens


TASKS: dict[str, Task] = {}


def register_task(task: Task) -> Task:
    """Add (or replace) a task; config validation, reports and alignment read this registry."""
    from .metrics import METRICS

    unknown = [m for m in task.metrics if m not in METRICS]
    if unknown or not task.metrics:
        raise ValueError(f"task '{task.name}': metrics {unknown or '()'} have no registered "
                         f"direction; known: {sorted(METRICS)}")
    TASKS[task.name] = task
    return task


def base_task(result_name: str) -> str:
    """The task behind a result name: ``forecast/h8/last`` and ``latent@lorenz`` (a task run on
    a second dataset, see ``ProbeSource.label``) -> ``forecast``, ``latent``."""
    return result_name.split("@")[0].split("/")[0]


def family_of(result_name: str) -> str:
    base = base_task(result_name)
    return TASKS[base].family if base in TASKS else "other"


def resolve_tasks(requested: list[str], win: Windows, data_name: str = "dataset") -> list[str]:
    """Expand "auto" into the tasks the data supports; raise for explicit tasks it does not."""
    if "auto" in requested:
        return [t for t, task in TASKS.items() if t != "lens" and task.needs(win) is None]
    for name in requested:
        if name not in TASKS:
            raise ValueError(f"unknown task '{name}'; registered tasks: {sorted(TASKS)}")
        what = TASKS[name].needs(win)
        if what is not None:
            raise ValueError(f"task '{name}' needs {what}, which dataset '{data_name}' does not "
                             "provide; remove it from probe.tasks or use a dataset that has it")
    return list(requested)


# ------------------------------------------------------------------------------ helpers
def _token_rows(ctx: Context) -> tuple[dict[int, np.ndarray], Split, np.ndarray, np.ndarray]:
    """Per-token rows: x (W*P, F) per layer, split, series ids and window ids per row."""
    f = ctx.feats
    p = len(f.token_end)
    x = {l: t.reshape(-1, t.shape[-1]) for l, t in f.tokens.items()}
    w = np.arange(len(ctx.win))
    return x, ctx.split.per_token(p), np.repeat(ctx.win.series, p), np.repeat(w, p)


def _standardise_train(y: np.ndarray, train: np.ndarray) -> np.ndarray:
    """Targets standardised per output with train statistics (so outputs weigh alike)."""
    mu = np.nanmean(y[train], 0)
    sd = np.nanstd(y[train], 0)
    return (y - mu) / np.where(sd > 1e-12, sd, 1.0)


def _need(attr: str, what: str) -> Callable[[Windows], str | None]:
    return lambda win: None if getattr(win, attr) is not None else what


def _time_label_kind(kind: str) -> Callable[[Windows], str | None]:
    def needs(win: Windows) -> str | None:
        if win.time_label is None or win.time_label_kind != kind:
            return f"per-time labels 'time_label' of kind '{kind}'"
        return None
    return needs


def _series_classes(win: Windows) -> str | None:
    if win.label is None:
        return "a series-level 'label' variable (e.g. synthetic/mixture)"
    if len(np.unique(win.label)) < 2:
        return "a series 'label' with at least two classes (found one class)"
    return None


def control_task(problem: Problem, ctx: Context, seed: int) -> Problem | None:
    """The Hewitt & Liang control task of a classification problem: every *input type* gets a
    random but fixed label, so a probe can only score by telling input types apart (capacity,
    not information about the task). Input type: quartiles of the mean and of the spread of the
    input a row sees (the window for series rows, the token's steps for token rows), 16 types.
    Selectivity = task accuracy - control-task accuracy."""
    if problem.kind != "classify":
        return None
    x, f = ctx.win.x[..., 0], ctx.feats
    if len(problem.y) == len(x):
        spans = [x]
    elif len(problem.y) == len(x) * len(f.token_end):
        steps = f.token_end[:, None] - np.arange(f.token_len)[None]
        spans = [x[:, np.clip(steps, 0, None)]]  # (W, P, token_len)
    else:
        return None
    span = spans[0].reshape(len(problem.y), -1)
    stats = np.stack([np.nanmean(span, 1), np.nanstd(span, 1)], 1)
    train = problem.rows.train
    codes = [np.digitize(np.nan_to_num(s), np.nanquantile(s[train], [0.25, 0.5, 0.75]))
             for s in stats.T]
    types = codes[0] * 4 + codes[1]
    table = np.random.default_rng([seed, 1234]).integers(0, problem.n_classes, 16)
    y = table[types]
    (name,) = problem.views
    return Problem(problem.kind, problem.x, y, problem.rows, problem.groups, problem.blocks,
                   {f"{name}/control-task": View(("accuracy",), y)}, n_classes=problem.n_classes)


# ------------------------------------------------------------------------------ forecasting
def _last_observed(x: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    """Last observed value per window and channel, (W, C): the naive (persistence) forecast."""
    obs = np.isfinite(x)
    idx = x.shape[1] - 1 - np.argmax(obs[:, ::-1], axis=1)
    val = np.take_along_axis(x, idx[:, None], axis=1)[:, 0]
    return np.where(obs.any(1), val, fallback)


def _all_tokens(tokens: np.ndarray, max_features: int) -> np.ndarray:
    """(W, P, F) -> (W, g*F): the last g = max_features // F tokens concatenated."""
    w, p, f = tokens.shape
    g = max(1, min(p, max_features // f))
    return np.ascontiguousarray(tokens[:, p - g :]).reshape(w, g * f)


def build_forecast(ctx: Context) -> list[Problem]:
    """Predict y_{t+h} (all channels) from the tokens. Targets are scaled by the window's own
    statistics for sources that normalise their input, else by train statistics per channel;
    either way scores are in data units, against persistence and (LGSSM) the Kalman forecast."""
    f, win, cfg = ctx.feats, ctx.win, ctx.cfg
    hs = sorted(set(cfg.horizons))
    c = win.x.shape[-1]
    raw = win.future[:, [h - 1 for h in hs]]  # (W, nh, C)
    ok = np.isfinite(raw).all((1, 2))
    rows = ctx.split.restrict(ok)
    if ctx.instance_scaled:
        loc, scale = window_scaling(win.x)
    else:
        loc = np.broadcast_to(np.nanmean(win.x[rows.train], (0, 1)), (len(win), c))
        scale = np.broadcast_to(np.nanstd(win.x[rows.train], (0, 1)) + 1e-8, (len(win), c))
    y = np.nan_to_num((raw - loc[:, None]) / scale[:, None]).reshape(len(raw), -1)
    naive = _last_observed(win.x, loc)
    opt = ctx.optimum(f)

    def decode(pred: np.ndarray, idx: np.ndarray) -> np.ndarray:
        return pred.reshape(len(idx), c) * scale[idx] + loc[idx]

    views = {}
    for i, h in enumerate(hs):
        base = {"naive": naive}
        if opt is not None and h in opt["forecast"]:
            base["optimum"] = opt["forecast"][h]
        views[h] = (slice(i * c, (i + 1) * c), raw[:, i], base)
    w = np.arange(len(win))
    problems = []
    sources = {"last": lambda t: t[:, -1], "mean": lambda t: t.mean(1),
               "all": lambda t: _all_tokens(t, cfg.max_features)}
    for src in cfg.forecast_from:
        x = {l: sources[src](t) for l, t in f.tokens.items()}
        metrics = ("r2", "mse", "mse_vs_naive") + (("share_of_optimum",) if opt else ())
        problems.append(Problem(
            "regress", x, y, rows, win.series, w,
            views={f"forecast/h{h}/{src}": View(metrics, target, cols, decode, base)
                   for h, (cols, target, base) in views.items()},
            output_groups=[v[0] for v in views.values()]))
    return problems


def build_lens(ctx: Context) -> list[Problem]:
    """The model's own forecast head decoding every layer: no fitting, only scoring."""
    f, win = ctx.feats, ctx.win
    if f.lens is None or win.future is None:
        return []
    out = []
    for h in sorted(set(ctx.cfg.horizons)):
        if h > next(iter(f.lens.values())).shape[1] or h > win.future.shape[1]:
            continue
        target = win.future[:, h - 1]
        ok = np.isfinite(target).all(1)
        x = {l: v[:, h - 1] for l, v in f.lens.items()}
        out.append(Problem("given", x, target, ctx.split.restrict(ok), win.series,
                           np.arange(len(win)), {f"lens/h{h}": View(("mse",), target)}))
    return out


# ------------------------------------------------------------------------------ series labels
def build_classify(ctx: Context) -> list[Problem]:
    """Series classification from pooled features with a multinomial logistic probe."""
    win = ctx.win
    k = win.n_classes or int(win.label.max()) + 1
    return [Problem("classify", ctx.feats.pooled, win.label, ctx.split, win.series,
                    np.arange(len(win)), {"classify": View(("accuracy",), win.label)},
                    n_classes=k)]


# ------------------------------------------------------------------------------ dense
def build_latent(ctx: Context) -> list[Problem]:
    """Decode the true latent state at each token's last step from that token; targets
    standardised per state with train statistics (so every state weighs alike); the naive
    predictor is the train mean, the optimum (LGSSM) the Kalman filter (causal sources) or
    smoother (bidirectional) on exactly these rows."""
    x, rows, series, blocks = _token_rows(ctx)
    true = token_values(ctx.win.latent, ctx.feats.token_end)
    ok = np.isfinite(true).all(1)
    rows = rows.restrict(ok)
    mu = np.nanmean(true[rows.train], 0)
    sd = np.nanstd(true[rows.train], 0)
    sd = np.where(sd > 1e-12, sd, 1.0)
    y = np.nan_to_num((true - mu) / sd)
    base = {"naive": np.zeros_like(y)}
    opt = ctx.optimum(ctx.feats)
    if opt is not None:
        base["optimum"] = (opt["latent"] - mu) / sd
    metrics = ("r2", "mse") + (("share_of_optimum",) if opt else ())
    return [Problem("regress", x, y, rows, series, blocks,
                    {"latent": View(metrics, y, baselines=base)})]


def build_impute(ctx: Context) -> list[Problem]:
    """Reconstruct a hidden patch (all channels, window-standardised) from the token at its
    position in a second pass where that patch is NaN (``ctx.feats.masked``)."""
    f, win = ctx.feats, ctx.win
    masked, hidden = f.masked, f.hidden
    if masked is None:
        return []
    t = win.x.shape[1]
    end = f.token_end[hidden]
    steps = end[:, None] - np.arange(f.token_len)[::-1][None]  # (W, token_len)
    inside = steps >= 0
    vals = np.take_along_axis(win.x, np.clip(steps, 0, t - 1)[..., None], axis=1)
    loc, scale = window_scaling(win.x)
    y = np.where(inside[..., None], (vals - loc[:, None]) / scale[:, None], 0.0)
    y = y.reshape(len(y), -1)
    ok = np.isfinite(y).all(1) & inside.any(1)
    y = np.nan_to_num(y)
    return [Problem("regress", masked, y, ctx.split.restrict(ok), win.series,
                    np.arange(len(win)), {"impute": View(("r2", "mse"), y)})]


def _token_labels(ctx: Context, reduce: str) -> np.ndarray:
    """Per-token labels (W*P,): any() over the token's steps (anomaly) or the value at its end."""
    f, tl = ctx.feats, ctx.win.time_label
    if reduce == "end":
        return token_values(tl, f.token_end).astype(np.int64)
    steps = f.token_end[:, None] - np.arange(f.token_len)[None]
    inside = steps >= 0
    lab = tl[:, np.clip(steps, 0, None)] * inside
    return (lab > 0).any(-1).astype(np.int64).reshape(-1)


def build_anomaly(ctx: Context) -> list[Problem]:
    """Anomaly localisation: a linear score per token, AUROC over test tokens."""
    x, rows, series, blocks = _token_rows(ctx)
    y = _token_labels(ctx, "any")
    return [Problem("regress", x, y[:, None].astype(np.float64), rows, series, blocks,
                    {"anomaly": View(("auroc",), y)})]


def build_regime(ctx: Context) -> list[Problem]:
    """Per-token regime classification with a logistic probe."""
    x, rows, series, blocks = _token_rows(ctx)
    y = _token_labels(ctx, "end")
    return [Problem("classify", x, y, rows, series, blocks, {"regime": View(("accuracy",), y)},
                    n_classes=int(y.max()) + 1)]


def build_correspondence(ctx: Context) -> list[Problem]:
    """Zero-shot temporal correspondence: label each token by its nearest train tokens
    (cosine kNN, no training). Labels: regimes, else quantile bins of the first latent."""
    x, rows, series, blocks = _token_rows(ctx)
    if ctx.win.time_label is not None and ctx.win.time_label_kind == "regime":
        y = _token_labels(ctx, "end")
    else:
        z = token_values(ctx.win.latent, ctx.feats.token_end)[:, 0]
        edges = np.quantile(z[rows.train], np.linspace(0, 1, ctx.cfg.n_bins + 1)[1:-1])
        y = np.digitize(z, edges)
    return [Problem("neighbours", x, y, rows, series, blocks,
                    {"correspondence": View(("accuracy",), y)}, n_classes=int(y.max()) + 1)]


# ------------------------------------------------------------------------------ user targets
def _target_problem(name: str, values: np.ndarray, x: dict[int, np.ndarray], rows: Split,
                    groups: np.ndarray, blocks: np.ndarray) -> Problem:
    """Classes -> logistic probe (accuracy); floats -> ridge on train-standardised targets
    (r2, mse; the naive predictor is the train mean). Rows with a missing target are dropped."""
    if values.dtype.kind == "i":
        n_classes = int(values.max()) + 1
        if len(np.unique(values[rows.train])) < 2:
            raise ValueError(f"probe target '{name}': the train split holds one class only; "
                             "a classifier needs at least two (use more series or windows)")
        return Problem("classify", x, values, rows, groups, blocks,
                       {name: View(("accuracy",), values)}, n_classes=n_classes)
    y = values.reshape(len(values), -1)
    rows = rows.restrict(np.isfinite(y).all(1))
    y = np.nan_to_num(_standardise_train(y, rows.train))
    return Problem("regress", x, y, rows, groups, blocks,
                   {name: View(("r2", "mse"), y, baselines={"naive": np.zeros_like(y)})})


def build_series_target(ctx: Context) -> list[Problem]:
    """User targets per series (``probe.targets``) from pooled features:
    ``series_target/<name>``."""
    w = np.arange(len(ctx.win))
    return [_target_problem(f"series_target/{name}", v, ctx.feats.pooled, ctx.split,
                            ctx.win.series, w) for name, v in ctx.win.targets.items()]


def build_step_target(ctx: Context) -> list[Problem]:
    """User targets per time step (``probe.targets``), decoded from each token at the token's
    last step (the same alignment as ``latent``; a pooled tap reads the window's last step):
    ``step_target/<name>``."""
    x, rows, series, blocks = _token_rows(ctx)
    return [_target_problem(f"step_target/{name}", token_values(v, ctx.feats.token_end), x,
                            rows, series, blocks) for name, v in ctx.win.step_targets.items()]


for _task in (
    Task("forecast", "forecasting", ("r2", "mse", "mse_vs_naive", "share_of_optimum"),
         _need("future", "a forecast horizon (probe.horizons) and series long enough for "
                         "context + horizon"), build_forecast),
    Task("lens", "forecasting", ("mse",), _need("future", "a forecast horizon"), build_lens),
    Task("classify", "classification", ("accuracy",), _series_classes, build_classify),
    Task("latent", "dense", ("r2", "mse", "share_of_optimum"),
         _need("latent", "true latent states 'latent' (e.g. synthetic/lgssm)"), build_latent,
         dense=True),
    Task("impute", "dense", ("r2", "mse"), lambda win: None, build_impute, dense=True),
    Task("anomaly", "dense", ("auroc",), _time_label_kind("anomaly"), build_anomaly, dense=True),
    Task("regime", "dense", ("accuracy",), _time_label_kind("regime"), build_regime, dense=True),
    Task("series_target", "target", ("r2", "mse", "accuracy"),
         lambda win: None if win.targets else "per-series targets (probe.targets)",
         build_series_target),
    Task("step_target", "dense", ("r2", "mse", "accuracy"),
         lambda win: None if win.step_targets else "per-time-step targets (probe.targets)",
         build_step_target, dense=True),
    Task("correspondence", "zero-shot", ("accuracy",),
         lambda win: None if (win.time_label is not None and win.time_label_kind == "regime")
         or win.latent is not None else "per-time regime labels or latent states",
         build_correspondence, dense=True),
):
    register_task(_task)
