"""The depth report: does the selected - last gap grow with encoder depth L?

Reads merged depth-study results (:mod:`tslayers.depth`: models ``<objective>@L<depth>`` with
``depth`` and ``objective`` coordinates). Every number comes from
:mod:`tslayers.probing.analysis`: the layer is selected on validation series, the gap
(selected - last, > 0 = an inner layer is better) is scored on test series with a paired
bootstrap interval (and across pretraining seeds when there are several, see below).

Per task family the gap is the mean over the family's tasks (primary metric each; only tasks
that every objective has, so the lines compare like with like; R², accuracy and AUROC share
a 0-1 scale), averaged per seed before the interval is taken. Intervals (family and task) are
the envelope of the t-interval across pretraining seeds and the seeds' mean paired-bootstrap
interval; for a family the latter averages the tasks' bounds (wider than the interval of the
mean unless the tasks move together, so conservative). The control line is the untrained
twin at each depth: the twins of all objectives share architecture and initialisation seed,
so the first objective's twin stands for them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from tslayers.io import atomic_write
from tslayers.probing.analysis import _seed_interval, layer_table, primary_metric, significant

CONTROL = "untrained"


def _models(ds: xr.Dataset) -> dict[tuple[str, int], str]:
    """(objective or 'untrained', depth) -> model name in the results."""
    out: dict[tuple[str, int], str] = {}
    for name, obj, depth in zip(ds["model"].values.tolist(), ds["objective"].values.tolist(),
                                ds["depth"].values.tolist()):
        if "/" not in name:
            out[(obj, int(depth))] = name
        elif name.endswith("/" + CONTROL) and (CONTROL, int(depth)) not in out:
            out[(CONTROL, int(depth))] = name
    return out


def objectives(ds: xr.Dataset) -> list[str]:
    """Trained objectives in the order they appear, then the control."""
    names = [o for o, m in zip(ds["objective"].values.tolist(), ds["model"].values.tolist())
             if "/" not in m]
    return list(dict.fromkeys(names)) + [CONTROL]


def family_tasks(ds: xr.Dataset) -> dict[str, list[tuple[str, str]]]:
    """family -> [(task, primary metric)] for tasks every trained model has a score on."""
    trained = [m for m in ds["model"].values.tolist() if "/" not in m]
    out: dict[str, list[tuple[str, str]]] = {}
    for task, family in zip(ds["task"].values.tolist(), ds["family"].values.tolist()):
        metric = primary_metric(ds, task)
        if metric is None or "control-task" in task:
            continue
        gap = ds["gap"].sel(model=trained, task=task, metric=metric).values
        if np.isfinite(gap).any(axis=-1).all():
            out.setdefault(str(family), []).append((task, metric))
    return out


def _interval(values: np.ndarray, lo: np.ndarray, hi: np.ndarray, ci: float
              ) -> tuple[float, float, float]:
    """Mean over seeds with the envelope of two intervals: the t-interval across seeds and the
    seeds' mean bootstrap interval. With 2-3 seeds the spread across seeds alone can be ~0 by
    chance (discrete metrics), so a claim needs both sources of noise to exclude 0."""
    mean, t_lo, t_hi = _seed_interval(values, lo, hi, ci)
    with np.errstate(all="ignore"):
        b_lo, b_hi = (float(np.nanmean(b)) if np.isfinite(b).any() else np.nan for b in (lo, hi))
    return mean, float(np.nanmin([t_lo, b_lo])), float(np.nanmax([t_hi, b_hi]))


def family_depth_table(ds: xr.Dataset) -> pd.DataFrame:
    """One row per (family, objective, depth): mean gap over the family's tasks with its
    interval, and the selected layer's relative position (layer / L, mean over tasks, seeds)."""
    ci = float(ds.attrs.get("ci", 0.9))
    rows = []
    models = _models(ds)
    for family, tasks in family_tasks(ds).items():
        for (objective, depth), model in models.items():
            per_task = [ds[v].sel(model=model, task=t, metric=m).values
                        for t, m in tasks for v in ("gap", "gap_lo", "gap_hi", "selected_layer")]
            g, lo, hi, layer = (np.nanmean(np.stack(per_task[i::4]), 0) for i in range(4))
            gap, gap_lo, gap_hi = _interval(g, lo, hi, ci)
            rows.append(dict(family=family, objective=objective, depth=depth, gap=gap,
                             gap_lo=gap_lo, gap_hi=gap_hi,
                             rel_layer=float(np.nanmean(layer)) / depth,
                             n_tasks=len(tasks), n_seeds=int(np.isfinite(g).sum())))
    order = {o: i for i, o in enumerate(objectives(ds))}
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    return table.sort_values(["family", "objective", "depth"],
                             key=lambda c: c.map(order) if c.name == "objective" else c,
                             ignore_index=True)


