"""The report's text: a one-screen summary (per task and model: the layer selected on
validation, its test score, the last layer, the gap, the best control, floor and ceiling),
then figures, label-free diagnostics and one detail table per task family. Every number comes
from :mod:`tslayers.probing.analysis`; a difference is bold only when its interval excludes 0.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import xarray as xr

from tslayers.probing.analysis import annotate, base_models, layer_table, significant

from .style import layer_names

SAME = "0 (same layer)"
#: a short caption per figure stem (heatmaps share one)
CAPTIONS = {
    "heatmap": "Test score per layer and task; the box marks the layer selected on "
               "validation; one colour scale per metric, so a uniform row means the layers "
               "do not differ.",
    "layer_curves": "Test score against layer (band, or bars when models share a panel: "
                    "bootstrap interval over test series; ring: layer selected on validation; "
                    "grey: controls).",
    "cka": "Linear CKA between layers (1 = the same representation up to rotation and "
           "scale).",
    "diagnostics": "Label-free diagnostics per layer (mean over heads for attention).",
    "cka_compare": "Linear CKA between each layer of one model and each layer of a compared "
                   "model (and of its untrained twin), on the same windows.",
}


def num(v: float, places: int | None = None) -> str:
    """A score: ``places`` decimals (see :func:`decimals`), or 3 significant digits."""
    if v is None or not np.isfinite(v):
        return "–"
    return f"{v:.3g}" if places is None or abs(v) >= 1e4 else f"{v:.{places}f}"


def with_ci(v: float, lo: float, hi: float, places: int | None = None) -> str:
    if not np.isfinite(v):
        return "–"
    if np.isfinite(lo) and np.isfinite(hi):
        return f"{num(v, places)} [{num(lo, places)}, {num(hi, places)}]"
    return num(v, places)


def metric_scales(table: pd.DataFrame) -> dict[str, float]:
    """Typical size (median |score|) of each metric, so a metric prints with the same
    decimals in every row."""
    return {m: float(np.nanmedian(np.abs(sub["score"].to_numpy(float))))
            for m, sub in table.groupby("metric")}


def decimals(scale: float) -> int:
    """Decimals that show a quantity of size ``scale`` to 3 significant digits (at least 3),
    so that differences print on the scale of the scores they compare, not in e-notation."""
    if not np.isfinite(scale) or abs(scale) >= 0.1:
        return 3
    return min(8, 2 - int(np.floor(np.log10(max(abs(scale), 1e-8)))))


def _signed(x: float, places: int) -> str:
    """``+0.012``; "0" for what rounds to zero at ``places`` (no "-0.000")."""
    if abs(x) >= 1e4:
        return f"{x:+.3g}"
    return "0" if round(abs(x), places) == 0 else f"{x:+.{places}f}"


def diff(v: float, lo: float, hi: float, same: str = "0", scale: float = 1.0) -> str:
    """A difference with its interval, bold only when the interval excludes 0; ``same`` when
    it is exactly 0 in every replicate (the two sides are the same thing). ``scale``: the size
    of the scores compared, which sets the decimals."""
    if not np.isfinite(v):
        return "–"
    if v == 0 and lo == 0 and hi == 0:
        return same
    p = decimals(scale)
    while significant(lo, hi) and p < 8 and min(abs(lo), abs(hi)) < 0.5 * 10.0 ** -p:
        p += 1  # a real difference never prints as [0, 0]
    text = f"{_signed(v, p)} [{_signed(lo, p)}, {_signed(hi, p)}]" \
        if np.isfinite(lo) and np.isfinite(hi) else _signed(v, p)
    return f"**{text}**" if significant(lo, hi) else text


def share(num_: float, den: float, den_lo: float, den_hi: float) -> str:
    """``num_ / den`` as a percentage, or "within noise" when ``den``'s interval holds 0 (a
    share of a quantity indistinguishable from zero means nothing)."""
    if not (np.isfinite(num_) and np.isfinite(den)) or not significant(den_lo, den_hi):
        return "within noise"
    return f"{num_ / den:.0%}"


def layer_label(ds: xr.Dataset, model: str, layer: int) -> str:
    """``L3``, or ``L3 `rnn``` for an external model's tap."""
    names = layer_names(ds, model)
    if names and 0 <= layer < len(names) and names[layer]:
        return f"L{layer} `{names[layer]}`"
    return f"L{layer}"


def _arrow(r) -> str:
    return "↑" if r.higher_is_better else "↓"


