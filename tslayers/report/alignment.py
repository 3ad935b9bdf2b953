"""Markdown for alignment runs: what each alignment gained on its target and cost elsewhere."""

from __future__ import annotations

import math
from typing import Any

import xarray as xr

from .render import primary_metric


def _pct(v: float) -> str:
    return "–" if v is None or not math.isfinite(v) else f"{v:.0%}"


def alignment_markdown(summaries: dict[str, dict[str, Any]], results: xr.Dataset) -> str:
    """One table per alignment run (primary metric of each task): best and last layer before,
    last and best after, gap closed at the output (target tasks) and share of the best kept."""
    lines = ["## Alignment", ""]
    tasks = set(results["task"].values.tolist())
    for run, summary in summaries.items():
        what = summary.get("layer", summary.get("teacher_layer"))
        lines += [f"### {run} (target: {summary.get('target')}, layer {what})", "",
                  "| task | metric | best layer before | best before | last before | last after "
                  "| gap closed | best kept |",
                  "|---|---|---|---|---|---|---|---|"]
        for key, row in summary["scores"].items():
            task, metric = key.rsplit("/", 1)
            if task not in tasks or metric != primary_metric(results, task):
                continue
            mark = " **(target)**" if row["target"] else ""
            lines.append(
                f"| {task}{mark} | {metric} | {row['best_layer_before']} | "
                f"{row['best_before']:.3g} | {row['last_before']:.3g} | {row['last_after']:.3g} "
                f"| {_pct(row['gap_closed'])} | {_pct(row['kept'])} |")
        lines.append("")
    lines.append("Gap closed: share of the best-vs-last gap recovered at the aligned model's "
                 "output (– where the gap was within noise: under 1%, or 0.005 for unit-free "
                 "metrics). Best kept: aligned model's best layer as a share of the original "
                 "best (– for non-positive scores).")
    return "\n".join(lines) + "\n"