def task_depth_table(ds: xr.Dataset) -> pd.DataFrame:
    """``layer_table`` rows of every trained model and the control twin, with ``objective``,
    ``depth`` and the relative position of the selected layer (mean over seeds of layer / L)."""
    models = _models(ds)
    table = layer_table(ds, list(models.values()))
    inverse = {m: key for key, m in models.items()}
    table["objective"] = [inverse[m][0] for m in table["model"]]
    table["depth"] = [inverse[m][1] for m in table["model"]]
    rel = [float(np.nanmean(ds["selected_layer"].sel(model=r.model, task=r.task,
                                                     metric=r.metric).values)) / r.depth
           for r in table.itertuples()]
    table["rel_layer"] = rel
    ci = float(ds.attrs.get("ci", 0.9))
    for i, r in enumerate(table.itertuples()):
        sel = dict(model=r.model, task=r.task, metric=r.metric)
        _, table.loc[i, "gap_lo"], table.loc[i, "gap_hi"] = _interval(
            *(ds[v].sel(sel).values for v in ("gap", "gap_lo", "gap_hi")), ci)
    return table[~table["task"].str.contains("control-task")].reset_index(drop=True)


def depth_answer(table: pd.DataFrame) -> str:
    """One sentence from the family table. A gap *grows with depth* for (family, objective)
    when, at the deepest L, its interval lies above 0, above the shallowest L's gap and above
    the untrained twin's gap at that depth (so depth alone, untrained, does not explain it)."""
    trained = table[table["objective"] != CONTROL]
    sig = [r for r in trained.itertuples() if significant(r.gap_lo, r.gap_hi)]
    if not sig:
        return "No depth shows a gap whose interval excludes 0."
    growing = []
    for (family, objective), sub in trained.groupby(["family", "objective"], sort=False):
        sub = sub.sort_values("depth")
        first, last = sub.iloc[0], sub.iloc[-1]
        twin = table[(table["objective"] == CONTROL) & (table["family"] == family)
                     & (table["depth"] == last["depth"])]["gap"]
        floor = max(0.0, float(first["gap"]), float(twin.iloc[0]) if len(twin) else -np.inf)
        if len(sub) > 1 and np.isfinite(last["gap_lo"]) and last["gap_lo"] > floor:
            growing.append(f"{objective} on {family}: {first['gap']:.3f} at L={first['depth']} "
                           f"to {last['gap']:.3f} at L={last['depth']} "
                           f"[{last['gap_lo']:.3f}, {last['gap_hi']:.3f}]")
    if growing:
        return "The gap grows with depth for " + "; ".join(growing) + "."
    where = ", ".join(f"{r.objective} on {r.family} at L={r.depth} ({r.gap:+.3f} "
                      f"[{r.gap_lo:+.3f}, {r.gap_hi:+.3f}])" for r in sig[:3])
    more = f" and {len(sig) - 3} more" if len(sig) > 3 else ""
    return (f"Some gaps exclude 0 ({where}{more}), but none grows with depth: no deepest "
            "model's interval lies above both the shallowest model's gap and its untrained "
            "twin's.")