def _size(v: float, lo: float, hi: float, scale: float) -> str:
    """The magnitude of a difference of either sign, with its interval: ``0.057 [0.007, 0.190]``."""
    if v < 0:
        v, lo, hi = -v, -hi, -lo
    p = decimals(scale)
    return f"{v:.{p}f} [{lo:.{p}f}, {hi:.{p}f}]"


def _familywise(table: pd.DataFrame, ds: xr.Dataset) -> tuple[int, set[tuple[str, str, str]]]:
    """How many comparisons the table makes, and which claims keep their interval clear of 0
    after a Bonferroni correction over all of them ({(model, task, "gap" | "control")})."""
    n = int(np.isfinite(table["gap_lo"]).sum() + np.isfinite(table["vs_control_lo"]).sum())
    if n <= 1 or "score_boot" not in ds:
        return n, set()
    level = 1 - (1 - float(ds.attrs.get("ci", 0.9))) / n
    wide = layer_table(annotate(ds, level), sorted(set(table["model"])))
    keep = set()
    for r in wide.itertuples():
        if significant(r.gap_lo, r.gap_hi) and r.gap > 0:
            keep.add((r.model, r.task, "gap"))
        if significant(r.vs_control_lo, r.vs_control_hi):
            keep.add((r.model, r.task, "control"))
    return n, keep


def findings(table: pd.DataFrame, ds: xr.Dataset, most: int = 8) -> list[str]:
    """The claims the intervals support, one line each: an intermediate layer beating the
    last one, and a model beating (or trailing) its best control; a dagger marks the claims
    that also hold after a Bonferroni correction over every comparison in the table (at 90%
    per comparison, about one in ten intervals excludes 0 by chance when nothing differs)."""
    scales = metric_scales(table)
    n, keep = _familywise(table, ds)
    out = []
    for r in table.itertuples():
        scale = scales[r.metric]
        if significant(r.gap_lo, r.gap_hi) and r.gap > 0:
            mark = " †" if (r.model, r.task, "gap") in keep else ""
            out.append(f"{r.model}, {r.task}: {layer_label(ds, r.model, r.selected_layer)} "
                       f"beats the last layer by {_size(r.gap, r.gap_lo, r.gap_hi, scale)}{mark}")
        if significant(r.vs_control_lo, r.vs_control_hi) and r.best_control:
            word = "beats" if r.vs_control > 0 else "trails"
            ctl = r.best_control.split("/", 1)[-1]
            mark = " †" if (r.model, r.task, "control") in keep else ""
            out.append(f"{r.model}, {r.task}: {word} its best control ({ctl}) by "
                       f"{_size(r.vs_control, r.vs_control_lo, r.vs_control_hi, scale)}{mark}")
    if not out:
        return ["No layer beats the last one and no model differs from its best control "
                "beyond noise."]
    out.sort(key=lambda line: not line.endswith(" †"))  # the claims that survive first
    claims = list(out)
    if len(out) > most:
        out = out[:most] + [f"and {len(out) - most} more in the table below"]
    ci = float(ds.attrs.get("ci", 0.9))
    out.append(f"The table makes {n} comparisons; with no real difference about "
               f"{n * (1 - ci):.1f} of them would exclude 0 by chance at {ci:.0%} each. "
               f"† marks a claim that still holds after a Bonferroni correction over all {n} "
               f"(family-wise {ci:.0%}): {len(keep)} of {len(claims)}.")
    return out


