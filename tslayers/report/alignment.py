"""Markdown for alignment runs: what each ablation changed at the output, against the right
baselines, with intervals; runs of the same alignment over several pretraining seeds are pooled
(mean over seeds with a t-interval across seeds; one seed: its paired bootstrap interval)."""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np


def _num(v: float | None, fmt: str = ".3g") -> str:
    return "–" if v is None or not math.isfinite(v) else format(v, fmt)


def _interval(v: tuple[float, float, float], fmt: str = "+.3g", bold: bool = True) -> str:
    mean, lo, hi = v
    if not math.isfinite(mean):
        return "–"
    text = f"{mean:{fmt}} [{lo:{fmt}}, {hi:{fmt}}]"
    return f"**{text}**" if bold and math.isfinite(lo) and (lo > 0 or hi < 0) else text


def _pool(rows: list[dict], key: str, ci: float = 0.9) -> tuple[float, float, float]:
    """Mean over seeds of ``key`` with the interval across seeds (t) or, for one seed, the
    row's own interval ``key_lo``/``key_hi``."""
    from tslayers.probing.analysis import _seed_interval

    vals = np.array([r.get(key, np.nan) for r in rows], dtype=float)
    lo = np.array([r.get(f"{key}_lo", np.nan) for r in rows], dtype=float)
    hi = np.array([r.get(f"{key}_hi", np.nan) for r in rows], dtype=float)
    return _seed_interval(vals, lo, hi, ci)


def _mean(values: list[float]) -> float:
    v = np.asarray(values, dtype=float)
    return float(v[np.isfinite(v)].mean()) if np.isfinite(v).any() else float("nan")


def group_runs(summaries: dict[str, dict]) -> dict[str, list[dict]]:
    """Runs named ``<kind>-<objective>-s<seed>`` grouped over seeds."""
    groups: dict[str, list[dict]] = {}
    for run, summary in summaries.items():
        groups.setdefault(re.sub(r"-s\d+$", "", run), []).append(summary)
    return groups


def _ablation_lines(runs: list[dict]) -> list[str]:
    lines = ["| ablation | teacher | task | metric | last layer: change vs unaligned | "
             "vs truncation only | gap closed | best kept |", "|---|---|---|---|---|---|---|---|"]
    for model in runs[0].get("ablations", {}):
        per_seed = [r["ablations"][model] for r in runs if model in r.get("ablations", {})]
        for key in per_seed[0]["scores"]:
            rows = [p["scores"][key] for p in per_seed if key in p["scores"]]
            task, metric = key.rsplit("/", 1)
            mark = " **(target)**" if rows[0]["target"] else ""
            closed = _pool(rows, "gap_closed")
            lines.append(
                f"| {model.split('/align-', 1)[-1]} | {per_seed[0].get('teacher', '')} | "
                f"{task}{mark} | {metric} | {_interval(_pool(rows, 'change'))} | "
                f"{_interval(_pool(rows, 'vs_reference'))} | "
                f"{_interval(closed, '.0%', False) if math.isfinite(closed[0]) else 'n/a'} | "
                f"{_num(_mean([r['best_kept'] for r in rows]), '.0%')} |")
    return lines


def _forecast_lines(runs: list[dict]) -> list[str]:
    scored = [r["forecasts"] for r in runs if "forecasts" in r and "_meta" in r["forecasts"]]
    if not scored:
        return []
    meta = scored[0]["_meta"]
    lines = ["", f"Forecasts on the probe's test series ({meta['n_series']} series, "
             f"{meta['windows']} windows of {meta['horizon']} steps, context "
             f"{meta['context']}; GluonTS MASE with season {meta['season']} and mean weighted "
             "quantile loss):", "", "| model | MASE | wQL |", "|---|---|---|"]
    for name in (k for k in scored[0] if k != "_meta"):
        rows = [s[name] for s in scored if name in s]
        wql = float(np.mean([r["wQL"] for r in rows]))
        lines.append(f"| {name} | {_interval(_pool(rows, 'MASE'), '.3f', False)} | "
                     f"{wql:.3f} |")
    return lines


def alignment_markdown(summaries: dict[str, dict[str, Any]]) -> str:
    """One section per alignment (pooled over seeds): every ablation's last-layer change on
    every task (the target family and the cost elsewhere), its change against truncation only,
    the gap closed where the validation gap was real, and the aligned decoder's forecasts."""
    lines = ["## Alignment", ""]
    for group, runs in group_runs(summaries).items():
        first = runs[0]
        what = first.get("layer", first.get("teacher_layer"))
        lines += [f"### {group} (target: {first.get('target')}, layer {what}, "
                  f"{len(runs)} seed{'s' if len(runs) > 1 else ''})", ""]
        lines += _ablation_lines(runs)
        beyond = [r["beyond_truncation"] for r in runs if "beyond_truncation" in r]
        if beyond:
            pooled = _pool([{"x": b["share"], "x_lo": b["lo"], "x_hi": b["hi"]}
                            for b in beyond], "x")
            text = _interval(pooled, ".0%", False) if math.isfinite(pooled[0]) else \
                "not defined (no target task has a validation gap above its interval)"
            lines += ["", f"Gap closed beyond truncation: {text}"]
        lines += _forecast_lines(runs) + [""]
    lines.append(
        "Change: the ablation's last-layer test score minus the unaligned model's (oriented so "
        "> 0 is better), paired bootstrap over test series (bold: interval excludes 0); across "
        "seeds, mean with a t-interval. Vs truncation only: the same against the encoder cut at "
        "the selected layer with no tuning (which closes the gap by construction). Gap closed: "
        "change / the unaligned model's gap, only where its validation gap's interval is above "
        "0. Best kept (secondary): selected-layer score after / before.")
    return "\n".join(lines) + "\n"
