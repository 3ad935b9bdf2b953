"""What an alignment delivers at the output, measured against the right baselines.

Every number compares *last layers* (where users read features) of models probed on the same
windows, splits and seeds, so the bootstrap replicates in ``score_boot`` are shared and each
difference is paired replicate by replicate. Signs are oriented so that > 0 means better.

- ``change``: the aligned model's last layer minus the unaligned model's last layer;
- ``vs_reference``: the aligned model's last layer minus a reference's (truncation only);
- ``gap_closed``: change / the unaligned model's test gap (selected - last), reported only where
  the *validation* gap (selection repeated inside each replicate) has an interval above 0.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import xarray as xr


def _sign(ds: xr.Dataset, metric: str) -> float:
    return 1.0 if bool(ds["higher_is_better"].sel(metric=metric)) else -1.0


def last_scores(ds: xr.Dataset, model: str, task: str, metric: str, split: str = "test"
                ) -> tuple[np.ndarray, np.ndarray] | None:
    """The model's last-layer score (seed,) and replicates (seed, boot) on ``split``."""
    layers = ds["last_layer"].sel(model=model, task=task, metric=metric).values
    if not np.isfinite(layers).all():
        return None
    sel = dict(model=model, task=task, metric=metric, split=split)
    pairs = list(zip(ds["seed"].values, layers))
    score = np.array([float(ds["score"].sel(sel | {"seed": s, "layer": int(l)}))
                      for s, l in pairs])
    boot = np.stack([ds["score_boot"].sel(sel | {"seed": s, "layer": int(l)}).values
                     for s, l in pairs])
    return score, boot


def paired_change(ds: xr.Dataset, after: str, before: str, task: str, metric: str
                  ) -> tuple[float, float, float, np.ndarray] | None:
    """(change, lo, hi, replicates) of after's last layer minus before's, mean over seeds."""
    from tslayers.probing.metrics import interval

    a, b = last_scores(ds, after, task, metric), last_scores(ds, before, task, metric)
    if a is None or b is None:
        return None
    sign = _sign(ds, metric)
    reps = sign * (a[1] - b[1]).mean(0)
    lo, hi = interval(reps, float(ds.attrs.get("ci", 0.9)))
    return float(sign * np.mean(a[0] - b[0])), lo, hi, reps


def validation_gap(ds: xr.Dataset, model: str, task: str, metric: str
                   ) -> tuple[float, float, float]:
    """Val score at the val-selected layer minus the val last layer (mean over seeds), with
    the selection repeated inside each replicate: the gap an aligner may claim to close."""
    from tslayers.probing.analysis import _curves, _pick, _select
    from tslayers.probing.metrics import interval

    sign = _sign(ds, metric)
    gaps, reps = [], []
    for seed in ds["seed"].values.tolist():
        c = _curves(ds, model, task, metric, seed)
        if c is None or "bval" not in c:
            continue
        last = int(np.flatnonzero(c["ok"])[-1])
        gaps.append(sign * (c["val"][int(_select(c["val"], sign))] - c["val"][last]))
        reps.append(sign * (_pick(c["bval"], _select(c["bval"], sign)) - c["bval"][:, last]))
    if not gaps:
        return float("nan"), float("nan"), float("nan")
    lo, hi = interval(np.mean(reps, 0), float(ds.attrs.get("ci", 0.9)))
    return float(np.mean(gaps)), lo, hi


def _closed(ds: xr.Dataset, base: str, task: str, metric: str, change: tuple | None
            ) -> tuple[float, float, float]:
    """Share of the base model's test gap closed, only where the validation gap is real."""
    from tslayers.probing.metrics import interval

    nan = (float("nan"),) * 3
    vgap, vlo, _ = validation_gap(ds, base, task, metric)
    gap = float(np.nanmean(ds["gap"].sel(model=base, task=task, metric=metric).values))
    if change is None or not (np.isfinite(vlo) and vlo > 0 and vgap > 0 and gap > 0):
        return nan
    return (change[0] / gap, *interval(change[3] / gap, float(ds.attrs.get("ci", 0.9))))


