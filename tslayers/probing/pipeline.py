"""``probe_encoder``: one encoder (plus its controls) x data x task families -> results Dataset."""

from __future__ import annotations

import copy
import dataclasses
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import xarray as xr

from tslayers.config import to_dict
from tslayers.data.config import DataConfig

from .config import ProbeConfig
from .diagnostics import ATTN_FIELDS, minibatch_cka, stack_heads
from .features import Features, Windows, extract_features, raw_patch_features, sample_windows
from .metrics import HIGHER_IS_BETTER
from .results import finalize, merge_results, scores_to_dataset
from .tasks import RUNNERS, Context, Split, kalman_optimum, resolve_tasks


def _load(data, cfg: ProbeConfig) -> tuple[xr.Dataset, int, int | None]:
    """Dataset, context and stride from an ``xr.Dataset`` or a ``DataConfig``."""
    if isinstance(data, xr.Dataset):
        ds, context, stride = data, cfg.context, cfg.stride
        if context is None:
            context = min(256, ds.sizes["time"] - max(cfg.horizons))
    else:
        from tslayers.data import load_dataset

        ds = load_dataset(data.name, **data.params)
        context = cfg.context or data.context
        stride = cfg.stride or data.stride
    from tslayers.data import validate_dataset

    return validate_dataset(ds), int(context), stride


def split_windows(ds: xr.Dataset, win: Windows, cfg: ProbeConfig, seed: int) -> Split:
    """Split the window sample by series (train / val / test never share a series)."""
    from tslayers.data.windows import split_series

    n = ds.sizes["series"]
    if n < 3:
        raise ValueError(f"too few series for a split by series: the dataset has {n}, a "
                         "train/val/test split needs at least 3 (10+ recommended); use more "
                         "series (data.params.n_series)")
    parts = split_series(ds, cfg.val_fraction, cfg.test_fraction, seed)
    masks = [np.isin(win.series, p["series"].values) for p in parts]
    for name, m, p in zip(("train", "val", "test"), masks, parts):
        if p.sizes["series"] == 0 or not m.any():
            raise ValueError(
                f"too few series for the split: the '{name}' split has {p.sizes['series']} series "
                f"and {int(m.sum())} sampled windows (dataset: {n} series, val_fraction="
                f"{cfg.val_fraction}, test_fraction={cfg.test_fraction}); use more series or "
                "larger fractions")
    return Split(*masks)


def _run_tasks(feats: Features, win: Windows, split: Split, cfg: ProbeConfig, seed: int,
               tasks: list[str]) -> list:
    ctx = Context(feats, win, split, cfg, seed)
    records = []
    for task in tasks:
        records += RUNNERS[task](ctx)
    return records


def _diag_dataset(name: str, feats: Features, layer_names: list[str]) -> xr.Dataset:
    layers = feats.layers
    ds = xr.Dataset(coords={"model": [name], "layer": layers, "layer2": layers})
    ds["layer_name"] = (("model", "layer"), np.array([layer_names], dtype=object))
    if not feats.diag:
        return ds
    for key in ("effective_rank", "norm_outlier_frac", "mean_token_sim"):
        ds[key] = (("model", "layer"), feats.diag[key][None])
    ds["cka"] = (("model", "layer", "layer2"), feats.diag["cka"][None])
    if feats.n_heads:
        heads = stack_heads(feats.attn, layers, feats.n_heads)
        ds = ds.assign_coords(head=np.arange(feats.n_heads))
        for key in ATTN_FIELDS:
            ds[key] = (("model", "layer", "head"), heads[key][None])
    return ds


