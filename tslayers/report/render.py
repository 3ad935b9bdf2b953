"""Render a results Dataset as markdown (one table per task family) and figures.

Tables: per model, task and metric, the best layer and its score, the last layer's score and
the gap (always >= 0: how much is lost by reading the last layer), with bootstrap intervals,
averaged over seeds (with the spread over seeds when there are several). Figures: layer x task
heatmap normalised per task, layer curves with intervals, CKA matrices, attention statistics.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from tslayers.probing.results import read_results, validate_results

#: which metric summarises a task family in the heatmap/curves (first one present wins)
PRIMARY = ("r2", "accuracy", "auroc", "mse")


def _load(results: str | Path | xr.Dataset) -> xr.Dataset:
    if isinstance(results, xr.Dataset):
        return validate_results(results)
    return read_results(results)


def best_vs_last(ds: xr.Dataset) -> pd.DataFrame:
    """One row per (model, task, metric) with data: ``family``, ``best_layer``, ``best``,
    ``best_lo``, ``best_hi``, ``last_layer``, ``last``, ``last_lo``, ``last_hi``, ``gap``
    (>= 0, in the metric's units, oriented so larger = the last layer is worse), ``best_std``
    / ``last_std`` (spread over seeds; NaN with one seed), ``higher_is_better``.

    The best layer is chosen on the seed-averaged score; the last layer is the deepest layer
    with a score for that model (so truncated/raw-patch controls use their own last layer).
    """
    validate_results(ds)
    mean = ds["score"].mean("seed")
    std = ds["score"].std("seed") if ds.sizes["seed"] > 1 else xr.full_like(mean, np.nan)
    lo, hi = ds["score_lo"].mean("seed"), ds["score_hi"].mean("seed")
    hib = dict(zip(ds["metric"].values.tolist(), ds["higher_is_better"].values.astype(bool)))
    fam = dict(zip(ds["task"].values.tolist(), ds["family"].values.tolist())) \
        if "family" in ds else {}
    rows = []
    layers = ds["layer"].values
    for model in ds["model"].values.tolist():
        for task in ds["task"].values.tolist():
            for metric in ds["metric"].values.tolist():
                sel = dict(model=model, task=task, metric=metric)
                s = mean.sel(sel).values
                ok = np.isfinite(s)
                if not ok.any():
                    continue
                up = hib[metric]
                ib = int(np.nanargmax(s) if up else np.nanargmin(s))
                il = int(np.flatnonzero(ok)[-1])
                gap = (s[ib] - s[il]) if up else (s[il] - s[ib])
                rows.append(dict(
                    model=model, family=fam.get(task, ""), task=task, metric=metric,
                    best_layer=int(layers[ib]), best=float(s[ib]),
                    best_lo=float(lo.sel(sel).values[ib]), best_hi=float(hi.sel(sel).values[ib]),
                    best_std=float(std.sel(sel).values[ib]),
                    last_layer=int(layers[il]), last=float(s[il]),
                    last_lo=float(lo.sel(sel).values[il]), last_hi=float(hi.sel(sel).values[il]),
                    last_std=float(std.sel(sel).values[il]),
                    gap=float(gap), higher_is_better=bool(up)))
    return pd.DataFrame(rows)


def _fmt(v: float, lo: float, hi: float, std: float) -> str:
    if not np.isfinite(v):
        return "–"
    s = f"{v:.3g}"
    if np.isfinite(lo) and np.isfinite(hi):
        s += f" [{lo:.3g}, {hi:.3g}]"
    if np.isfinite(std):
        s += f" ±{std:.2g}"
    return s


def summary_markdown(df: pd.DataFrame, ds: xr.Dataset) -> str:
    """The study at a glance: per task (primary metric) and model, best layer vs last layer;
    then where high-norm global tokens appear and how similar neighbouring layers are."""
    base = [m for m in ds["model"].values.tolist() if "/" not in m]
    lines = ["## Summary: best layer vs last layer", "",
             "Primary metric per task; cell = best layer: best score (last-layer score). "
             "**Bold** where the last layer is more than 2% below the best.", "",
             "| family | task | metric | " + " | ".join(base) + " |",
             "|---|---|---|" + "---|" * len(base)]
    for task in ds["task"].values.tolist():
        metric = primary_metric(ds, task)
        rows = df[(df["task"] == task) & (df["metric"] == metric)].set_index("model")
        if metric is None or rows.empty:
            continue
        cells = []
        for model in base:
            if model not in rows.index:
                cells.append("–")
                continue
            r = rows.loc[model]
            cell = f"L{r['best_layer']}: {r['best']:.3g} ({r['last']:.3g})"
            cells.append(f"**{cell}**" if r["gap"] > 0.02 * abs(r["best"]) else cell)
        lines.append(f"| {rows['family'].iloc[0]} | {task} | {metric} | " + " | ".join(cells)
                     + " |")
    if "norm_outlier_frac" in ds and "cka" in ds:
        lines += ["", "| model | global tokens: layer with most norm outliers (fraction) | "
                  "CKA of neighbouring layers, min (between) | effective rank, first → last |",
                  "|---|---|---|---|"]
        for model in base:
            frac = ds["norm_outlier_frac"].sel(model=model).dropna("layer")
            cka = ds["cka"].sel(model=model).values
            rank = ds["effective_rank"].sel(model=model).dropna("layer") \
                if "effective_rank" in ds else None
            if frac.size == 0 or not np.isfinite(cka).any():
                continue
            k = int(np.nanargmax(frac.values))
            adj = [cka[i, i + 1] for i in range(len(cka) - 1) if np.isfinite(cka[i, i + 1])]
            i_min = int(np.nanargmin(adj)) if adj else 0
            ranks = (f"{float(rank[0]):.1f} → {float(rank[-1]):.1f}"
                     if rank is not None and rank.size else "–")
            lines.append(f"| {model} | L{int(frac['layer'][k])} ({float(frac[k]):.3f}) | "
                         f"{min(adj):.2f} (L{i_min}–L{i_min + 1}) | {ranks} |" if adj else
                         f"| {model} | L{int(frac['layer'][k])} ({float(frac[k]):.3f}) | – | "
                         f"{ranks} |")
    return "\n".join(lines) + "\n\n"


def _markdown_tables(df: pd.DataFrame, ds: xr.Dataset) -> str:
    lines = ["# Layerwise probing report", ""]
    models = ", ".join(str(m) for m in ds["model"].values)
    lines += [f"Models: {models}. Seeds: {ds.sizes['seed']}. Scores are test-set values "
              "averaged over seeds, [bootstrap interval over test series], ±spread over seeds. "
              "Gap = how much the last layer loses to the best layer (metric units, >= 0).", ""]
    lines.append(summary_markdown(df, ds))
    has_opt = "optimum" in ds
    for family, sub in df.groupby("family", sort=False):
        lines += [f"## {family or 'other'}", ""]
        header = "| model | task | metric | best layer | best | last layer | last | gap |"
        sep = "|---|---|---|---|---|---|---|---|"
        if has_opt:
            header += " optimum |"
            sep += "---|"
        lines += [header, sep]
        for r in sub.itertuples():
            arrow = "↑" if r.higher_is_better else "↓"
            row = (f"| {r.model} | {r.task} | {r.metric} {arrow} | {r.best_layer} | "
                   f"{_fmt(r.best, r.best_lo, r.best_hi, r.best_std)} | {r.last_layer} | "
                   f"{_fmt(r.last, r.last_lo, r.last_hi, r.last_std)} | {r.gap:.3g} |")
            if has_opt:
                v = float(ds["optimum"].sel(task=r.task, metric=r.metric)) \
                    if r.metric in ds["optimum"]["metric"].values.tolist() else np.nan
                row += f" {v:.3g} |" if np.isfinite(v) else " – |"
            lines.append(row)
        lines.append("")
    return "\n".join(lines)


def primary_metric(ds: xr.Dataset, task: str) -> str | None:
    mean = ds["score"].sel(task=task).mean("seed")
    present = [m for m in ds["metric"].values.tolist()
               if np.isfinite(mean.sel(metric=m).values).any()]
    for m in PRIMARY:
        if m in present:
            return m
    return present[0] if present else None


def normalised_scores(ds: xr.Dataset, model: str) -> tuple[np.ndarray, list[str]]:
    """(layer, task) matrix of the primary metric rescaled to [0, 1] per task (1 = best)."""
    tasks, cols = [], []
    mean = ds["score"].mean("seed").sel(model=model)
    hib = dict(zip(ds["metric"].values.tolist(), ds["higher_is_better"].values.astype(bool)))
    for task in ds["task"].values.tolist():
        m = primary_metric(ds, task)
        if m is None:
            continue
        v = mean.sel(task=task, metric=m).values.astype(float)
        if not np.isfinite(v).any():
            continue
        v = v if hib[m] else -v
        lo, hi = np.nanmin(v), np.nanmax(v)
        cols.append((v - lo) / (hi - lo) if hi > lo else np.where(np.isfinite(v), 1.0, np.nan))
        tasks.append(f"{task} ({m})")
    return (np.stack(cols, 1) if cols else np.zeros((ds.sizes["layer"], 0))), tasks


def matching_tasks(ds: xr.Dataset, target: str) -> list[str]:
    """Tasks named by ``target``: a task ("forecast/h16/last"), a task prefix ("forecast" or
    "forecast/h16") or a family ("forecasting", "dense", ...)."""
    fam = dict(zip(ds["task"].values.tolist(), ds["family"].values.tolist())) \
        if "family" in ds else {}
    tasks = [t for t in ds["task"].values.tolist()
             if t == target or t.startswith(target + "/") or fam.get(t) == target]
    if not tasks:
        raise ValueError(f"no task matches '{target}'; tasks: {ds['task'].values.tolist()}, "
                         f"families: {sorted(set(fam.values()))}")
    return tasks


def layer_profile(ds: xr.Dataset, model: str, target: str) -> xr.DataArray:
    """(layer,) mean over the target's tasks of the primary metric normalised per task to
    [0, 1] (1 = that task's best layer): one curve to pick a layer for a whole family."""
    if model not in ds["model"].values.tolist():
        raise ValueError(f"no model '{model}' in the results; models: "
                         f"{ds['model'].values.tolist()}")
    wanted = matching_tasks(ds, target)
    matrix, names = normalised_scores(ds.sel(task=wanted), model)
    if not names:
        raise ValueError(f"model '{model}' has no scores for '{target}'")
    return xr.DataArray(np.nanmean(matrix, axis=1), coords={"layer": ds["layer"]}, dims="layer")


def best_layer(ds: xr.Dataset, model: str, target: str) -> int:
    """The layer with the highest :func:`layer_profile` for ``target``."""
    profile = layer_profile(ds, model, target)
    return int(profile["layer"].values[int(np.nanargmax(profile.values))])


def _figures(ds: xr.Dataset, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    paths = []
    layers = ds["layer"].values
    models = [m for m in ds["model"].values.tolist()
              if np.isfinite(ds["score"].sel(model=m).values).any()]
    safe = {m: m.replace("/", "_") for m in ds["model"].values.tolist()}
    # 1. heatmap per model
    for model in models:
        mat, tasks = normalised_scores(ds, model)
        if not tasks or np.isfinite(mat).sum(0).max() < 2:
            continue
        fig, ax = plt.subplots(figsize=(1.0 + 0.6 * len(tasks), 1.5 + 0.35 * len(layers)))
        im = ax.imshow(mat, aspect="auto", cmap="viridis", vmin=0, vmax=1, origin="lower")
        ax.set_xticks(range(len(tasks)), tasks, rotation=60, ha="right", fontsize=7)
        ax.set_yticks(range(len(layers)), layers)
        ax.set_ylabel("layer")
        ax.set_title(f"{model}: score per task, normalised (1 = best layer)", fontsize=9)
        fig.colorbar(im, ax=ax, fraction=0.04)
        fig.tight_layout()
        p = out / f"heatmap_{safe[model]}.png"
        fig.savefig(p, dpi=110)
        plt.close(fig)
        paths.append(p)
    # 2. per-task layer curves with intervals, every model in one panel per task
    tasks = ds["task"].values.tolist()
    ncol = min(4, max(1, len(tasks)))
    nrow = -(-len(tasks) // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.6 * ncol, 2.8 * nrow), squeeze=False)
    for ax, task in zip(axes.flat, tasks):
        m = primary_metric(ds, task)
        for model in models:
            sel = dict(model=model, task=task, metric=m)
            v = ds["score"].sel(sel).mean("seed").values
            if not np.isfinite(v).any():
                continue
            ok = np.isfinite(v)
            if ok.sum() == 1:
                ax.axhline(v[ok][0], ls=":", lw=1, label=model, color="gray")
                continue
            line, = ax.plot(layers[ok], v[ok], marker="o", ms=3, label=model)
            lo = ds["score_lo"].sel(sel).mean("seed").values
            hi = ds["score_hi"].sel(sel).mean("seed").values
            band = ok & np.isfinite(lo) & np.isfinite(hi)
            ax.fill_between(layers[band], lo[band], hi[band], alpha=0.2, color=line.get_color())
        if "optimum" in ds and m in ds["optimum"]["metric"].values.tolist():
            opt = float(ds["optimum"].sel(task=task, metric=m))
            if np.isfinite(opt):
                ax.axhline(opt, color="k", ls="--", lw=1, label="optimum")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(f"{task}", fontsize=8)
        ax.set_xlabel("layer", fontsize=7)
        ax.set_ylabel(m, fontsize=7)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(tasks):]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=min(4, len(labels)), fontsize=7)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    p = out / "layer_curves.png"
    fig.savefig(p, dpi=110)
    plt.close(fig)
    paths.append(p)
    # 3. CKA matrices
    if "cka" in ds:
        cka_models = [m for m in ds["model"].values.tolist()
                      if np.isfinite(ds["cka"].sel(model=m).values).any()]
        if cka_models:
            fig, axes = plt.subplots(1, len(cka_models), figsize=(3.4 * len(cka_models), 3.2),
                                     squeeze=False)
            for ax, model in zip(axes.flat, cka_models):
                c = ds["cka"].sel(model=model).values
                ok = np.isfinite(c).any(1)
                im = ax.imshow(c[np.ix_(ok, ok)], vmin=0, vmax=1, cmap="magma", origin="lower")
                ticks = ds["layer"].values[ok]
                ax.set_xticks(range(len(ticks)), ticks, fontsize=7)
                ax.set_yticks(range(len(ticks)), ticks, fontsize=7)
                ax.set_title(f"CKA {model}", fontsize=8)
            fig.colorbar(im, ax=axes.ravel().tolist(), fraction=0.03)
            p = out / "cka.png"
            fig.savefig(p, dpi=110)
            plt.close(fig)
            paths.append(p)
    # 4. attention statistics and token diagnostics per layer
    fields = [f for f in ("attn_entropy", "attn_distance", "attn_prefix_mass",
                          "attn_received_max", "effective_rank", "norm_outlier_frac",
                          "mean_token_sim") if f in ds]
    if fields:
        fig, axes = plt.subplots(1, len(fields), figsize=(3.0 * len(fields), 2.8), squeeze=False)
        for ax, f in zip(axes.flat, fields):
            for model in ds["model"].values.tolist():
                v = ds[f].sel(model=model)
                if "head" in v.dims:
                    v = v.mean("head")
                v = v.values
                ok = np.isfinite(v)
                if ok.sum() >= 1:
                    ax.plot(layers[ok], v[ok], marker="o", ms=3, label=model)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_title(f, fontsize=8)
            ax.set_xlabel("layer", fontsize=7)
            ax.tick_params(labelsize=7)
        axes.flat[0].legend(fontsize=6)
        fig.tight_layout()
        p = out / "diagnostics.png"
        fig.savefig(p, dpi=110)
        plt.close(fig)
        paths.append(p)
    return paths


def render_report(results: str | Path | xr.Dataset, out_dir: str | Path) -> Path:
    """Write ``report.md`` and PNG figures into ``out_dir``; returns the markdown path."""
    ds = _load(results)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    df = best_vs_last(ds)
    text = _markdown_tables(df, ds)
    figures = _figures(ds, out)
    if figures:
        text += "\n## Figures\n\n" + "\n".join(f"![{p.stem}]({p.name})" for p in figures) + "\n"
    md = out / "report.md"
    tmp = md.with_suffix(".md.tmp")
    tmp.write_text(text)
    tmp.replace(md)
    df.to_csv(out / "best_vs_last.csv", index=False)
    return md


def report_command(args) -> int:
    """``tslayers report RESULTS [--out DIR]``."""
    path = Path(args.results)
    out = Path(args.out) if getattr(args, "out", None) else path.parent / "report"
    md = render_report(path, out)
    print(f"report written to {md}")
    return 0
