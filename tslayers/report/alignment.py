"""Markdown for alignment runs: what each alignment changed at the output, with intervals."""

from __future__ import annotations

import math
from typing import Any

from .markdown import diff


def _num(v: float, fmt: str = ".3g") -> str:
    return "–" if v is None or not math.isfinite(v) else format(v, fmt)


def _closed(row: dict) -> str:
    """The share of the original gap closed, only where both the gap and the change are real
    (their intervals exclude 0); a share of a quantity within noise means nothing."""
    values = [row.get(k, float("nan")) for k in ("gap_closed", "gap_closed_lo",
                                                 "gap_closed_hi", "change_lo", "change_hi")]
    if not all(math.isfinite(v) for v in values) or not (values[3] > 0 or values[4] < 0):
        return "within noise"
    return f"{values[0]:.0%} [{values[1]:.0%}, {values[2]:.0%}]"


def alignment_markdown(summaries: dict[str, dict[str, Any]]) -> str:
    """One table per alignment run (primary metric of each task): the last layer's test score
    before and after, the change with its paired interval (bold when it excludes 0), the share
    of the original gap closed (only where that gap and the change were real) and, secondary,
    the share of the best validation-selected score kept."""
    lines = ["## Alignment", ""]
    for run, summary in summaries.items():
        what = summary.get("layer", summary.get("teacher_layer"))
        lines += [f"### {run} (target: {summary.get('target')}, layer {what})", "",
                  "| task | metric | last before | last after | change at the output | "
                  "gap before | gap closed | best kept |", "|---|---|---|---|---|---|---|---|"]
        for key, row in summary["scores"].items():
            task, metric = key.rsplit("/", 1)
            mark = " **(target)**" if row["target"] else ""
            scale = row["last_before"]
            lines.append(
                f"| {task}{mark} | {metric} | {_num(row['last_before'])} | "
                f"{_num(row['last_after'])} | "
                f"{diff(row['change'], row['change_lo'], row['change_hi'], scale=scale)} | "
                f"{diff(row['gap_before'], row['gap_lo'], row['gap_hi'], scale=scale)} | "
                f"{_closed(row)} | "
                f"{_num(row['best_kept'], '.0%')} |")
        lines.append("")
    lines.append("Change at the output: last-layer test score after minus before (oriented so "
                 "> 0 is better), paired bootstrap over test series. Gap closed: change / the "
                 "original's selected-minus-last gap, shown only where the intervals of that "
                 "gap and of the change exclude 0 (else \"within noise\"). Best kept: "
                 "selected-layer score after / before.")
    return "\n".join(lines) + "\n"
