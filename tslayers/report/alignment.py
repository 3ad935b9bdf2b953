"""Markdown for alignment runs: what each alignment changed at the output, with intervals, and
shares only of quantities that are not within noise."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import xarray as xr

from tslayers.probing.analysis import layer_table, significant

from .markdown import decimals, diff, num


def _closed(row: dict) -> str:
    """The share of the original gap closed, only where both the gap and the change are real
    (their intervals exclude 0); a share of a quantity within noise means nothing."""
    values = [row.get(k, float("nan")) for k in ("gap_closed", "gap_closed_lo",
                                                 "gap_closed_hi", "change_lo", "change_hi")]
    if not all(math.isfinite(v) for v in values) or not (values[3] > 0 or values[4] < 0):
        return "within noise"
    return f"{values[0]:.0%} [{values[1]:.0%}, {values[2]:.0%}]"


def _kept(row: dict, interval: tuple[float, float] | None) -> str:
    """Selected-layer score after / before, unless the score before is within noise of 0
    (judged by its interval when the results are at hand)."""
    kept = row.get("best_kept", float("nan"))
    if not math.isfinite(kept):
        return "–"
    if interval is not None and not significant(*interval):
        return "within noise"
    return f"{kept:.0%}"


def _before_model(run: str, summary: dict, models: list[str]) -> str | None:
    """The original model of an alignment run: ``<name>`` of the ``<name>+align-<kind>``
    model whose name appears in the run's folder name."""
    suffix = f"+align-{summary.get('kind', '')}"
    names = [m[: -len(suffix)] for m in models if m.endswith(suffix)]
    found = [n for n in names if n in run.split("-")]
    return found[0] if len(found) == 1 else None


def _score_intervals(results: xr.Dataset | None, run: str, summary: dict) -> dict:
    """(task, metric) -> interval of the original's selected-layer score."""
    if results is None:
        return {}
    before = _before_model(run, summary, results["model"].values.tolist())
    if before is None:
        return {}
    table = layer_table(results, [before])
    return {(r.task, r.metric): (r.score_lo, r.score_hi) for r in table.itertuples()}


def _heading(run: str, summary: dict) -> str:
    if "teacher_layer" in summary:
        where = f"teacher layer {summary['teacher_layer']}"
    else:
        where = f"truncated at layer {summary.get('layer')}"
    return f"### {run} (target: {summary.get('target')}, {where})"


def alignment_markdown(summaries: dict[str, dict[str, Any]],
                       results: xr.Dataset | None = None) -> str:
    """One table per alignment run (primary metric of each task): the last layer's test score
    before and after, the change with its paired interval (bold when it excludes 0), the share
    of the original gap closed (only where that gap and the change were real) and, secondary,
    the share of the best validation-selected score kept (only where that score is not within
    noise of 0, which needs ``results``)."""
    lines = ["## Alignment", ""]
    for run, summary in summaries.items():
        intervals = _score_intervals(results, run, summary)
        lines += [_heading(run, summary), "",
                  "| task | metric | last before | last after | change at the output | "
                  "gap before | gap closed | best kept |", "|---|---|---|---|---|---|---|---|"]
        scales: dict[str, list[float]] = {}
        for key, row in summary["scores"].items():
            scales.setdefault(key.rsplit("/", 1)[1], []).append(abs(row["last_before"]))
        for key, row in summary["scores"].items():
            task, metric = key.rsplit("/", 1)
            mark = " **(target)**" if row["target"] else ""
            scale = float(np.nanmedian(scales[metric]))
            p = decimals(scale)
            lines.append(
                f"| {task}{mark} | {metric} | {num(row['last_before'], p)} | "
                f"{num(row['last_after'], p)} | "
                f"{diff(row['change'], row['change_lo'], row['change_hi'], scale=scale)} | "
                f"{diff(row['gap_before'], row['gap_lo'], row['gap_hi'], scale=scale)} | "
                f"{_closed(row)} | {_kept(row, intervals.get((task, metric)))} |")
        lines.append("")
    lines.append("Change at the output: last-layer test score after minus before (oriented so "
                 "> 0 is better), paired bootstrap over test series. Gap closed: change / the "
                 "original's selected-minus-last gap, shown only where the intervals of that "
                 "gap and of the change exclude 0 (else \"within noise\"). Best kept: "
                 "selected-layer score after / before, shown only where the score before is "
                 "not within noise of 0.")
    return "\n".join(lines) + "\n"
