"""Render a results Dataset as markdown (summary first, then one table per task family) and
figures. Every number comes from :mod:`tslayers.probing.analysis`: layers are selected on the
validation series and scored on the test series; gaps and margins over controls carry paired
bootstrap intervals and are bold only when the interval excludes 0.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from tslayers.io import atomic_write
from tslayers.probing.analysis import (
    base_models,
    layer_table,
    primary_metric,
    significant,
)
from tslayers.probing.results import read_results, validate_results


def _load(results: str | Path | xr.Dataset) -> xr.Dataset:
    if isinstance(results, xr.Dataset):
        return validate_results(results)
    return read_results(results)


def _num(v: float) -> str:
    return "–" if not np.isfinite(v) else f"{v:.3g}"


def _with_ci(v: float, lo: float, hi: float) -> str:
    if not np.isfinite(v):
        return "–"
    if np.isfinite(lo) and np.isfinite(hi):
        return f"{v:.3g} [{lo:.3g}, {hi:.3g}]"
    return f"{v:.3g}"


def _diff(v: float, lo: float, hi: float) -> str:
    """A difference with its interval, bold only when the interval excludes 0."""
    if not np.isfinite(v):
        return "–"
    text = f"{v:+.3g} [{lo:+.3g}, {hi:+.3g}]" if np.isfinite(lo) else f"{v:+.3g}"
    return f"**{text}**" if significant(lo, hi) else text


def summary_markdown(table: pd.DataFrame, ds: xr.Dataset) -> str:
    """The study at a glance: per task and model, the layer selected on val, its test score,
    the last layer, the gap, and the margin over the best control, with intervals."""
    ci = float(ds.attrs.get("ci", 0.9))
    lines = ["## Summary: selected layer vs last layer vs controls", "",
             f"Primary metric per task. *Selected*: the layer chosen on the validation series, "
             f"scored on the test series [{ci:.0%} interval]. *Gap*: selected minus last layer; "
             "*vs control*: selected minus the best control (chosen on val among untrained "
             "twin, raw window, periodogram, MiniRocket); both oriented so > 0 is better, "
             "paired bootstrap over test series with the selection repeated in each replicate, "
             "**bold** only when the interval excludes 0. *Floor*: the best control's score; "
             "*ceiling*: the Bayes-optimal score on the same rows (LGSSM). *p*: permutation "
             "p-value of the selected layer.", "",
             "| task | metric | model | selected | last | gap | vs control (which) | floor "
             "| ceiling | p |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in table.itertuples():
        ctl = r.best_control.split("/", 1)[-1] if r.best_control else "–"
        arrow = "↑" if r.higher_is_better else "↓"
        selected = _with_ci(r.score, r.score_lo, r.score_hi)
        vs = _diff(r.vs_control, r.vs_control_lo, r.vs_control_hi)
        lines.append(
            f"| {r.task} | {r.metric} {arrow} | {r.model} | L{r.selected_layer}: {selected} | "
            f"L{r.last_layer}: {_num(r.last)} | {_diff(r.gap, r.gap_lo, r.gap_hi)} | {vs} "
            f"({ctl}) | {_num(r.floor)} | {_num(r.ceiling)} | {_num(r.pvalue)} |")
    return "\n".join(lines) + "\n\n"


def diagnostics_markdown(ds: xr.Dataset) -> str:
    """Where high-norm global tokens appear, how similar neighbouring layers are, and how the
    effective rank evolves, per base model."""
    if "norm_outlier_frac" not in ds or "cka" not in ds:
        return ""
    lines = ["## Label-free diagnostics", "",
             "| model | layer with most high-norm tokens (share) | lowest CKA between "
             "neighbouring layers | effective rank, first → last |", "|---|---|---|---|"]
    for model in base_models(ds):
        frac = ds["norm_outlier_frac"].sel(model=model).dropna("layer")
        cka = ds["cka"].sel(model=model).values
        if frac.size == 0 or not np.isfinite(cka).any():
            continue
        k = int(np.nanargmax(frac.values))
        adj = [cka[i, i + 1] for i in range(len(cka) - 1) if np.isfinite(cka[i, i + 1])]
        rank = ds["effective_rank"].sel(model=model).dropna("layer")
        ranks = f"{float(rank[0]):.1f} → {float(rank[-1]):.1f}" if rank.size else "–"
        between = f"{min(adj):.2f} (L{int(np.argmin(adj))}–L{int(np.argmin(adj)) + 1})" \
            if adj else "–"
        lines.append(f"| {model} | L{int(frac['layer'][k])} ({float(frac[k]):.3f}) | {between} "
                     f"| {ranks} |")
    return "\n".join(lines) + "\n\n"


def details_markdown(table: pd.DataFrame) -> str:
    """Every model, controls included, one table per family; the test-oracle layer is shown as
    an upper bound only."""
    lines = []
    for family, sub in table.groupby("family", sort=False):
        lines += [f"## {family}", "",
                  "| model | task | metric | selected layer (oracle) | selected | last | gap |",
                  "|---|---|---|---|---|---|---|"]
        for r in sub.itertuples():
            lines.append(f"| {r.model} | {r.task} | {r.metric} | L{r.selected_layer} "
                         f"(L{r.oracle_layer}) | {_with_ci(r.score, r.score_lo, r.score_hi)} | "
                         f"{_num(r.last)} | {_diff(r.gap, r.gap_lo, r.gap_hi)} |")
        lines.append("")
    return "\n".join(lines) + "\n"


def report_markdown(ds: xr.Dataset) -> tuple[str, pd.DataFrame]:
    table = layer_table(ds)
    models = ", ".join(str(m) for m in ds["model"].values)
    text = ["# Layerwise probing report", "",
            f"Models: {models}. Seeds: {ds.sizes['seed']} (with several, intervals are across "
            "seeds). The oracle layer (best on test) is an upper bound, never a result.", "",
            summary_markdown(table[table["model"].isin(base_models(ds))], ds),
            diagnostics_markdown(ds), details_markdown(table)]
    return "\n".join(text), table


def normalised_scores(ds: xr.Dataset, model: str) -> tuple[np.ndarray, list[str]]:
    """(layer, task) matrix of the primary test metric rescaled to [0, 1] per task."""
    tasks, cols = [], []
    mean = ds["score"].sel(split="test").mean("seed").sel(model=model)
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
            v = ds["score"].sel(sel).sel(split="test").mean("seed").values
            if not np.isfinite(v).any():
                continue
            ok = np.isfinite(v)
            if ok.sum() == 1:
                ax.axhline(v[ok][0], ls=":", lw=1, label=model, color="gray")
                continue
            line, = ax.plot(layers[ok], v[ok], marker="o", ms=3, label=model)
            lo = ds["score_lo"].sel(sel).sel(split="test").mean("seed").values
            hi = ds["score_hi"].sel(sel).sel(split="test").mean("seed").values
            band = ok & np.isfinite(lo) & np.isfinite(hi)
            ax.fill_between(layers[band], lo[band], hi[band], alpha=0.2, color=line.get_color())
        if "optimum" in ds and m in ds["optimum"]["metric"].values.tolist():
            opt = float(ds["optimum"].sel(task=task, metric=m, split="test").mean())
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
    """Write ``report.md``, ``layers.csv`` and PNG figures into ``out_dir``; with an
    ``alignment.json`` there (written by the study), the alignment section too."""
    import json

    from .alignment import alignment_markdown

    ds = _load(results)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    text, table = report_markdown(ds)
    figures = _figures(ds, out)
    if figures:
        text += "\n## Figures\n\n" + "\n".join(f"![{p.stem}]({p.name})" for p in figures) + "\n"
    if (out / "alignment.json").is_file():
        text += "\n" + alignment_markdown(json.loads((out / "alignment.json").read_text()))
    md = atomic_write(out / "report.md", text)
    atomic_write(out / "layers.csv", table.to_csv(index=False))
    return md


def report_command(args) -> int:
    """``tslayers report RESULTS [--out DIR]``: the report beside the results file (or in DIR),
    with the alignment section when the results' folder holds ``alignment.json``."""
    import shutil

    path = Path(args.results)
    out = Path(args.out) if getattr(args, "out", None) else path.parent
    out.mkdir(parents=True, exist_ok=True)
    summaries = path.parent / "alignment.json"
    if summaries.is_file() and not (out / "alignment.json").exists():
        shutil.copy(summaries, out / "alignment.json")
    md = render_report(path, out)
    print(f"report written to {md}")
    return 0