def alignment_summary(results: xr.Dataset, before: str, after: str, target: str,
                      reference: str | None = None) -> dict[str, Any]:
    """Per task (primary metric): ``after``'s last layer vs ``before``'s (the change, its paired
    interval, the share of the gap closed) and, when given, vs ``reference``'s last layer
    (``vs_reference``; e.g. truncation only). ``best_kept`` (secondary): selected-layer score
    after / before."""
    from tslayers.probing.analysis import matching_tasks, primary_metric

    targets = set(matching_tasks(results, target))
    rows = {}
    for task in results["task"].values.tolist():
        metric = primary_metric(results, task)
        change = None if metric is None else paired_change(results, after, before, task, metric)
        if change is None:
            continue
        an = dict(model=before, task=task, metric=metric)
        vgap = validation_gap(results, before, task, metric)
        closed = _closed(results, before, task, metric, change)
        row = {"target": task in targets, "family": str(results["family"].sel(task=task).values),
               "last_before": float(np.mean(last_scores(results, before, task, metric)[0])),
               "last_after": float(np.mean(last_scores(results, after, task, metric)[0])),
               "change": change[0], "change_lo": change[1], "change_hi": change[2],
               "gap_before": float(np.nanmean(results["gap"].sel(an).values)),
               "val_gap": vgap[0], "val_gap_lo": vgap[1], "val_gap_hi": vgap[2],
               "gap_closed": closed[0], "gap_closed_lo": closed[1], "gap_closed_hi": closed[2],
               "best_kept": _kept(results, before, after, task, metric)}
        ref = reference and paired_change(results, after, reference, task, metric)
        if ref:
            beyond = _closed(results, before, task, metric, ref)
            row.update(vs_reference=ref[0], vs_reference_lo=ref[1], vs_reference_hi=ref[2],
                       closed_beyond_reference=beyond[0],
                       closed_beyond_reference_lo=beyond[1],
                       closed_beyond_reference_hi=beyond[2])
        rows[f"{task}/{metric}"] = row
    return {"target": target, "before": before, "after": after, "reference": reference,
            "scores": rows}


def _kept(results: xr.Dataset, before: str, after: str, task: str, metric: str) -> float:
    """Selected-layer score after / before (direction-aware), defined for positive scores."""
    b, a = (float(np.nanmean(results["selected_score"].sel(model=m, task=task,
                                                           metric=metric).values))
            for m in (before, after))
    if not (b > 0 and a > 0):
        return float("nan")
    return a / b if _sign(results, metric) > 0 else b / a


def gap_closed_beyond(results: xr.Dataset, base: str, after: str, reference: str,
                      target: str) -> tuple[float, float, float, int]:
    """(share, lo, hi, n_tasks): (after - reference) at the last layer over the base model's
    test gap, averaged over the target's tasks whose validation gap is real; replicate by
    replicate, so the interval is paired. NaN when no target task has a real gap."""
    from tslayers.probing.analysis import matching_tasks, primary_metric
    from tslayers.probing.metrics import interval

    shares, reps = [], []
    for task in matching_tasks(results, target):
        metric = primary_metric(results, task)
        ch = None if metric is None else paired_change(results, after, reference, task, metric)
        closed = _closed(results, base, task, metric, ch) if ch else (float("nan"),)
        if np.isfinite(closed[0]):
            gap = float(np.nanmean(results["gap"].sel(model=base, task=task, metric=metric)))
            shares.append(closed[0])
            reps.append(ch[3] / gap)
    if not shares:
        return float("nan"), float("nan"), float("nan"), 0
    lo, hi = interval(np.mean(reps, 0), float(results.attrs.get("ci", 0.9)))
    return float(np.mean(shares)), lo, hi, len(shares)