def draw_depth(table: pd.DataFrame):
    """One row per family: gap vs depth with interval bands (one line per objective, the
    untrained twin dashed grey) and the selected layer's relative position vs depth. Returns
    the matplotlib Figure (callers save and close it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    families = list(dict.fromkeys(table["family"]))
    fig, axes = plt.subplots(len(families), 2, figsize=(9, 2.8 * len(families)), squeeze=False)
    depths = sorted(table["depth"].unique())
    for (ax_gap, ax_rel), family in zip(axes, families):
        for objective, sub in table[table["family"] == family].groupby("objective", sort=False):
            sub = sub.sort_values("depth")
            style = dict(color="0.5", ls="--") if objective == CONTROL else {}
            line, = ax_gap.plot(sub["depth"], sub["gap"], marker="o", ms=3, label=objective,
                                **style)
            band = np.isfinite(sub["gap_lo"]) & np.isfinite(sub["gap_hi"])
            ax_gap.fill_between(sub["depth"][band], sub["gap_lo"][band], sub["gap_hi"][band],
                                alpha=0.15, color=line.get_color())
            ax_rel.plot(sub["depth"], sub["rel_layer"], marker="o", ms=3, label=objective,
                        **style)
        ax_gap.axhline(0, color="k", lw=0.6)
        ax_gap.set(title=f"{family}: selected - last gap (test)", xlabel="depth L (blocks)",
                   ylabel="gap (> 0: inner layer better)", xticks=depths)
        ax_rel.set(title=f"{family}: where the selected layer sits",
                   xlabel="depth L (blocks)", ylabel="selected layer / L", ylim=(-0.05, 1.05),
                   xticks=depths)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=8)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    return fig


def depth_figure(table: pd.DataFrame, path: str | Path) -> Path:
    """:func:`draw_depth` saved as a PNG."""
    import matplotlib.pyplot as plt

    fig = draw_depth(table)
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _cell(v: float, lo: float, hi: float) -> str:
    if not np.isfinite(v):
        return "–"
    text = f"{v:+.3f} [{lo:+.3f}, {hi:+.3f}]" if np.isfinite(lo) else f"{v:+.3f}"
    return f"**{text}**" if significant(lo, hi) else text


def depth_markdown(ds: xr.Dataset, families: pd.DataFrame, tasks: pd.DataFrame,
                   answer: str, figure: str | None = None) -> str:
    """Answer first, then per family a (objective x depth) table of gap and relative
    position, then every task."""
    ci = float(ds.attrs.get("ci", 0.9))
    depths = sorted(families["depth"].unique())
    head = "| objective | " + " | ".join(f"L={d}" for d in depths) + " |"
    rule = "|---|" + "---|" * len(depths)
    lines = ["## Depth: does the selected - last gap grow with L?", "", f"**{answer}**", "",
             f"Seeds: {ds.sizes['seed']}. Cells: gap = test score at the layer selected on "
             f"validation series minus the last layer's (> 0: an inner layer is better), mean "
             f"over the family's tasks [{ci:.0%} interval: the envelope of the paired bootstrap "
             "interval (selection repeated per replicate) and, with several seeds, the "
             "t-interval across seeds], **bold** when the interval excludes 0; "
             "then the selected layer's position layer / L (mean over tasks and seeds). "
             "*untrained*: the untrained twin at the same depth (control).", ""]
    if figure:
        lines += [f"![depth]({figure})", ""]
    for family, sub in families.groupby("family", sort=False):
        n = int(sub["n_tasks"].iloc[0])
        lines += [f"### {family} ({n} task{'s' if n != 1 else ''})", "", head, rule]
        for objective, row in sub.groupby("objective", sort=False):
            by_depth = {int(r.depth): r for r in row.itertuples()}
            cells = [f"{_cell(r.gap, r.gap_lo, r.gap_hi)}; {r.rel_layer:.2f}"
                     if (r := by_depth.get(int(d))) is not None else "–" for d in depths]
            lines.append(f"| {objective} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["### Every task", "", "| task | metric | objective | L | selected layer (most "
              "frequent) | mean selected layer / L | gap |", "|---|---|---|---|---|---|---|"]
    for r in tasks.sort_values(["family", "task", "objective", "depth"]).itertuples():
        lines.append(f"| {r.task} | {r.metric} | {r.objective} | {r.depth} | "
                     f"{r.selected_layer} | {r.rel_layer:.2f} | "
                     f"{_cell(r.gap, r.gap_lo, r.gap_hi)} |")
    return "\n".join(lines) + "\n"


def render_depth_report(results: xr.Dataset, out_dir: str | Path) -> Path:
    """Write ``depth.md``, ``depth.png``, ``depth_families.csv`` and ``depth_tasks.csv``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    families = family_depth_table(results)
    tasks = task_depth_table(results)
    if families.empty:
        raise ValueError("no task has a score for every objective: nothing to compare by depth")
    figure = depth_figure(families, out / "depth.png")
    answer = depth_answer(families)
    text = depth_markdown(results, families, tasks, answer, figure.name)
    atomic_write(out / "depth_families.csv", families.to_csv(index=False))
    atomic_write(out / "depth_tasks.csv", tasks.to_csv(index=False))
    return atomic_write(out / "depth.md", text)
