"""The report's figures, each built by a function that returns a matplotlib Figure (so tests
inspect labels and legends before anything is saved): per-model heatmaps of test scores, layer
curves per task, CKA grids and label-free diagnostics."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from tslayers.probing.analysis import base_models, controls_of, primary_metric

from . import style

#: colour-scale bounds of metrics with natural ones; others use [0, max] of their rows
BOUNDS = {"r2": (0.0, 1.0), "accuracy": (0.0, 1.0), "auroc": (0.5, 1.0),
          "share_of_optimum": (0.0, 1.0)}
#: single-layer controls: the best one on val is drawn as the floor
FLAT_CONTROLS = ("raw-window", "periodogram", "minirocket")


def _mean(ds: xr.Dataset, var: str, **sel) -> np.ndarray:
    da = ds[var].sel(sel)
    return da.mean("seed").values if "seed" in da.dims else da.values


def score_curve(ds: xr.Dataset, model: str, task: str, metric: str) -> tuple[np.ndarray, ...]:
    """(layer,) test score, lower and upper bound, averaged over seeds."""
    sel = dict(model=model, task=task, metric=metric, split="test")
    return tuple(_mean(ds, v, **sel) for v in ("score", "score_lo", "score_hi"))


def selected_layer(ds: xr.Dataset, model: str, task: str, metric: str) -> int | None:
    """The layer chosen on the validation series (most frequent over seeds)."""
    v = ds["selected_layer"].sel(model=model, task=task, metric=metric).values
    v = v[np.isfinite(v)]
    return int(pd.Series(v).mode().iloc[0]) if v.size else None


def optimum(ds: xr.Dataset, task: str, metric: str) -> float:
    """The Bayes-optimal test score of a task (the same rows for every model)."""
    if "optimum" not in ds or metric not in ds["optimum"]["metric"].values.tolist():
        return float("nan")
    v = ds["optimum"].sel(task=task, metric=metric, split="test").values
    return float(np.nanmean(v)) if np.isfinite(v).any() else float("nan")


def score_tasks(ds: xr.Dataset, model: str) -> list[tuple[str, str]]:
    """(task, primary metric) pairs that the model has test scores for."""
    out = []
    for task in ds["task"].values.tolist():
        m = primary_metric(ds, task)
        if m is not None and np.isfinite(score_curve(ds, model, task, m)[0]).any():
            out.append((task, m))
    return out


def _layer_axis(ds: xr.Dataset, models: list[str]) -> str:
    external = any(style.layer_names(ds, m) is not None for m in models)
    return "tap (layer)" if external else "layer (0 = embeddings)"


def _wrap(text: str, width: int = 34) -> str:
    return "\n".join(textwrap.wrap(text, width)) or text


# ------------------------------------------------------------------------------ heatmaps
def _scale(metric: str, mat: np.ndarray) -> tuple[float, float]:
    if metric in BOUNDS:
        return BOUNDS[metric]
    lo, hi = float(np.nanmin(mat)), float(np.nanmax(mat))
    return (min(0.0, lo), hi if hi > min(0.0, lo) else min(0.0, lo) + 1.0)


def _cmap(name: str, bad: str):
    """A registered colour map with missing cells drawn in ``bad``."""
    import matplotlib

    return matplotlib.colormaps[name].with_extremes(bad=bad)


def _cell_values(ax, im, mat: np.ndarray, fmt: str) -> None:
    """Write each finite value in its cell, black or white to read on the cell colour."""
    for (i, j), v in np.ndenumerate(mat):
        if np.isfinite(v):
            ax.text(j, i, fmt.format(v) if abs(v) < 10 else f"{v:.3g}", ha="center",
                    va="center", fontsize=6.5, color=style.text_colour(im.to_rgba(v)))


def _heat_block(ax, ds, model, metric, tasks, cax) -> None:
    """One metric's rows: colour on the metric's shared scale, value in every cell, the
    val-selected layer boxed."""
    from matplotlib.patches import Rectangle

    mat = np.stack([score_curve(ds, model, t, metric)[0] for t in tasks])
    lo, hi = _scale(metric, mat)
    name = "viridis" if bool(ds["higher_is_better"].sel(metric=metric)) else "viridis_r"
    im = ax.imshow(np.ma.masked_invalid(mat), aspect="auto", cmap=_cmap(name, "white"),
                   vmin=lo, vmax=hi, interpolation="nearest")
    extend = "min" if np.nanmin(mat) < lo else "neither"
    bar = ax.figure.colorbar(im, cax=cax, extend=extend)
    bar.set_label(style.metric_label(ds, metric, short=True))
    n_layers = mat.shape[1]
    if n_layers <= 16:
        _cell_values(ax, im, mat, "{:.3f}")
    for i, t in enumerate(tasks):
        k = selected_layer(ds, model, t, metric)
        if k is not None:
            ax.add_patch(Rectangle((k - 0.5, i - 0.5), 1, 1, fill=False, ec="#d62728", lw=2))
    ax.set_yticks(range(len(tasks)), tasks)
    ax.grid(False)
    style.layer_ticks(ax, ds, [model], every=style.tick_step(n_layers))
    ax.set_xlim(-0.5, n_layers - 0.5)


def heatmap(ds: xr.Dataset, model: str):
    """Test score per layer (columns) and task (rows) of one model; one block per metric on a
    scale shared by that metric's tasks, so noise does not fill the colour range."""
    pairs = score_tasks(ds, model)
    if not pairs:
        return None
    groups: dict[str, list[str]] = {}
    for task, metric in pairs:
        groups.setdefault(metric, []).append(task)
    n_layers = ds.sizes["layer"]
    heights = [len(t) + 0.8 for t in groups.values()]
    with style.new_figure(3.2 + 0.5 * n_layers, 1.3 + 0.34 * sum(heights)) as fig:
        grid = fig.add_gridspec(len(groups), 2, height_ratios=heights, width_ratios=[40, 1])
        axes = []
        for i, (metric, tasks) in enumerate(groups.items()):
            ax = fig.add_subplot(grid[i, 0])
            _heat_block(ax, ds, model, metric, tasks, fig.add_subplot(grid[i, 1]))
            ax.tick_params(labelbottom=i == len(groups) - 1)
            axes.append(ax)
        axes[-1].set_xlabel(_layer_axis(ds, [model]))
        fig.suptitle(f"{model}: test score per layer\nbox: layer selected on validation\n"
                     "colour: one scale per metric (↑ higher, ↓ lower is better)", fontsize=9)
    return fig


