"""What the scores say: layers selected on validation series, reported on test series.

The protocol every reader of results (report, align, study) goes through:

- **selection on val**: the selected layer of a (model, task, metric, seed) is the best layer
  on the *validation* series; its score is reported on the *test* series. The test-best
  ("oracle") layer is kept only as an upper bound.
- **paired intervals**: the results hold bootstrap replicates drawn once per split and seed
  (the same series draws for every model, layer and task), so a difference (selected - last,
  model - control) is computed replicate by replicate, with the selection *repeated inside each
  replicate* on the resampled validation series. A difference is claimed only when its
  interval excludes 0.
- **controls**: the headline of a model is its selected-layer score minus the best control
  (untrained twin, raw window, periodogram, MiniRocket), the control also chosen on val.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr

#: variables written by :func:`annotate` (recomputed whenever results are merged)
ANALYSIS_VARS = ("selected_layer", "oracle_layer", "last_layer", "selected_score",
                 "selected_lo", "selected_hi", "gap", "gap_lo", "gap_hi", "vs_control",
                 "vs_control_lo", "vs_control_hi", "best_control", "selected_pvalue")
#: controls that stand for "what cheap features already give" (the floor of a headline)
FLOOR_CONTROLS = ("untrained", "raw-window", "periodogram", "minirocket")
PRIMARY = ("r2", "accuracy", "auroc", "mse")


def base_models(ds: xr.Dataset) -> list[str]:
    return [m for m in ds["model"].values.tolist() if "/" not in m]


def controls_of(ds: xr.Dataset, model: str) -> list[str]:
    names = ds["model"].values.tolist()
    return [f"{model}/{c}" for c in FLOOR_CONTROLS if f"{model}/{c}" in names]


def _direction(ds: xr.Dataset, metric: str) -> float:
    return 1.0 if bool(ds["higher_is_better"].sel(metric=metric)) else -1.0


def _select(val: np.ndarray, sign: float) -> np.ndarray:
    """Index of the best finite entry along the last axis (-1 where none is finite)."""
    v = np.where(np.isfinite(val), sign * val, -np.inf)
    idx = v.argmax(-1)
    return np.where(np.isfinite(val).any(-1), idx, -1)


def _pick(arr: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """arr (..., L), idx (...) -> arr[..., idx] (NaN where idx < 0)."""
    out = np.take_along_axis(arr, np.clip(idx, 0, None)[..., None], -1)[..., 0]
    return np.where(idx >= 0, out, np.nan)


def _curves(ds: xr.Dataset, model: str, task: str, metric: str, seed) -> dict | None:
    sel = dict(model=model, task=task, metric=metric, seed=seed)
    val = ds["score"].sel({**sel, "split": "val"}).values
    test = ds["score"].sel({**sel, "split": "test"}).values
    ok = np.isfinite(val)  # which layers exist is read from val only: selection never sees test
    if not ok.any():
        return None
    boot = ds["score_boot"].sel(sel) if "score_boot" in ds and ds.sizes.get("boot", 0) \
        else None
    out = {"val": np.where(ok, val, np.nan), "test": np.where(ok, test, np.nan), "ok": ok}
    if boot is not None:
        out["bval"] = np.where(ok, boot.sel(split="val").values.T, np.nan)  # (R, L)
        out["btest"] = np.where(ok, boot.sel(split="test").values.T, np.nan)
    return out


def _chosen(c: dict, sign: float) -> tuple[float, float, np.ndarray | None, np.ndarray | None]:
    """(val score at val-selected layer, test score there, and the same per replicate)."""
    i = int(_select(c["val"], sign))
    rv = rt = None
    if "bval" in c:
        ir = _select(c["bval"], sign)
        rv, rt = _pick(c["bval"], ir), _pick(c["btest"], ir)
    return float(c["val"][i]), float(c["test"][i]), rv, rt


def _ci(reps: np.ndarray | None, ci: float) -> tuple[float, float]:
    from .metrics import interval

    return interval(reps, ci) if reps is not None else (float("nan"), float("nan"))


def annotate(ds: xr.Dataset, ci: float = 0.9) -> xr.Dataset:
    """Add the analysis variables (:data:`ANALYSIS_VARS`) to a results Dataset."""
    ds = ds.drop_vars([v for v in ANALYSIS_VARS if v in ds])
    ds.attrs = {**ds.attrs, "ci": ci}  # the level of every interval (seed intervals included)
    dims = ("model", "task", "metric", "seed")
    shape = tuple(ds.sizes[d] for d in dims)
    out = {v: np.full(shape, np.nan) for v in ANALYSIS_VARS if v != "best_control"}
    best_control = np.full(shape, "", dtype=object)
    layers = ds["layer"].values
    models = ds["model"].values.tolist()
    for im, model in enumerate(models):
        controls = controls_of(ds, model) if "/" not in model else []
        for it, task in enumerate(ds["task"].values.tolist()):
            for ik, metric in enumerate(ds["metric"].values.tolist()):
                sign = _direction(ds, metric)
                for js, seed in enumerate(ds["seed"].values.tolist()):
                    c = _curves(ds, model, task, metric, seed)
                    if c is None:
                        continue
                    at = (im, it, ik, js)
                    i_sel = int(_select(c["val"], sign))
                    i_last = int(np.flatnonzero(c["ok"])[-1])
                    out["selected_layer"][at] = layers[i_sel]
                    out["oracle_layer"][at] = layers[int(_select(c["test"], sign))]
                    out["last_layer"][at] = layers[i_last]
                    _, test_sel, _, rt = _chosen(c, sign)
                    out["selected_score"][at] = test_sel
                    out["selected_lo"][at], out["selected_hi"][at] = _ci(rt, ci)
                    out["gap"][at] = sign * (test_sel - c["test"][i_last])
                    if rt is not None:
                        reps = sign * (rt - c["btest"][:, i_last])
                        out["gap_lo"][at], out["gap_hi"][at] = _ci(reps, ci)
                    if "pvalue" in ds:
                        pv = ds["pvalue"].sel(model=model, task=task, metric=metric, seed=seed)
                        out["selected_pvalue"][at] = float(pv.values[i_sel])
                    _vs_controls(ds, controls, task, metric, seed, sign, test_sel, rt, ci,
                                 out, best_control, at)
    for name, arr in out.items():
        ds[name] = (dims, arr)
    ds["best_control"] = (dims, best_control)
    ds["gap"].attrs["description"] = ("test score at the layer selected on val minus the last "
                                      "layer's, oriented so > 0 means the selected layer is "
                                      "better; interval: paired bootstrap with reselection")
    ds["vs_control"].attrs["description"] = ("selected-layer test score minus the best control "
                                             "(chosen on val), oriented so > 0 means better")
    return ds


def _vs_controls(ds, controls, task, metric, seed, sign, test_sel, rt, ci, out, best, at):
    ctl = {}
    for name in controls:
        c = _curves(ds, name, task, metric, seed)
        if c is not None:
            ctl[name] = _chosen(c, sign)
    if not ctl:
        return
    name = max(ctl, key=lambda n: sign * ctl[n][0])  # best control on val
    best[at] = name
    out["vs_control"][at] = sign * (test_sel - ctl[name][1])
    if rt is not None and all(v[2] is not None for v in ctl.values()):
        names = list(ctl)
        rv = np.stack([ctl[n][2] for n in names], -1)  # (R, K)
        rtc = np.stack([ctl[n][3] for n in names], -1)
        pick = _select(rv, sign)
        out["vs_control_lo"][at], out["vs_control_hi"][at] = _ci(sign * (rt - _pick(rtc, pick)),
                                                                 ci)


# ------------------------------------------------------------------------------ tables
def primary_metric(ds: xr.Dataset, task: str) -> str | None:
    """The metric that summarises a task: the registered task's first metric present."""
    from .tasks import TASKS, base_task

    score = ds["score"].sel(task=task)
    present = [m for m in ds["metric"].values.tolist()
               if np.isfinite(score.sel(metric=m).values).any()]
    base = base_task(task)
    order = list(TASKS[base].metrics) if base in TASKS else list(PRIMARY)
    for m in order + list(PRIMARY):
        if m in present:
            return m
    return present[0] if present else None


