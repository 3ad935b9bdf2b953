"""The results file: one xarray Dataset per study, netCDF on disk.

Variables (``model`` names the encoder and its controls: ``<name>``, ``<name>/untrained``,
``<name>/raw-patches``, ``<name>/permuted``):

- ``score``, ``score_lo``, ``score_hi`` (model, layer, task, metric, seed): test scores and
  bootstrap intervals over test series;
- ``higher_is_better`` (metric) int8, ``family`` (task) str;
- ``optimum`` (task, metric): Bayes-optimal (Kalman) score on LGSSM data, NaN elsewhere;
- ``cka`` (model, layer, layer2), ``cka_cross`` (model, layer, layer2) against the model's
  twin (trained vs untrained); ``effective_rank``, ``norm_outlier_frac``, ``mean_token_sim``
  (model, layer); ``attn_entropy``, ``attn_distance``, ``attn_prefix_mass``,
  ``attn_received_max`` (model, layer, head); ``layer_name`` (model, layer) str.

Attributes: ``tslayers_results`` (format version), ``config`` (YAML), ``versions`` (YAML).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from .metrics import HIGHER_IS_BETTER

FORMAT_VERSION = 1
SCORE_DIMS = ("model", "layer", "task", "metric", "seed")


def package_versions() -> str:
    import importlib.metadata as md

    out = []
    for pkg in ("tslayers", "torch", "numpy", "xarray", "scipy", "gluonts", "scikit-learn"):
        try:
            out.append(f"{pkg}: {md.version(pkg)}")
        except md.PackageNotFoundError:
            continue
    return "\n".join(out)


def scores_to_dataset(records: list[dict]) -> xr.Dataset:
    """Records {model, layer, task, metric, seed, score, lo, hi} -> the score variables."""
    if not records:
        raise ValueError("no scores to write: every task was skipped")
    df = pd.DataFrame.from_records(records)
    df = df.groupby(list(SCORE_DIMS), sort=False)[["score", "lo", "hi"]].mean()
    ds = df.to_xarray().rename({"lo": "score_lo", "hi": "score_hi"})
    ds = ds.transpose(*SCORE_DIMS)
    metrics = [str(m) for m in ds["metric"].values]
    unknown = [m for m in metrics if m not in HIGHER_IS_BETTER]
    if unknown:
        raise ValueError(f"metrics {unknown} have no known direction; add them to "
                         "tslayers.probing.metrics.HIGHER_IS_BETTER")
    ds["higher_is_better"] = ("metric", np.array([HIGHER_IS_BETTER[m] for m in metrics],
                                                 dtype=np.int8))
    return ds


def finalize(ds: xr.Dataset, *, config_yaml: str = "") -> xr.Dataset:
    """Sort coordinates, add the family of each task and the provenance attributes."""
    from .tasks import FAMILY

    ds = ds.sortby("layer")
    ds["family"] = ("task", np.array([FAMILY.get(str(t).split("/")[0], "other")
                                      for t in ds["task"].values], dtype=object))
    ds.attrs.update({"tslayers_results": FORMAT_VERSION, "config": config_yaml,
                     "versions": package_versions()})
    return ds


def _encodable(ds: xr.Dataset) -> xr.Dataset:
    """netCDF needs plain str arrays and no bools. Encodings read from an earlier file are
    dropped: a fixed string width carried over from an input would truncate longer names."""
    ds = ds.drop_encoding()
    for name in list(ds.variables):
        v = ds[name]
        if v.dtype == bool:
            ds[name] = v.astype(np.int8)
        elif v.dtype == object:
            ds[name] = v.fillna("").astype(str)
    return ds


def write_results(ds: xr.Dataset, path: str | Path) -> Path:
    """Write atomically (temporary file in the same folder, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        _encodable(ds).to_netcdf(tmp, engine="h5netcdf")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def validate_results(ds: xr.Dataset, where: str = "dataset") -> xr.Dataset:
    if "tslayers_results" not in ds.attrs or "score" not in ds:
        raise ValueError(f"{where} is not a tslayers results file (no 'score' variable or "
                         "'tslayers_results' attribute); write one with 'tslayers probe' or "
                         "tslayers.probing.write_results")
    missing = [d for d in SCORE_DIMS if d not in ds["score"].dims]
    if missing or "higher_is_better" not in ds:
        raise ValueError(f"{where}: malformed results (score lacks dims {missing} or "
                         "'higher_is_better' is missing)")
    return ds


def read_results(path: str | Path) -> xr.Dataset:
    """Load a results file fully into memory and check it is one."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"results file '{path}' does not exist")
    try:
        with xr.open_dataset(path, engine="h5netcdf") as f:
            ds = f.load()
    except (OSError, ValueError) as err:
        raise ValueError(f"'{path}' is not a readable netCDF results file: {err}") from None
    return validate_results(ds, f"'{path}'")


LABEL_VARS = ("higher_is_better", "family", "layer_name")


def merge_results(results: list[xr.Dataset]) -> xr.Dataset:
    """Combine results files into one (outer join on every coordinate).

    Different models are stacked along ``model``; the same model probed in several runs with
    different seeds (e.g. one file per pretraining seed) is stacked along ``seed``. Scores for
    the same (model, seed) in two inputs must agree, else ``ValueError``. Seed-free arrays of a
    model found in several inputs (diagnostics, ``optimum``) are averaged over those inputs.
    """
    if not results:
        raise ValueError("merge_results: nothing to merge")
    for i, r in enumerate(results):
        validate_results(r, f"merge_results input {i}")
    seeded = [r[[v for v in r.data_vars if "seed" in r[v].dims]] for r in results]
    try:
        merged = xr.merge(seeded, join="outer", compat="no_conflicts", combine_attrs="override")
    except (xr.MergeError, ValueError) as err:
        raise ValueError(
            "merge_results: two inputs hold different scores for the same model and seed; give "
            f"the models distinct names (probe_encoder(..., model_name=...)). Detail: {err}"
        ) from None
    names = sorted({v for r in results for v in r.data_vars
                    if "seed" not in r[v].dims and v not in LABEL_VARS})
    for name in names:
        arrays = [r[name] for r in results if name in r]
        if len(arrays) == 1:
            merged[name] = arrays[0]
            continue
        stacked = xr.concat(arrays, dim="_run", join="outer", fill_value=np.nan)
        merged[name] = stacked.mean("_run", skipna=True)
        merged[name].attrs = arrays[0].attrs
    for name in LABEL_VARS:
        arrays = [r[name] for r in results if name in r]
        if not arrays:
            continue
        if name == "layer_name":
            arrays = [a.where(a != "") for a in arrays]
        label = arrays[0]
        for a in arrays[1:]:
            label = label.combine_first(a)
        merged[name] = label.fillna("").astype(str) if name == "layer_name" else label
    merged["higher_is_better"] = merged["higher_is_better"].astype(np.int8)
    merged.attrs = dict(results[0].attrs)
    configs = list(dict.fromkeys(r.attrs.get("config", "") for r in results))
    if len(configs) > 1:
        merged.attrs["config"] = "\n---\n".join(configs)
    return merged
