"""``tslayers probe CONFIG`` and ``tslayers inspect --module FILE:FACTORY --taps PATTERN``."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

import numpy as np
import torch
import xarray as xr
from einops import rearrange
from tqdm.auto import tqdm

from tslayers.config import load_config, save_config, to_dict

from .config import ProbeConfig, ProbeRunConfig
from .diagnostics import MinibatchCKA, effective_rank_from_gram, mean_token_sim
from .features import Features, sample_windows
from .pipeline import _yaml, probe_encoder, split_windows
from .results import finalize, scores_to_dataset, write_results
from .taps import LayerTaps


# ------------------------------------------------------------------------------ probe
def load_encoder(checkpoint: str | None, config, seed: int = 0):
    """(encoder, objective or None, name) from a pretrain run dir, an encoder dir, or None."""
    from tslayers.model import TemporalEncoder

    if checkpoint is None:
        torch.manual_seed(seed)
        return TemporalEncoder(config), None, "untrained"
    path = Path(checkpoint)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint '{path}' does not exist; give a pretrain run "
                                "directory (holding encoder/) or an encoder/ directory")
    enc_dir = path / "encoder" if (path / "encoder").is_dir() else path
    encoder = TemporalEncoder.from_pretrained(enc_dir)
    objective = None
    obj_dir = enc_dir.parent / "objective"
    if obj_dir.is_dir():
        try:
            from tslayers.objectives import load_objective

            objective = load_objective(obj_dir, encoder.config)
        except (ImportError, AttributeError) as err:  # objectives not available in this build
            print(f"note: objective in '{obj_dir}' not loaded ({err}); no forecast lens",
                  file=sys.stderr)
    name = path.name if path.name != "encoder" else path.parent.name
    return encoder, objective, name


def probe_command(args) -> int:
    cfg = load_config(ProbeRunConfig, args.config, list(getattr(args, "overrides", []) or []))
    if getattr(args, "out", None):
        cfg.out = args.out
    encoder, objective, name = load_encoder(cfg.checkpoint, cfg.encoder, cfg.seed)
    name = cfg.name or name
    if cfg.checkpoint is None and "untrained" in cfg.probe.controls:
        cfg.probe.controls = [c for c in cfg.probe.controls if c != "untrained"]  # it is one
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")
    result = probe_encoder(encoder, cfg.data, cfg.probe, model_name=name, objective=objective)
    result.attrs["config"] = _yaml(to_dict(cfg))
    path = write_results(result, out / "results.nc")
    from tslayers.report import render_report

    md = render_report(result, out / "report")
    print(f"results: {path}\nreport:  {md}  ({result.attrs.get('probe_seconds')} s)")
    return 0


# ------------------------------------------------------------------------------ inspect
def load_factory(spec: str) -> torch.nn.Module:
    """Build a model from ``FILE.py:FACTORY`` or ``package.module:FACTORY`` (called with no
    arguments; must return an ``nn.Module``)."""
    if ":" not in spec:
        raise ValueError(f"--module '{spec}' must look like FILE.py:FACTORY or "
                         "package.module:FACTORY")
    target, func = spec.rsplit(":", 1)
    if target.endswith(".py"):
        path = Path(target)
        if not path.is_file():
            raise FileNotFoundError(f"--module file '{path}' does not exist")
        mod_spec = importlib.util.spec_from_file_location(f"_tslayers_user_{path.stem}", path)
        module = importlib.util.module_from_spec(mod_spec)
        mod_spec.loader.exec_module(module)
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as err:
            raise ValueError(f"--module: cannot import '{target}': {err}") from None
    if not hasattr(module, func):
        raise ValueError(f"--module: '{target}' has no '{func}'; available callables: "
                         f"{[n for n in dir(module) if callable(getattr(module, n))][:20]}")
    model = getattr(module, func)()
    if not isinstance(model, torch.nn.Module):
        raise ValueError(f"--module: {spec}() returned {type(model).__name__}, not an nn.Module")
    return model


def _layout(x: torch.Tensor, layout: str) -> torch.Tensor:
    if layout == "btc":
        return x
    if layout == "bct":
        return rearrange(x, "b t c -> b c t")
    return rearrange(x, "b t c -> (b c) t")  # "bt": channels as separate series


def tap_model(model: torch.nn.Module, x: np.ndarray, patterns: str, *, reduce: str = "mean",
              layout: str = "btc", batch_size: int = 64, progress: bool = True,
              offload: str | Path | None = None) -> tuple[list[str], dict[int, np.ndarray]]:
    """Tap an arbitrary model over windows ``x`` (W, T, C). NaNs are replaced by 0 (generic
    models have no missing-value mask). Returns tap names and ``{index: (W, N, F)}`` token
    features (N = 1 for pooled reductions; channels concatenated for layout 'bt')."""
    model = model.eval()
    c = x.shape[-1]
    feats: dict[int, list[np.ndarray]] = {}
    with LayerTaps(model, patterns, reduce=reduce, offload=offload) as taps:
        names = taps.names
        for start in tqdm(range(0, len(x), batch_size), desc="inspect", disable=not progress,
                          leave=False):
            xb = torch.from_numpy(np.nan_to_num(x[start : start + batch_size]))
            out = taps.run(model, _layout(xb, layout))
            for i, name in enumerate(names):
                t = out[name]
                if t.dim() == 2:
                    t = t[:, None]
                if layout == "bt":
                    t = rearrange(t, "(b c) n d -> b n (c d)", c=c)
                feats.setdefault(i, []).append(t.numpy())
    return names, {i: np.concatenate(v) for i, v in feats.items()}


def inspect_command(args) -> int:
    from tslayers.data import load_dataset

    model = load_factory(args.module)
    ds = load_dataset(args.data)
    horizon = 8 if ds.sizes["time"] >= args.context + 8 else 0
    cfg = ProbeConfig(horizons=[1, horizon] if horizon else [1], forecast_from=["last"],
                      controls=["permuted"], max_windows=args.max_windows, context=args.context,
                      progress=True)
    win = sample_windows(ds, args.context, horizon, None, args.max_windows, 0)
    names, tokens = tap_model(model, win.x, args.taps, reduce=args.reduce,
                              layout=args.input_layout)
    obs = np.isfinite(win.x)
    cnt = np.maximum(obs.sum(1), 1)
    loc = np.where(obs, win.x, 0).sum(1) / cnt
    var = (np.where(obs, win.x - loc[:, None], 0) ** 2).sum(1) / cnt
    feats = Features(layers=list(tokens), tokens=tokens, loc=loc, scale=np.sqrt(var + 1e-5),
                     patch_end=np.zeros(1, dtype=int), patch_len=1)
    from .pipeline import _run_tasks

    tasks = [t for t in ("forecast", "classify") if
             (t == "forecast" and win.future is not None) or
             (t == "classify" and win.label is not None and len(np.unique(win.label)) > 1)]
    records = []
    if tasks:
        split = split_windows(ds, win, cfg, 0)
        for r in _run_tasks(feats, win, split, cfg, 0, tasks):
            model_name = "model/permuted" if r.control else "model"
            records.append(dict(model=model_name, layer=r.layer, task=r.task, metric=r.metric,
                                seed=0, score=r.score, lo=r.lo, hi=r.hi))
    else:
        print("note: the data has neither labels nor a forecast horizon; diagnostics only",
              file=sys.stderr)
        records.append(dict(model="model", layer=0, task="none", metric="mse", seed=0,
                            score=np.nan, lo=np.nan, hi=np.nan))
    result = scores_to_dataset(records)
    layers = list(tokens)
    cka = MinibatchCKA()
    pooled = {i: t.mean(1) for i, t in tokens.items()}
    for s in range(0, len(win), 64):
        cka.update({i: v[s : s + 64] for i, v in pooled.items()})
    diag = xr.Dataset(coords={"model": ["model"], "layer": layers, "layer2": layers})
    diag["layer_name"] = (("model", "layer"), np.array([names], dtype=object))
    diag["cka"] = (("model", "layer", "layer2"), cka.result()[None])
    diag["effective_rank"] = (("model", "layer"), np.array([[effective_rank_from_gram(
        rearrange(t, "w n d -> (w n) d").T.astype(np.float64)
        @ rearrange(t, "w n d -> (w n) d").astype(np.float64)) for t in tokens.values()]]))
    if args.reduce == "tokens":
        diag["mean_token_sim"] = (("model", "layer"),
                                  np.array([[mean_token_sim(t) for t in tokens.values()]]))
    result = xr.merge([result, diag], join="outer", compat="no_conflicts")
    result["layer_name"] = result["layer_name"].fillna("").astype(str)
    result = finalize(result, config_yaml=_yaml({"module": args.module, "taps": args.taps,
                                                 "data": args.data, "context": args.context,
                                                 "reduce": args.reduce}))
    out = Path(args.out)
    path = write_results(result, out / "results.nc")
    from tslayers.report import render_report

    md = render_report(result, out / "report")
    print("taps:\n" + "\n".join(f"  {i}: {n}" for i, n in enumerate(names)))
    print(f"results: {path}\nreport:  {md}")
    return 0