def _seed_interval(values: np.ndarray, lo: np.ndarray, hi: np.ndarray, ci: float
                   ) -> tuple[float, float, float]:
    """Mean over seeds with a t-interval across seeds (one seed: its bootstrap interval)."""
    from scipy import stats

    v = values[np.isfinite(values)]
    if len(v) == 0:
        return float("nan"), float("nan"), float("nan")
    if len(v) == 1:
        return float(v[0]), float(np.nanmean(lo)), float(np.nanmean(hi))
    half = stats.t.ppf(0.5 + ci / 2, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v))
    return float(v.mean()), float(v.mean() - half), float(v.mean() + half)


def layer_table(ds: xr.Dataset, models: list[str] | None = None) -> pd.DataFrame:
    """One row per (model, task) on the task's primary metric: the layer selected on val (most
    frequent over seeds), its test score, the last layer's, the gap and the margin over the best
    control, each with its interval (across seeds when there are several), the p-value, the
    test-oracle layer, and the task's floor (best control) and ceiling (optimum)."""
    ci = float(ds.attrs.get("ci", 0.9))
    rows = []
    for model in models or ds["model"].values.tolist():
        for task in ds["task"].values.tolist():
            metric = primary_metric(ds, task)
            if metric is None:
                continue
            sel = dict(model=model, task=task, metric=metric)
            layers = ds["selected_layer"].sel(sel).values
            if not np.isfinite(layers).any():
                continue
            get = {v: ds[v].sel(sel).values for v in ANALYSIS_VARS if v != "best_control"}
            last = ds["score"].sel({**sel, "split": "test"})
            last_score = np.array([float(last.sel(seed=s, layer=int(ll)))
                                   if np.isfinite(ll) else np.nan
                                   for s, ll in zip(ds["seed"].values, get["last_layer"])])
            score = _seed_interval(get["selected_score"], get["selected_lo"],
                                   get["selected_hi"], ci)
            gap = _seed_interval(get["gap"], get["gap_lo"], get["gap_hi"], ci)
            vs = _seed_interval(get["vs_control"], get["vs_control_lo"], get["vs_control_hi"], ci)
            controls = [c for c in ds["best_control"].sel(sel).values.tolist() if c]
            floor = _floor(ds, controls, task, metric)
            rows.append(dict(
                model=model, family=str(ds["family"].sel(task=task).values), task=task,
                metric=metric, higher_is_better=bool(ds["higher_is_better"].sel(metric=metric)),
                selected_layer=int(pd.Series(layers[np.isfinite(layers)]).mode().iloc[0]),
                oracle_layer=int(np.nanmax(get["oracle_layer"])) if np.isfinite(
                    get["oracle_layer"]).any() else -1,
                last_layer=int(np.nanmax(get["last_layer"])),
                score=score[0], score_lo=score[1], score_hi=score[2],
                last=float(np.nanmean(last_score)),
                gap=gap[0], gap_lo=gap[1], gap_hi=gap[2],
                vs_control=vs[0], vs_control_lo=vs[1], vs_control_hi=vs[2],
                best_control=max(set(controls), key=controls.count) if controls else "",
                floor=floor, ceiling=_ceiling(ds, model, task, metric),
                pvalue=float(np.nanmax(get["selected_pvalue"])) if np.isfinite(
                    get["selected_pvalue"]).any() else float("nan"),
                selectivity=_selectivity(ds, model, task, metric, layers, score[0]),
                n_seeds=int(np.isfinite(get["selected_score"]).sum())))
    return pd.DataFrame(rows)