def summary_markdown(table: pd.DataFrame, ds: xr.Dataset) -> str:
    """The study at a glance, base models only; how to read it follows the table."""
    ci = float(ds.attrs.get("ci", 0.9))
    lines = ["## Summary", "", *(f"- {x}" for x in findings(table, ds)), "",
             f"| task | metric | model | selected layer: score [{ci:.0%}] | last layer | gap "
             "| vs best control | floor | ceiling |", "|---|---|---|---|---|---|---|---|---|"]
    scales = metric_scales(table)
    for r in table.itertuples():
        scale = scales[r.metric]
        ctl = r.best_control.split("/", 1)[-1] if r.best_control else ""
        vs = f"{diff(r.vs_control, r.vs_control_lo, r.vs_control_hi, '0', scale)} ({ctl})" \
            if ctl else "–"
        p = decimals(scale)
        lines.append(
            f"| {r.task} | {r.metric} {_arrow(r)} | {r.model} | "
            f"{layer_label(ds, r.model, r.selected_layer)}: "
            f"{with_ci(r.score, r.score_lo, r.score_hi, p)} | "
            f"{layer_label(ds, r.model, r.last_layer)}: {num(r.last, p)} | "
            f"{diff(r.gap, r.gap_lo, r.gap_hi, SAME, scale)} | {vs} | {num(r.floor, p)} | "
            f"{num(r.ceiling, p)} |")
    lines += ["", "*Selected*: the layer chosen on the validation series, scored on the test "
              "series. *Gap*: selected minus last layer; *vs best control*: selected minus the "
              "best control chosen on validation (untrained twin, raw window, periodogram, "
              "MiniRocket). Both are oriented so > 0 is better, with paired bootstrap "
              "intervals over test series (the selection repeated in each replicate), "
              "**bold** only when the interval excludes 0. *Floor*: the best control's score; "
              "*ceiling*: the Bayes-optimal (Kalman) score on the same rows."]
    notes = ceiling_notes(table)
    if notes:
        lines += [""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n\n"


def ceiling_notes(table: pd.DataFrame) -> list[str]:
    """Say why a ceiling looks wrong where it does: an optimum with no skill (r2 <= 0: the task
    has no predictable signal at that horizon) or a probe above the optimum (by how much, and
    whether that is within noise)."""
    notes, no_skill, floors = [], set(), set()
    for r in table.itertuples():
        if not np.isfinite(r.ceiling):
            continue
        if r.metric == "r2" and r.ceiling <= 0:
            if r.task not in no_skill:
                no_skill.add(r.task)
                notes.append(f"{r.task}: the optimum's r2 is {num(r.ceiling)}: even the "
                             "Bayes-optimal prediction is no better than the test mean here, "
                             "so this task carries no predictable signal and its scores are "
                             "not evidence either way.")
            continue
        sign = 1 if r.higher_is_better else -1
        if np.isfinite(r.floor) and sign * (r.floor - r.ceiling) > 0 and r.task not in floors:
            floors.add(r.task)
            notes.append(f"{r.task}: the best control ({num(r.floor)}) scores above the "
                         f"optimum ({num(r.ceiling)}): the optimum is no upper bound for this task "
                         "as run; check how the task and its optimum are computed.")
        above = sign * (r.score - r.ceiling)
        if above > 0:
            verdict = "within noise" if r.score_lo <= r.ceiling <= r.score_hi else \
                "outside its interval: the optimum is no bound on these rows; check the task"
            notes.append(f"{r.task} ({r.model}): the probe scores {num(above)} above the "
                         f"optimum, {verdict}.")
    return notes


def diagnostics_markdown(ds: xr.Dataset) -> str:
    """Where high-norm global tokens appear, how similar neighbouring layers are, and how the
    effective rank evolves, per base model."""
    if "norm_outlier_frac" not in ds or "cka" not in ds:
        return ""
    rows = []
    for model in base_models(ds):
        frac = ds["norm_outlier_frac"].sel(model=model).dropna("layer")
        cka = ds["cka"].sel(model=model).values
        if frac.size == 0 or not np.isfinite(cka).any():
            continue
        k = int(frac["layer"][int(np.argmax(frac.values))])
        adj = [(cka[i, i + 1], i) for i in range(len(cka) - 1) if np.isfinite(cka[i, i + 1])]
        low = min(adj) if adj else None
        between = f"{low[0]:.2f} ({layer_label(ds, model, low[1])} → " \
                  f"{layer_label(ds, model, low[1] + 1)})" if low else "–"
        rank = ds["effective_rank"].sel(model=model).dropna("layer")
        ranks = f"{float(rank[0]):.1f} → {float(rank[-1]):.1f}" if rank.size else "–"
        most = f"{layer_label(ds, model, k)} ({float(frac.max()):.3f})" if float(frac.max()) > 0 \
            else "none"
        rows.append(f"| {model} | {most} | {between} | {ranks} |")
    if not rows:
        return ""
    return "\n".join(["## Label-free diagnostics", "",
                      "| model | layer with most high-norm tokens (share) | lowest CKA between "
                      "neighbouring layers | effective rank, first → last |",
                      "|---|---|---|---|", *rows]) + "\n\n"


def compare_markdown(ds: xr.Dataset) -> str:
    """For each layer of a model, the most similar layer of each compared model (linear CKA on
    the same windows), beside the best match in that model's untrained twin: similarity that a
    random network of the same architecture already reaches is not learned."""
    from .figures import compare_matrix, compared_pairs

    pairs = compared_pairs(ds)
    out = []
    for model, other in pairs:
        if "/" in other:
            continue
        mat = compare_matrix(ds, model, other)
        twin = compare_matrix(ds, model, f"{other}/untrained") \
            if (model, f"{other}/untrained") in pairs else None
        head = f"| {model} layer | most similar {other} layer | CKA |"
        rule = "|---|---|---|"
        if twin is not None:
            head += f" best CKA with {other}/untrained |"
            rule += "---|"
        rows = []
        for i, row in enumerate(mat):
            j = int(np.nanargmax(row))
            line = f"| {layer_label(ds, model, i)} | {layer_label(ds, other, j)} | {row[j]:.3f} |"
            if twin is not None:
                line += f" {np.nanmax(twin[i]):.3f} |"
            rows.append(line)
        note = f" The last column is the closest layer of an untrained {other}: similarity " \
            "that high is there before training." if twin is not None else ""
        out += [f"## Model comparison: {model} vs {other}", "",
                "Linear CKA (minibatch, unbiased HSIC) between pooled features of the same "
                f"windows; 1 = the same representation up to rotation and scale.{note}", "",
                head, rule, *rows, ""]
    return "\n".join(out) + "\n" if out else ""


def details_markdown(table: pd.DataFrame, ds: xr.Dataset,
                     scales: dict[str, float] | None = None) -> str:
    """Every model, controls included, one table per family; the test-oracle layer is an
    upper bound only, never a result."""
    lines, scales = [], scales or metric_scales(table)
    for family, sub in table.groupby("family", sort=False):
        lines += [f"## Details: {family}", "",
                  "| model | task | metric | selected layer (oracle) | score | last | gap | p |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in sub.itertuples():
            p = decimals(scales.get(r.metric, np.nan))
            lines.append(f"| {r.model} | {r.task} | {r.metric} {_arrow(r)} | "
                         f"{layer_label(ds, r.model, r.selected_layer)} (L{r.oracle_layer}) | "
                         f"{with_ci(r.score, r.score_lo, r.score_hi, p)} | {num(r.last, p)} | "
                         f"{diff(r.gap, r.gap_lo, r.gap_hi, SAME, scales.get(r.metric, np.nan))} | "
                         f"{num(r.pvalue)} |")
        lines.append("")
    if lines:
        lines += ["*p*: permutation p-value of the selected layer's test score. The oracle "
                  "layer (best on test) is an upper bound, never a result.", ""]
    return "\n".join(lines) + "\n"


def figures_markdown(stems: list[str]) -> str:
    """Each figure with a one-line caption (heatmaps captioned once)."""
    lines, said = ["## Figures", ""], set()
    for stem in stems:
        kind = stem.split("_", 1)[0] if stem.startswith("heatmap_") else stem
        lines.append(f"![{stem}]({stem}.png)")
        if kind in CAPTIONS and kind not in said:
            lines += ["", f"*{CAPTIONS[kind]}*"]
            said.add(kind)
        lines.append("")
    return "\n".join(lines) + "\n" if stems else ""


def _by_task(table: pd.DataFrame, ds: xr.Dataset) -> pd.DataFrame:
    """Rows grouped by task (in the results' task order), models in their order within."""
    order = {t: i for i, t in enumerate(ds["task"].values.tolist())}
    models = {m: i for i, m in enumerate(ds["model"].values.tolist())}
    key = table["task"].map(order) * len(models) + table["model"].map(models)
    return table.iloc[np.argsort(key.to_numpy(), kind="stable")]


def report_markdown(ds: xr.Dataset, figures: list[str] | None = None,
                    alignment: str = "") -> tuple[str, pd.DataFrame]:
    """(markdown, layer table): summary, figures (file stems), diagnostics, details, then the
    alignment section when given."""
    table = layer_table(ds)
    if table.empty:
        raise ValueError("the results hold no finite scores to report")
    bases = base_models(ds)
    summary = _by_task(table[table["model"].isin(bases)], ds)
    n_controls = ds.sizes["model"] - len(bases)
    ci = float(ds.attrs.get("ci", 0.9))
    text = ["# Layerwise probing report", "",
            f"Models: {', '.join(bases)} (and {n_controls} controls). Seeds: "
            f"{ds.sizes['seed']}. Layers are chosen on the validation series and scored on the "
            f"test series; [intervals] are {ci:.0%} paired bootstrap intervals over test series "
            "(across seeds when there are several).", "",
            summary_markdown(summary, ds), figures_markdown(figures or []),
            diagnostics_markdown(ds), compare_markdown(ds),
            details_markdown(table, ds, metric_scales(summary))]
    if alignment:
        text.append(alignment)
    return re.sub(r"\n{3,}", "\n\n", "\n".join(text)).rstrip("\n") + "\n", table