def probe_encoder(
    encoder: torch.nn.Module,
    data: xr.Dataset,
    config: ProbeConfig | None = None,
    *,
    model_name: str,
    objective=None,
) -> xr.Dataset:
    """Probe every layer of ``encoder`` (a ``TemporalEncoder``) on every configured task.

    ``data``: an in-memory dataset or a ``DataConfig``. Adds the configured controls as extra
    ``model`` entries. ``objective`` with a ``decode(tokens, out)`` method adds the forecast lens.
    Returns the results Dataset described in :mod:`tslayers.probing.results`.
    """
    cfg = config or ProbeConfig()
    t0 = time.perf_counter()
    ds, context, stride = _load(data, cfg)
    lens = objective is not None and hasattr(objective, "decode")
    wants_future = lens or "forecast" in cfg.tasks or "auto" in cfg.tasks
    horizon = max(cfg.horizons) if wants_future else 0
    win = sample_windows(ds, context, horizon, stride, cfg.max_windows, cfg.seeds[0])
    tasks = resolve_tasks(cfg.tasks, win, ds.attrs.get("name", "dataset"))
    if not tasks:
        raise ValueError("no task applies to this dataset; name tasks in probe.tasks to see "
                         "what each one needs")
    impute = "impute" in tasks
    common = dict(batch_size=cfg.batch_size, device=cfg.device, impute=impute,
                  outlier_factor=cfg.outlier_factor, seed=cfg.seeds[0], progress=cfg.progress)
    models: dict[str, Features] = {
        model_name: extract_features(encoder, win, diagnostics=cfg.diagnostics,
                                     objective=objective, desc=model_name, **common)}
    if "untrained" in cfg.controls:
        torch.manual_seed(cfg.seeds[0])
        twin = type(encoder)(copy.deepcopy(encoder.config))
        models[f"{model_name}/untrained"] = extract_features(
            twin, win, diagnostics=cfg.diagnostics, desc=f"{model_name}/untrained", **common)
    if "raw-patches" in cfg.controls:
        models[f"{model_name}/raw-patches"] = raw_patch_features(encoder, win, impute=impute,
                                                                 seed=cfg.seeds[0])
    run_tasks = tasks + (["lens"] if lens else [])
    records: list[dict] = []
    optimum: dict[tuple[str, str], list[float]] = {}
    is_lgssm = all(k in ds for k in ("A", "Cobs", "Q", "R", "m0", "P0")) and win.latent is not None
    for seed in cfg.seeds:
        split = split_windows(ds, win, cfg, seed)
        for name, feats in models.items():
            tlist = [t for t in run_tasks if not (t == "lens" and name != model_name)]
            for r in _run_tasks(feats, win, split, cfg, seed, tlist):
                model = f"{model_name}/{r.control}" if r.control else name
                records.append(dict(model=model, layer=r.layer, task=r.task, metric=r.metric,
                                    seed=seed, score=r.score, lo=r.lo, hi=r.hi))
        if is_lgssm:
            opt = kalman_optimum(ds, win, models[model_name], split.test,
                                 sorted(set(cfg.horizons)))
            for key, value in opt.items():
                optimum.setdefault(key, []).append(value)
            records += _fraction_of_optimum(records, opt, seed)
    result = scores_to_dataset(records)
    if optimum:
        by_seed = xr.DataArray(np.nan, coords={"task": result["task"], "metric": result["metric"],
                                               "seed": result["seed"]},
                               dims=("task", "metric", "seed"))
        for (task, metric), values in optimum.items():
            if task in by_seed["task"] and metric in by_seed["metric"]:
                by_seed.loc[{"task": task, "metric": metric}] = values
        by_seed.attrs["description"] = "Kalman-optimal score on each seed's test windows"
        result["optimum_by_seed"] = by_seed
        result["optimum"] = by_seed.mean("seed")
        result["optimum"].attrs["description"] = "Kalman-optimal score, mean over seeds"
    diags = [_diag_dataset(n, f, _layer_names(encoder, f, n)) for n, f in models.items()]
    result = xr.merge([result, *diags], join="outer", compat="no_conflicts")
    untrained = f"{model_name}/untrained"
    if cfg.diagnostics and untrained in models:
        result["cka_cross"] = _cross_cka(models, model_name, untrained, result)
    result["layer_name"] = result["layer_name"].fillna("").astype(str)
    config_yaml = _yaml({"probe": to_dict(cfg), "model": model_name,
                         "encoder": to_dict(getattr(encoder, "config", {})),
                         "data": ds.attrs.get("name", "dataset")})
    result = finalize(result, config_yaml=config_yaml)
    result.attrs["probe_seconds"] = round(time.perf_counter() - t0, 2)
    return result


def _layer_names(encoder, feats: Features, name: str) -> list[str]:
    if name.endswith("/raw-patches"):
        return ["patches"]
    from tslayers.model import tap_name

    return [tap_name(l) for l in feats.layers]


def _fraction_of_optimum(records: list[dict], opt: dict, seed: int) -> list[dict]:
    """Share of the achievable score: R^2 / R^2_opt, MSE_opt / MSE."""
    out = []
    for r in records:
        key = (r["task"], r["metric"])
        if r["seed"] != seed or key not in opt:
            continue
        if r["task"] == "latent" and r["metric"] == "r2":
            frac = r["score"] / opt[key]
        elif r["task"].startswith("forecast/") and r["metric"] == "mse":
            frac = opt[key] / r["score"]
        else:
            continue
        out.append(dict(r, metric="fraction_of_optimum", score=frac, lo=np.nan, hi=np.nan))
    return out


def _cross_cka(models: dict[str, Features], a: str, b: str, result: xr.Dataset) -> xr.DataArray:
    fa, fb = models[a], models[b]
    pooled = {("a", l): t.mean(1) for l, t in fa.tokens.items()}
    pooled.update({("b", l): t.mean(1) for l, t in fb.tokens.items()})
    m = minibatch_cka(pooled)
    na = len(fa.layers)
    block = m[:na, na:]
    da = xr.DataArray(np.nan, coords={"model": result["model"], "layer": result["layer"],
                                      "layer2": result["layer2"]},
                      dims=("model", "layer", "layer2"))
    da.loc[{"model": a, "layer": fa.layers, "layer2": fb.layers}] = block
    da.loc[{"model": b, "layer": fb.layers, "layer2": fa.layers}] = block.T
    da.attrs["description"] = f"linear CKA between each model's layer and layer2 of its twin " \
                              f"({a} <-> {b})"
    return da


def _yaml(obj) -> str:
    import yaml

    return yaml.safe_dump(obj, sort_keys=False)


__all__ = ["probe_encoder", "split_windows", "HIGHER_IS_BETTER"]


@dataclass
class ProbeSource:
    """A dataset to probe on, with the tasks to run there. Tasks of different sources must not
    overlap (e.g. forecasting on LGSSM for the Kalman bound, classification on the mixture)."""

    data: DataConfig = field(default_factory=DataConfig)
    tasks: list[str] = field(default_factory=lambda: ["auto"])


def probe_sources(encoder: torch.nn.Module, sources: list[ProbeSource], config: ProbeConfig,
                  *, model_name: str, objective=None) -> xr.Dataset:
    """Probe one encoder on every source with that source's tasks; one merged Dataset.

    The forecast lens (``objective``) runs on the sources that forecast.
    """
    parts = []
    for source in sources:
        cfg = dataclasses.replace(config, tasks=list(source.tasks))
        lens = objective if any(t in ("auto", "forecast") for t in source.tasks) else None
        parts.append(probe_encoder(encoder, source.data, cfg, model_name=model_name,
                                   objective=lens))
    return parts[0] if len(parts) == 1 else merge_results(parts)
