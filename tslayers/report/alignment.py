"""Markdown for alignment runs: what each alignment changed at the output, with intervals."""

from __future__ import annotations

import math
from typing import Any


def _num(v: float, fmt: str = ".3g") -> str:
    return "–" if v is None or not math.isfinite(v) else format(v, fmt)


def _change(row: dict) -> str:
    text = f"{row['change']:+.3g} [{row['change_lo']:+.3g}, {row['change_hi']:+.3g}]"
    lo, hi = row["change_lo"], row["change_hi"]
    return f"**{text}**" if math.isfinite(lo) and (lo > 0 or hi < 0) else text


def _closed(row: dict) -> str:
    if not math.isfinite(row["gap_closed"]):
        return "within noise"
    return f"{row['gap_closed']:.0%} [{row['gap_closed_lo']:.0%}, {row['gap_closed_hi']:.0%}]"


def alignment_markdown(summaries: dict[str, dict[str, Any]]) -> str:
    """One table per alignment run (primary metric of each task): the last layer's test score
    before and after, the change with its paired interval (bold when it excludes 0), the share
    of the original gap closed (only where that gap was real) and, secondary, the share of the
    best validation-selected score kept."""
    lines = ["## Alignment", ""]
    for run, summary in summaries.items():
        what = summary.get("layer", summary.get("teacher_layer"))
        lines += [f"### {run} (target: {summary.get('target')}, layer {what})", "",
                  "| task | metric | last before | last after | change at the output | "
                  "gap before | gap closed | best kept |", "|---|---|---|---|---|---|---|---|"]
        for key, row in summary["scores"].items():
            task, metric = key.rsplit("/", 1)
            mark = " **(target)**" if row["target"] else ""
            lines.append(
                f"| {task}{mark} | {metric} | {_num(row['last_before'])} | "
                f"{_num(row['last_after'])} | {_change(row)} | {_num(row['gap_before'])} "
                f"[{_num(row['gap_lo'])}, {_num(row['gap_hi'])}] | {_closed(row)} | "
                f"{_num(row['best_kept'], '.0%')} |")
        lines.append("")
    lines.append("Change at the output: last-layer test score after minus before (oriented so "
                 "> 0 is better), paired bootstrap over test series. Gap closed: change / the "
                 "original's selected-minus-last gap, shown only where that gap's interval "
                 "excludes 0. Best kept: selected-layer score after / before.")
    return "\n".join(lines) + "\n"