# ------------------------------------------------------------------------------ layer curves
def _draw_model(ax, ds, model, task, metric, colour, offset: float | None
                ) -> tuple[np.ndarray, ...]:
    """One model's curve with its interval: a filled band when it is alone in the panel,
    else error bars shifted by ``offset`` layers so that overlapping intervals stay apart."""
    v, lo, hi = score_curve(ds, model, task, metric)
    x = ds["layer"].values + (offset or 0.0)
    ok = np.isfinite(v)
    band = ok & np.isfinite(lo) & np.isfinite(hi)
    if offset is None:
        ax.fill_between(x[band], lo[band], hi[band], color=colour, alpha=0.15, lw=0)
    else:
        # the interval as drawn lines, not error bars: a percentile interval need not hold
        # the full-sample score (skewed metrics, few series), and yerr cannot be negative
        ax.vlines(x[band], lo[band], hi[band], colors=colour, lw=1.0, alpha=0.6)
    ax.plot(x[ok], v[ok], color=colour, lw=1.6, marker="o", ms=2.5, label=model)
    k = selected_layer(ds, model, task, metric)
    if k is not None and np.isfinite(v[k]):
        ax.plot([x[k]], [v[k]], color=colour, **style.SELECTED)
    return v, lo, hi


def _draw_controls(ax, ds, models, task, metric, drawn: set, colours) -> list[np.ndarray]:
    """Untrained twins (dashed; in their model's colour when models share the panel) and the
    best single-layer control on val (dotted), each distinct curve once; permuted-label runs
    are not drawn. Returns the drawn values."""
    sign = 1.0 if bool(ds["higher_is_better"].sel(metric=metric)) else -1.0
    twins, flats = [], {}
    for model in models:
        for name in controls_of(ds, model):
            v = score_curve(ds, name, task, metric)[0]
            kind = name.split("/", 1)[1]
            if not np.isfinite(v).any():
                continue
            if kind == "untrained" and not any(np.allclose(v, t, equal_nan=True)
                                               for t in twins):
                twins.append(v)
                ok = np.isfinite(v)
                kw = dict(style.TWIN, color=colours[model]) if len(models) > 1 else style.TWIN
                ax.plot(ds["layer"].values[ok], v[ok], **kw)
                drawn.add("twin" if len(models) == 1 else "twins")
            elif kind in FLAT_CONTROLS:
                val = _mean(ds, "score", model=name, task=task, metric=metric, split="val")
                flats[name] = (np.nanmax(sign * val), float(np.nanmean(v)))
    if flats:
        best = max(flats, key=lambda n: flats[n][0])
        ax.axhline(flats[best][1], **style.FLOOR)
        drawn.add("floor")
        twins.append(np.array([flats[best][1]]))
    return twins