def _selectivity(ds: xr.Dataset, model: str, task: str, metric: str, layers: np.ndarray,
                 score: float) -> float:
    """Task score minus the control task's (random labels per input type) at the same layers
    (Hewitt & Liang): how much of the score is more than the probe telling inputs apart."""
    control = f"{task}/control-task"
    if control not in ds["task"].values.tolist():
        return float("nan")
    test = ds["score"].sel(model=model, task=control, metric=metric, split="test")
    values = [float(test.sel(seed=s, layer=int(l))) for s, l in zip(ds["seed"].values, layers)
              if np.isfinite(l)]
    values = [v for v in values if np.isfinite(v)]
    return score - float(np.mean(values)) if values else float("nan")


def _floor(ds: xr.Dataset, controls: list[str], task: str, metric: str) -> float:
    if not controls:
        return float("nan")
    name = max(set(controls), key=controls.count)
    v = ds["selected_score"].sel(model=name, task=task, metric=metric).values
    return float(np.nanmean(v)) if np.isfinite(v).any() else float("nan")


def _ceiling(ds: xr.Dataset, model: str, task: str, metric: str) -> float:
    if "optimum" not in ds or model not in ds["optimum"]["model"].values.tolist():
        return float("nan")
    v = ds["optimum"].sel(model=model, task=task, metric=metric, split="test").values
    return float(np.nanmean(v)) if np.isfinite(v).any() else float("nan")


