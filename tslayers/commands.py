"""``tslayers probe CONFIG`` and ``tslayers inspect --module FILE:FACTORY --taps PATTERN``:
probe, write the results file, render its report beside it."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from tslayers.config import load_config, save_config, to_dict
from tslayers.io import lock_output
from tslayers.probing import ProbeConfig, ProbeRunConfig, probe_encoder, probe_model
from tslayers.probing.pipeline import _yaml
from tslayers.probing.results import write_results
from tslayers.report import render_report, summary_lines


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
    with lock_output(out, "tslayers probe"):
        save_config(cfg, out / "config.yaml")
        result = probe_encoder(encoder, cfg.data, cfg.probe, model_name=name,
                               objective=objective)
        result.attrs["config"] = _yaml(to_dict(cfg))
        path = write_results(result, out / "results.nc")
        md = render_report(result, out / "report")
    print(f"{summary_lines(md)}\nresults: {path} ({result.attrs.get('probe_seconds')} s)")
    return 0


# ------------------------------------------------------------------------------ inspect
def inspect_command(args) -> int:
    """Probe any model: the same pipeline, tasks and controls as tslayers' own encoder."""
    from tslayers.data import load_dataset
    from tslayers.probing.factory import load_factory, parse_module_args
    from tslayers.probing.features import check_targets
    from tslayers.probing.rnn import unroll_rnns

    ds = load_dataset(args.data)
    targets = [t.strip() for t in (args.targets or "").split(",") if t.strip()]
    check_targets(ds, targets, "--targets")  # before the factory builds (maybe trains) a model
    model = load_factory(args.module, parse_module_args(args.module_arg or []))
    other = load_factory(args.compare, parse_module_args(args.compare_arg or [], "--compare-arg"),
                         "--compare") if args.compare else None
    if args.unroll_rnn:
        model, other = unroll_rnns(model), other if other is None else unroll_rnns(other)
    steps = ds.sizes["time"]
    context = args.context or min(256, steps - 1)
    if context < 2 or context >= steps:
        raise ValueError(f"--context {context} does not fit series of {steps} steps with a "
                         f"one-step forecast target; use --context {max(2, steps - 1)} or less")
    horizon = 8 if steps >= context + 8 else 0
    cfg = ProbeConfig(horizons=[1, horizon] if horizon else [1], forecast_from=["last"],
                      max_windows=args.max_windows, context=context, progress=True,
                      targets=targets)
    result = probe_model(model, ds, args.taps, cfg, name="model", layout=args.input_layout,
                         reduce=args.reduce, compare=other, compare_taps=args.compare_taps)
    compared = {"compare": args.compare, "compare_taps": args.compare_taps or args.taps}
    result.attrs["config"] = _yaml({"module": args.module, "taps": args.taps, "data": args.data,
                                    "targets": targets, "context": context,
                                    "reduce": args.reduce,
                                    **(compared if other is not None else {})})
    out = Path(args.out)
    path = write_results(result, out / "results.nc")
    for who in ["model"] + (["compare"] if other is not None else []):
        names = result["layer_name"].sel(model=who).values.tolist()
        print(f"taps ({who}):\n" + "\n".join(f"  {i}: {n}" for i, n in enumerate(names) if n))
    md = render_report(result, out / "report")
    print(f"{summary_lines(md)}\nresults: {path}")
    return 0