def _curve_panel(ax, ds, models, task, metric, colours, drawn: set) -> tuple[list, list]:
    """Controls, models and optimum of one task; returns the (lines, bands) drawn."""
    lines = _draw_controls(ax, ds, models, task, metric, drawn, colours)
    bands = []
    present = [m for m in models if np.isfinite(score_curve(ds, m, task, metric)[0]).any()]
    shifts = np.linspace(-0.12, 0.12, len(present)) if len(present) > 1 else [None]
    for model, shift in zip(present, shifts):
        v, lo, hi = _draw_model(ax, ds, model, task, metric, colours[model], shift)
        lines.append(v)
        bands += [lo, hi]
    opt = optimum(ds, task, metric)
    if np.isfinite(opt):
        ax.axhline(opt, **style.OPTIMUM)
        drawn.add("optimum")
        lines.append(np.array([opt]))
    ax.set_ylabel(style.metric_label(ds, metric))
    style.layer_ticks(ax, ds, models, every=style.tick_step(ds.sizes["layer"]))
    return lines, bands


def _curve_legend(fig, models, colours, drawn: set) -> None:
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=colours[m], lw=1.6, label=m) for m in models]
    handles.append(Line2D([], [], color="0.2", label="layer selected on validation",
                          **style.SELECTED))
    extra = {"twin": ("untrained twin (control)", style.TWIN),
             "twins": ("untrained twins (control, dashed in the model's colour)", style.TWIN),
             "floor": ("best raw-window / spectrum control", style.FLOOR),
             "optimum": ("Bayes optimum (Kalman)", style.OPTIMUM)}
    handles += [Line2D([], [], label=label, **kw) for key, (label, kw) in extra.items()
                if key in drawn]
    fig.legend(handles=handles, loc="outside lower center", ncol=min(4, len(handles)),
               frameon=False)


