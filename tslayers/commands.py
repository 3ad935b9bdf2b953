"""``tslayers probe CONFIG`` and ``tslayers inspect --module FILE:FACTORY --taps PATTERN``:
probe, write the results file, render its report beside it."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

import torch

from tslayers.config import load_config, save_config, to_dict
from tslayers.probing import ProbeConfig, ProbeRunConfig, probe_encoder, probe_model
from tslayers.probing.pipeline import _yaml
from tslayers.probing.results import write_results
from tslayers.report import render_report


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


def inspect_command(args) -> int:
    """Probe any model: the same pipeline, tasks and controls as tslayers' own encoder."""
    from tslayers.data import load_dataset

    model = load_factory(args.module)
    ds = load_dataset(args.data)
    horizon = 8 if ds.sizes["time"] >= args.context + 8 else 0
    cfg = ProbeConfig(horizons=[1, horizon] if horizon else [1], forecast_from=["last"],
                      max_windows=args.max_windows, context=args.context, progress=True)
    result = probe_model(model, ds, args.taps, cfg, name="model", layout=args.input_layout,
                         reduce=args.reduce)
    result.attrs["config"] = _yaml({"module": args.module, "taps": args.taps, "data": args.data,
                                    "context": args.context, "reduce": args.reduce})
    out = Path(args.out)
    path = write_results(result, out / "results.nc")
    names = result["layer_name"].sel(model="model").values.tolist()
    print("taps:\n" + "\n".join(f"  {i}: {n}" for i, n in enumerate(names) if n))
    md = render_report(result, out / "report")
    print(f"results: {path}\nreport:  {md}")
    return 0
