"""The results file: one xarray Dataset per probe run or study, netCDF on disk.

Variables (``model`` names a source and its controls: ``<name>``, ``<name>/untrained``,
``<name>/raw-window``, ``<name>/periodogram``, ``<name>/minirocket``, ``<name>/mlp``,
``<name>/permuted``, ``<name>/untrained/permuted``):

- ``score``, ``score_lo``, ``score_hi`` (model, layer, task, metric, seed, split): scores on
  the ``val`` and ``test`` series with percentile intervals from the bootstrap over series;
  ``score_boot`` (..., boot): the replicates (shared draws, so differences are paired);
- ``pvalue`` (model, layer, task, metric, seed): permutation p-value of the primary metric on
  test; ``optimum`` (model, task, metric, seed, split): the Bayes-optimal (Kalman) score on the
  same rows (LGSSM data);
- the analysis (:mod:`tslayers.probing.analysis`): ``selected_layer``, ``oracle_layer``,
  ``selected_score``/``_lo``/``_hi``, ``gap``/``gap_lo``/``gap_hi`` (selected - last),
  ``vs_control``/``_lo``/``_hi`` and ``best_control`` (model, task, metric, seed);
- ``higher_is_better`` (metric) int8, ``family`` (task) str, ``layer_name`` (model, layer);
  ``align_teacher`` (model) str: the teacher of an alignment ablation ("" for other models);
- diagnostics: ``cka`` and ``cka_cross`` (model, layer, layer2; cross: against the untrained
  twin), ``cka_compare`` (model, model_other, layer, layer_other; models probed together, see
  :mod:`tslayers.probing.compare`), ``effective_rank``, ``norm_outlier_frac``,
  ``mean_token_sim`` (model, layer), ``attn_entropy``, ``attn_distance``, ``attn_prefix_mass``,
  ``attn_received_max`` (model, layer, head).

Attributes: ``tslayers_results`` (format version), ``ci``, ``config`` (YAML), ``versions``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from .metrics import HIGHER_IS_BETTER

FORMAT_VERSION = 2
SCORE_DIMS = ("model", "layer", "task", "metric", "seed", "split")


def package_versions() -> str:
    import importlib.metadata as md

    out = []
    for pkg in ("tslayers", "torch", "numpy", "xarray", "scipy", "gluonts", "scikit-learn"):
        try:
            out.append(f"{pkg}: {md.version(pkg)}")
        except md.PackageNotFoundError:
            continue
    return "\n".join(out)


def records_to_dataset(records: list[dict], optimum: list[dict], cfg) -> xr.Dataset:
    """Score records {model, layer, task, metric, seed, split, score, boot, pvalue} (and the
    optimum's, without layer) -> the score variables."""
    from .metrics import interval

    if not records:
        raise ValueError("no scores to write: every task was skipped")
    df = pd.DataFrame.from_records(records)
    keys = list(SCORE_DIMS)
    if df.duplicated(keys).any():
        raise ValueError(f"duplicate score records: {df[df.duplicated(keys)][keys].head()}")
    n_boot = max(len(b) for b in df["boot"])
    boots = np.stack([np.resize(np.asarray(b, dtype=np.float32), n_boot) for b in df["boot"]])
    bounds = np.array([interval(b, cfg.ci) for b in boots]) if cfg.bootstrap > 0 else \
        np.full((len(df), 2), np.nan)
    df["score_lo"], df["score_hi"] = bounds[:, 0], bounds[:, 1]
    index = pd.MultiIndex.from_frame(df[keys])
    ds = pd.DataFrame({"score": df["score"].to_numpy(), "score_lo": df["score_lo"].to_numpy(),
                       "score_hi": df["score_hi"].to_numpy()}, index=index).to_xarray()
    where = tuple(pd.Index(ds[d].values).get_indexer(df[d]) for d in keys)
    full = np.full((*(ds.sizes[d] for d in keys), n_boot if cfg.bootstrap > 0 else 0), np.nan,
                   dtype=np.float32)
    if cfg.bootstrap > 0:
        full[where] = boots
    ds["score_boot"] = ((*keys, "boot"), full)
    pv = df[df["split"] == "test"].set_index(keys[:-1])["pvalue"]
    ds["pvalue"] = pv.to_xarray()
    ds = ds.transpose(*SCORE_DIMS, "boot")
    if optimum:
        od = pd.DataFrame.from_records(optimum).drop(columns="boot")
        ds["optimum"] = od.set_index(["model", "task", "metric", "seed", "split"])["score"] \
            .to_xarray()
    metrics = [str(m) for m in ds["metric"].values]
    unknown = [m for m in metrics if m not in HIGHER_IS_BETTER]
    if unknown:
        raise ValueError(f"metrics {unknown} have no known direction; add them to "
                         "tslayers.probing.metrics.METRICS")
    ds["higher_is_better"] = ("metric", np.array([HIGHER_IS_BETTER[m] for m in metrics],
                                                 dtype=np.int8))
    ds.attrs["ci"] = cfg.ci
    return ds


def finalize(ds: xr.Dataset, *, config_yaml: str = "") -> xr.Dataset:
    """Sort coordinates, add the family of each task and the provenance attributes."""
    from .tasks import family_of

    ds = ds.sortby("layer")
    ds["family"] = ("task", np.array([family_of(str(t)) for t in ds["task"].values],
                                     dtype=object))
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
    """Write atomically (a unique temporary file in the same folder, then rename)."""
    from tslayers.io import atomic_path

    with atomic_path(path) as tmp:
        _encodable(ds).to_netcdf(tmp, engine="h5netcdf")
    return Path(path)


def validate_results(ds: xr.Dataset, where: str = "dataset") -> xr.Dataset:
    if "tslayers_results" not in ds.attrs or "score" not in ds:
        raise ValueError(f"{where} is not a tslayers results file (no 'score' variable or "
                         "'tslayers_results' attribute); write one with 'tslayers probe' or "
                         "tslayers.probing.write_results")
    if ds.attrs["tslayers_results"] != FORMAT_VERSION:
        raise ValueError(f"{where} has results format {ds.attrs['tslayers_results']}, this "
                         f"tslayers reads format {FORMAT_VERSION}; re-run the probe")
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


LABEL_VARS = ("higher_is_better", "family", "layer_name", "align_teacher")
STRING_LABELS = ("layer_name", "align_teacher")  # "" means unset


def merge_results(results: list[xr.Dataset]) -> xr.Dataset:
    """Combine results files into one (outer join on every coordinate).

    Different models are stacked along ``model``; the same model probed in several runs with
    different seeds (e.g. one file per pretraining seed) is stacked along ``seed``. Scores for
    the same (model, seed) in two inputs must agree, else ``ValueError``. Seed-free arrays of a
    model found in several inputs (diagnostics, ``optimum``) are averaged over those inputs.
    """
    from .analysis import ANALYSIS_VARS, annotate

    if not results:
        raise ValueError("merge_results: nothing to merge")
    for i, r in enumerate(results):
        validate_results(r, f"merge_results input {i}")
    results = [r.drop_vars([v for v in ANALYSIS_VARS if v in r]) for r in results]
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
        if name in STRING_LABELS:
            arrays = [a.where(a != "") for a in arrays]
        label = arrays[0]
        for a in arrays[1:]:
            label = label.combine_first(a)
        merged[name] = label.fillna("").astype(str) if name in STRING_LABELS else label
    merged["higher_is_better"] = merged["higher_is_better"].astype(np.int8)
    merged.attrs = dict(results[0].attrs)
    configs = list(dict.fromkeys(r.attrs.get("config", "") for r in results))
    if len(configs) > 1:
        merged.attrs["config"] = "\n---\n".join(configs)
    return annotate(merged, float(merged.attrs.get("ci", 0.9)))