def significant(lo: float, hi: float) -> bool:
    """An interval that excludes 0 (the only case in which a difference is claimed)."""
    return bool(np.isfinite(lo) and np.isfinite(hi) and (lo > 0 or hi < 0))


# ------------------------------------------------------------------------------ choosing layers
def matching_tasks(ds: xr.Dataset, target: str) -> list[str]:
    """Tasks named by ``target``: a task ("forecast/h16/last"), a task prefix ("forecast" or
    "forecast/h16") or a family ("forecasting", "dense", ...)."""
    fam = dict(zip(ds["task"].values.tolist(), ds["family"].values.tolist()))
    tasks = [t for t in ds["task"].values.tolist()
             if t == target or t.startswith((target + "/", target + "@"))
             or fam.get(t) == target]
    if not tasks:
        raise ValueError(f"no task matches '{target}'; tasks: {ds['task'].values.tolist()}, "
                         f"families: {sorted(set(fam.values()))}")
    return tasks


def layer_profile(ds: xr.Dataset, model: str, target: str, split: str = "val") -> xr.DataArray:
    """(layer,) mean over the target's tasks (and seeds) of the primary metric on ``split``,
    rescaled per task to [0, 1] (1 = that task's best layer): one curve to choose a layer for a
    whole family. Choices are made on ``val``; ``test`` is for display only."""
    if model not in ds["model"].values.tolist():
        raise ValueError(f"no model '{model}' in the results; models: "
                         f"{ds['model'].values.tolist()}")
    cols = []
    for task in matching_tasks(ds, target):
        m = primary_metric(ds, task)
        if m is None:
            continue
        v = ds["score"].sel(model=model, task=task, metric=m, split=split).mean("seed").values
        if not np.isfinite(v).any():
            continue
        v = _direction(ds, m) * v
        lo, hi = np.nanmin(v), np.nanmax(v)
        cols.append((v - lo) / (hi - lo) if hi > lo else np.where(np.isfinite(v), 1.0, np.nan))
    if not cols:
        raise ValueError(f"model '{model}' has no scores for '{target}'")
    return xr.DataArray(np.nanmean(np.stack(cols, 1), axis=1), coords={"layer": ds["layer"]},
                        dims="layer")


def best_layer(ds: xr.Dataset, model: str, target: str, min_layer: int = 0) -> int:
    """The layer (>= ``min_layer``) with the highest validation :func:`layer_profile`."""
    profile = layer_profile(ds, model, target).sel(layer=slice(min_layer, None))
    if not np.isfinite(profile.values).any():
        raise ValueError(f"model '{model}' has no validation scores for '{target}' at layers "
                         f">= {min_layer}")
    return int(profile["layer"].values[int(np.nanargmax(profile.values))])


def largest_gap_model(ds: xr.Dataset, models: list[str], target: str) -> str:
    """Among ``models``, the one whose last layer trails its best layer most on ``target``,
    measured on the *validation* profile (so the choice never reads test series)."""
    gaps = {}
    for name in models:
        try:
            profile = layer_profile(ds, name, target).dropna("layer")
        except ValueError:
            continue
        gaps[name] = float(profile.max() - profile.isel(layer=-1))
    if not gaps:
        raise ValueError(f"no model has scores for '{target}': add its tasks to probe_data or "
                         "name the objective to align")
    return max(gaps, key=gaps.get)