def layer_curves(ds: xr.Dataset, max_per_panel: int = 4):
    """Test score against layer for every task (primary metric), bands = bootstrap interval,
    one colour per base model in every panel; beyond ``max_per_panel`` models, one row per
    task and one column per model (small multiples)."""
    models = [m for m in base_models(ds) if score_tasks(ds, m)]
    tasks = list(dict.fromkeys(p for m in models for p in score_tasks(ds, m)))
    if not tasks:
        return None
    colours = style.model_colours(base_models(ds))
    split = len(models) > max_per_panel
    cells = [(t, [m]) for t in tasks for m in models] if split else [(t, models) for t in tasks]
    ncol = len(models) if split else min(4, len(tasks))
    nrow = -(-len(cells) // ncol)
    drawn: set = set()
    pw, ph = (2.7, 2.1) if split else (3.3, 2.5)
    with style.new_figure(pw * ncol, ph * nrow + 0.8) as fig:
        axes = fig.subplots(nrow, ncol, squeeze=False, sharey="row" if split else False)
        drawn_by_row: dict[int, tuple[list, list]] = {}
        for i, (ax, ((task, metric), group)) in enumerate(zip(axes.flat, cells)):
            lines, bands = _curve_panel(ax, ds, group, task, metric, colours, drawn)
            ax.set_title(_wrap(f"{task} · {group[0]}" if split else task))
            ax.set_xlabel(_layer_axis(ds, group))
            row = drawn_by_row.setdefault(i // ncol if split else i, ([], []))
            row[0].extend(lines)
            row[1].extend(bands)
            if split and i % ncol:
                ax.set_ylabel("")
        for i, (lines, bands) in drawn_by_row.items():  # shared rows: limits fit every panel
            style.y_limits(axes[i][0] if split else axes.flat[i], lines, bands)
        for ax in list(axes.flat)[len(cells):]:
            ax.set_axis_off()
        _curve_legend(fig, models, colours, drawn)
    return fig


# ------------------------------------------------------------------------------ diagnostics
def _cka_panel(ax, ds, var, model, n) -> object | None:
    """One CKA matrix (x: the model's layers, y: the compared layers); None when absent."""
    mat = ds[var].sel(model=model).values.T
    if not np.isfinite(mat).any():
        ax.set_axis_off()
        ax.text(0.5, 0.5, "not probed", ha="center", va="center", transform=ax.transAxes)
        return None
    im = ax.imshow(mat, vmin=0, vmax=1, cmap=_cmap("magma", "0.9"), origin="lower",
                   interpolation="nearest")
    ax.grid(False)
    if n <= 8:
        _cell_values(ax, im, mat, "{:.2f}")
    style.layer_ticks(ax, ds, [model], "x", style.tick_step(n, 12))
    style.layer_ticks(ax, ds, [model], "y", style.tick_step(n, 12))
    ax.set_xlabel(_layer_axis(ds, [model]))
    return im


def cka_grid(ds: xr.Dataset):
    """Linear CKA between every pair of a model's layers (and, when probed, against its
    untrained twin's layers): one row per base model (named on the left), one column per
    comparison (named on top), one colour bar."""
    models = [m for m in base_models(ds)
              if "cka" in ds and np.isfinite(ds["cka"].sel(model=m).values).any()]
    if not models:
        return None
    kinds = [("cka", "within the model", "layer")]
    if "cka_cross" in ds and any(np.isfinite(ds["cka_cross"].sel(model=m).values).any()
                                 for m in models):
        kinds.append(("cka_cross", "against its untrained twin", "untrained twin layer"))
    n = ds.sizes["layer"]
    side = min(4.2, 1.8 + 0.18 * n)
    with style.new_figure(side * len(kinds) + 1.2, side * len(models) + 0.4) as fig:
        axes = fig.subplots(len(models), len(kinds), squeeze=False)
        images = []
        for i, model in enumerate(models):
            for j, (var, what, ylabel) in enumerate(kinds):
                ax = axes[i, j]
                images.append(_cka_panel(ax, ds, var, model, n))
                ax.set_ylabel(f"{_wrap(model, 24)}\n{ylabel}" if j == 0 else ylabel)
                if i == 0:
                    ax.set_title(what)
        im = next(x for x in images if x is not None)
        fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.8, label="linear CKA")
    return fig


def compared_pairs(ds: xr.Dataset) -> list[tuple[str, str]]:
    """(model, other model) pairs with a cross-model CKA matrix, untrained twins included."""
    if "cka_compare" not in ds:
        return []
    da = ds["cka_compare"]
    return [(m, o) for m in da["model"].values.tolist() for o in da["model_other"].values.tolist()
            if np.isfinite(da.sel(model=m, model_other=o).values).any()]


def compare_matrix(ds: xr.Dataset, model: str, other: str) -> np.ndarray:
    """(layers of model, layers of other) CKA, trimmed to the layers both have."""
    da = ds["cka_compare"].sel(model=model, model_other=other)
    da = da.dropna("layer", how="all").dropna("layer_other", how="all")
    return da.values


def _named_ticks(ax, ds, model, axis: str, n: int) -> None:
    """Ticks 0..n-1 on ``axis``, labelled with the model's tap names when it has them."""
    names = style.layer_names(ds, model)
    pos = list(range(0, n, style.tick_step(n, 12)))
    labels = [names[i] for i in pos] if names else [str(i) for i in pos]
    if axis == "x":
        ax.set_xticks(pos, labels, rotation=45 if names else 0, ha="right" if names else "center")
    else:
        ax.set_yticks(pos, labels)


def cka_compare(ds: xr.Dataset):
    """Linear CKA between each layer of a model (x) and each layer of a compared model (y),
    one panel per compared model (its untrained twin beside it), on the same windows."""
    pairs = compared_pairs(ds)
    if not pairs:
        return None
    mats = [compare_matrix(ds, m, o) for m, o in pairs]
    side = min(4.2, 1.8 + 0.18 * max(max(x.shape) for x in mats))
    with style.new_figure(side * len(pairs) + 1.2, side + 0.6) as fig:
        axes = fig.subplots(1, len(pairs), squeeze=False)[0]
        for ax, (model, other), mat in zip(axes, pairs, mats):
            im = ax.imshow(mat.T, vmin=0, vmax=1, cmap=_cmap("magma", "0.9"), origin="lower",
                           interpolation="nearest", aspect="auto")
            ax.grid(False)
            if max(mat.shape) <= 8:
                _cell_values(ax, im, mat.T, "{:.2f}")
            _named_ticks(ax, ds, model, "x", mat.shape[0])
            _named_ticks(ax, ds, other.split("/")[0], "y", mat.shape[1])
            ax.set_xlabel(f"{_wrap(model, 24)}: {_layer_axis(ds, [model])}")
            ax.set_ylabel(f"{_wrap(other, 24)}: {_layer_axis(ds, [other.split('/')[0]])}")
            ax.set_title(f"{model} vs {other}")
        fig.colorbar(im, ax=list(axes), shrink=0.8, label="linear CKA")
    return fig


def _diag_panel(ax, ds, var, models, colours, twins: bool) -> bool:
    layers = ds["layer"].values
    lines: list[np.ndarray] = []
    for model in models:
        for name, kw in ((model, dict(color=colours[model], lw=1.6, marker="o", ms=2.5)),
                         (f"{model}/untrained", style.TWIN)):
            if name not in ds["model"].values.tolist() or (name != model and not twins):
                continue
            da = ds[var].sel(model=name)
            v = (da.mean("head") if "head" in da.dims else da).values
            ok = np.isfinite(v)
            if ok.any():
                ax.plot(layers[ok], v[ok], **kw)
                lines.append(v)
    title, ylabel, share = style.DIAGNOSTICS[var]
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    ax.set_xlabel(_layer_axis(ds, models))
    style.layer_ticks(ax, ds, models, every=style.tick_step(ds.sizes["layer"], 10))
    style.y_limits(ax, lines, [], rel=0.1, min_span=0.05 if share else 1e-3)
    if share:
        ax.set_ylim(max(ax.get_ylim()[0], -0.01), min(ax.get_ylim()[1], 1.01))
    return bool(lines)


def diagnostics(ds: xr.Dataset, twins: bool = True):
    """Label-free diagnostics against layer, one panel per quantity, base models in their
    colours and their untrained twins grey dashed; the legend sits below the panels."""
    from matplotlib.lines import Line2D

    models = base_models(ds)
    fields = [v for v in style.DIAGNOSTICS if v in ds and any(
        np.isfinite(ds[v].sel(model=m).values).any() for m in models)]
    if not fields or not models:
        return None
    colours = style.model_colours(models)
    ncol = min(4, len(fields))
    nrow = -(-len(fields) // ncol)
    with style.new_figure(3.2 * ncol, 2.5 * nrow + 0.6) as fig:
        axes = fig.subplots(nrow, ncol, squeeze=False)
        for ax, var in zip(axes.flat, fields):
            _diag_panel(ax, ds, var, models, colours, twins)
        for ax in list(axes.flat)[len(fields):]:
            ax.set_axis_off()
        handles = [Line2D([], [], color=colours[m], lw=1.6, label=m) for m in models]
        if twins and any(f"{m}/untrained" in ds["model"].values.tolist() for m in models):
            handles.append(Line2D([], [], label="untrained twin", **style.TWIN))
        fig.legend(handles=handles, loc="outside lower center", ncol=min(5, len(handles)),
                   frameon=False)
    return fig


# ------------------------------------------------------------------------------ all of them
def build_figures(ds: xr.Dataset) -> dict[str, object]:
    """File stem -> Figure for every figure the results support, in report order."""
    figs = {f"heatmap_{m.replace('/', '_')}": heatmap(ds, m) for m in base_models(ds)}
    figs.update(layer_curves=layer_curves(ds), cka=cka_grid(ds), cka_compare=cka_compare(ds),
                diagnostics=diagnostics(ds))
    return {k: f for k, f in figs.items() if f is not None}


def write_figures(ds: xr.Dataset, out: Path) -> list[Path]:
    """Save every figure as PNG into ``out``."""
    paths = []
    for stem, fig in build_figures(ds).items():
        path = out / f"{stem}.png"
        fig.savefig(path, dpi=style.DPI, metadata={"Software": None})
        paths.append(path)
    return paths
