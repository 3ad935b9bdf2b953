"""``tslayers align``: tune an encoder with an alignment head, then re-probe before and after.

Forecast alignment runs two stages (projector + decoder with the encoder frozen, then everything
with DropPath); dynamics alignment runs one. Both end by probing the original and the aligned
encoder with the same task suite and writing both into one results file.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import xarray as xr

from tslayers.config import load_config, save_config, to_dict
from tslayers.data import DataConfig, SeriesDataModule
from tslayers.io import atomic_path, atomic_write
from tslayers.model import TemporalEncoder
from tslayers.probing import ProbeConfig, probe_sources, write_results
from tslayers.training import TrainConfig, build_trainer, configure_adamw_cosine
from tslayers.training.loop import quiet_lightning

from .ablations import dynamics_ablations, forecast_ablations
from .config import AlignConfig
from .heads import ForecastAligner
from .summary import alignment_summary, gap_closed_beyond


# ---------------------------------------------------------------------------- layer choice
def best_layer_from_results(path: str | Path, target: str, model: str | None = None,
                            min_layer: int = 0) -> int:
    """The layer (>= ``min_layer``) that is best for ``target`` (a task, task prefix or family)
    on the *validation* series of a probing results file, and the reason printed."""
    from tslayers.probing import read_results
    from tslayers.probing.analysis import best_layer, layer_profile

    ds = read_results(path)
    models = [str(m) for m in ds["model"].values if "/" not in str(m)]
    if model is None or model not in models:
        if len(models) != 1:
            raise ValueError(f"results file '{path}' holds models {models}; name one with "
                             "align.name")
        model = models[0]
    layer = best_layer(ds, model, target, min_layer)
    profile = layer_profile(ds, model, target)
    shown = ", ".join(f"L{int(l)} {v:.2f}" for l, v in zip(profile["layer"].values,
                                                            profile.values) if np.isfinite(v))
    print(f"align: layer {layer} chosen for '{target}' on validation series "
          f"(normalised validation score per layer: {shown})", flush=True)
    return layer


# ---------------------------------------------------------------------------- Lightning
class LitAlign(L.LightningModule):
    """Wraps a ForecastAligner or DynamicsAligner; optimises its trainable parameters."""

    def __init__(self, aligner: torch.nn.Module, train_cfg: TrainConfig):
        super().__init__()
        self.aligner = aligner
        self.train_cfg = train_cfg

    def _loss(self, batch: dict) -> dict[str, torch.Tensor]:
        if isinstance(self.aligner, ForecastAligner):
            return {"loss": self.aligner.loss(batch["x"], batch["future"])}
        return self.aligner.losses(batch)

    def training_step(self, batch, _):
        losses = self._loss(batch)
        self.log_dict({f"train/{k}": v for k, v in losses.items()}, prog_bar=True,
                      batch_size=batch["x"].shape[0])
        return losses["loss"]

    def validation_step(self, batch, _):
        losses = self._loss(batch)
        self.log_dict({f"val/{k}": v for k, v in losses.items()}, batch_size=batch["x"].shape[0])

    def configure_optimizers(self):
        return configure_adamw_cosine([self.aligner], self.train_cfg, self.train_cfg.max_steps)


def _fit(aligner: torch.nn.Module, train_cfg: TrainConfig, dm: SeriesDataModule,
         out: Path) -> float:
    L.seed_everything(train_cfg.seed, workers=True, verbose=False)
    module = LitAlign(aligner, train_cfg)
    with quiet_lightning():
        trainer = build_trainer(train_cfg, out)
        trainer.fit(module, datamodule=dm)
        metrics = trainer.validate(module, datamodule=dm, verbose=False)[0]
    return float(metrics["val/loss"])


# ---------------------------------------------------------------------------- entry points
def align(config: AlignConfig, out_dir: str | Path | None = None) -> Path:
    """Train the ablation set of the configured alignment (see :mod:`.ablations`), probe each
    ablation on the same windows and seeds as the original, write ``results.nc`` and
    ``summary.json`` (per ablation: last-layer changes with paired intervals; forecast
    alignment: also the decoders' forecasts scored with GluonTS metrics)."""
    from tslayers.probing import read_results

    if config.checkpoint is None:
        raise ValueError("align.checkpoint is required: a pretrain run folder (with encoder/) "
                         "or an encoder folder written by save_pretrained")
    out = Path(out_dir or config.out.replace("<kind>", config.kind))
    out.mkdir(parents=True, exist_ok=True)
    save_config(config, out / "config.yaml")
    original = TemporalEncoder.from_pretrained(config.checkpoint)
    config = dataclasses.replace(config, name=config.name or Path(config.checkpoint).name,
                                 dynamics=dataclasses.replace(config.dynamics))
    torch.manual_seed(config.stage1.seed)
    if config.kind == "forecast":
        entries, summary = _run_forecast(config, original, out)
    else:
        entries, summary = _run_dynamics(config, original, out)
    for e in entries:
        tag = e.name.split("/align-", 1)[1].replace("/", "-")
        e.encoder.eval().save_pretrained(out / "models" / tag)
    before = _probed_before(config, config.name, read_results)
    if before is None:
        before = probe_sources(original.eval(), config.probe_data, config.probe,
                               model_name=config.name)
    results = _probe_entries(entries, config, before)
    results.attrs["alignment"] = json.dumps({**summary, "before": config.name,
                                             "models": [e.name for e in entries]})
    write_results(results, out / "results.nc")
    summary.update(_summaries(results, config, entries))
    if config.kind == "forecast" and config.score_forecasts:
        summary["forecasts"] = _score_forecasts(config, entries)
    atomic_write(out / "summary.json", json.dumps(summary, indent=2))
    return out


def _run_forecast(config: AlignConfig, original: TemporalEncoder, out: Path):
    dm = SeriesDataModule(_with_horizon(config.data, config.forecast.horizon))
    layer = config.layer
    if layer is None:
        if not config.results:
            raise ValueError("align.layer is not set and align.results names no probing "
                             "results file to choose it from")
        layer = best_layer_from_results(config.results, config.target_task, config.name,
                                        min_layer=1)
    entries = forecast_ablations(original, layer, config, dm, out, _fit)
    _save_head(entries[-1].aligner, out / "head")
    return entries, {"kind": "forecast", "layer": layer, "val_loss_stage1": entries[1].val_loss,
                     "val_loss_stage2": entries[2].val_loss}


def _run_dynamics(config: AlignConfig, original: TemporalEncoder, out: Path):
    dyn = config.dynamics
    if dyn.teacher_layer is None:
        if not config.results:
            raise ValueError("dynamics.teacher_layer is not set and align.results names no "
                             "probing results file to choose it from")
        dyn.teacher_layer = best_layer_from_results(config.results, config.target_task,
                                                    config.name)
    teachers = list(config.teachers or [dyn.locality_teacher])
    teacher_enc, teacher_layer = None, dyn.locality_layer
    if "encoder" in teachers:
        teacher_enc, teacher_layer = _learned_teacher(config)
    modules: dict[int, SeriesDataModule] = {}

    def data_for(teacher: str | None) -> SeriesDataModule:
        data = config.oracle_data if teacher == "latent" and config.oracle_data else config.data
        return modules.setdefault(id(data), SeriesDataModule(data))

    entries = dynamics_ablations(original, config, teachers, data_for, out, _fit, teacher_enc,
                                 teacher_layer)
    return entries, {"kind": "dynamics", "teacher_layer": dyn.teacher_layer,
                     "teachers": {e.name: e.teacher for e in entries},
                     "val_loss": {e.name: e.val_loss for e in entries}}


def _learned_teacher(config: AlignConfig) -> tuple[TemporalEncoder, int]:
    """Another pretrained encoder and its layer (chosen on validation from its own probing
    results for the alignment's target when ``dynamics.locality_layer`` is None)."""
    if not config.teacher_checkpoint:
        raise ValueError("teachers includes 'encoder' but align.teacher_checkpoint is not set")
    encoder = TemporalEncoder.from_pretrained(config.teacher_checkpoint).eval()
    layer = config.dynamics.locality_layer
    if layer is None:
        if not config.teacher_results:
            raise ValueError("dynamics.locality_layer is None and align.teacher_results names "
                             "no probing results file to choose the teacher layer from")
        layer = best_layer_from_results(config.teacher_results, config.target_task,
                                        config.teacher_name)
    return encoder, layer


def _probe_entries(entries: list, config: AlignConfig, before: xr.Dataset) -> xr.Dataset:
    """Probe every ablation (without controls) on the original's windows and seeds; entries
    with the same features as an earlier one take its scores under their own name."""
    from tslayers.probing import merge_results

    cfg = _probe_without_controls(config.probe)
    parts, done = [before], {}
    for e in entries:
        if e.same_features_as in done:
            part = done[e.same_features_as].assign_coords(model=[e.name])
        else:
            part = probe_sources(e.encoder, config.probe_data, cfg, model_name=e.name)
        done[e.name] = part
        parts.append(part)
    results = merge_results(parts)
    labels = {e.name: e.teacher for e in entries}
    results["align_teacher"] = ("model", np.array([labels.get(m, "") for m in
                                                   results["model"].values.tolist()],
                                                  dtype=object))
    return results


def _summaries(results: xr.Dataset, config: AlignConfig, entries: list) -> dict[str, Any]:
    """Per ablation, last-layer changes vs the original (forecast: also vs truncation only)."""
    names = [e.name for e in entries]
    ref = names[0] if config.kind == "forecast" else None
    out: dict[str, Any] = {"target": config.target_task, "ablations": {
        n: {**alignment_summary(results, config.name, n, config.target_task,
                                reference=None if n == ref else ref), "teacher": e.teacher}
        for n, e in zip(names, entries)}}
    if ref:
        share, lo, hi, n = gap_closed_beyond(results, config.name, names[-1], ref,
                                             config.target_task)
        out["beyond_truncation"] = {"share": share, "lo": lo, "hi": hi, "n_tasks": n}
    return out


def _score_forecasts(config: AlignConfig, entries: list) -> dict[str, Any]:
    """Decoders of the frozen-head and full alignments, the forecasting objective's head
    (``forecast_reference``), the truncated encoder + ridge and seasonal naive, on the test
    series of the first probe source with forecasting tasks."""
    from tslayers.objectives import load_objective

    from .forecasts import aligner_fn, objective_fn, ridge_fn, score_forecasts, split_parts

    source = next((s for s in config.probe_data if {"forecast", "auto"} & set(s.tasks)), None)
    if source is None:
        return {"skipped": "no probe source has forecasting tasks"}
    seed, h = config.probe.seeds[0], config.forecast.horizon
    parts = split_parts(source.data, config.probe, seed)
    ctx = int(config.probe.context or source.data.context)
    obs = [p["obs"].transpose("series", "time", "channel").values for p in parts]
    models = {e.name.rsplit("/", 1)[-1] + " decoder": aligner_fn(e.aligner)
              for e in entries if e.aligner is not None}
    models["truncate + ridge"] = ridge_fn(entries[0].encoder, obs[0], obs[1], ctx, h,
                                          config.probe.lambdas)
    if config.forecast_reference:
        ref = TemporalEncoder.from_pretrained(config.forecast_reference).eval()
        objective = load_objective(Path(config.forecast_reference) / "objective", ref.config)
        fn = objective_fn(ref, objective.eval(), h)
        if fn is not None:
            models["forecast objective head"] = fn
    return score_forecasts(models, obs[2], ctx, h, config.forecast_windows, config.forecast_freq,
                           max(config.probe.bootstrap, 1), seed, config.probe.ci)


def _probed_before(config: AlignConfig, name: str, read_results) -> xr.Dataset | None:
    """Reuse the original model's scores from ``results`` when that file holds them (the study
    probes with the same sources, seeds and windows), instead of probing it again."""
    if not (config.reuse_before and config.results):
        return None
    ds = read_results(config.results)
    return ds if name in [str(m) for m in ds["model"].values] else None


def _with_horizon(data: DataConfig, horizon: int) -> DataConfig:
    if data.horizon and data.horizon < horizon:
        raise ValueError(f"forecast.horizon={horizon} is longer than data.horizon={data.horizon}")
    return dataclasses.replace(data, horizon=max(data.horizon, horizon))


def _probe_without_controls(cfg: ProbeConfig) -> ProbeConfig:
    return dataclasses.replace(cfg, controls=[])


def _save_head(aligner: ForecastAligner, directory: Path) -> None:
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    state = {f"projector.{k}": v.contiguous() for k, v in aligner.projector.state_dict().items()}
    state |= {f"decoder.{k}": v.contiguous() for k, v in aligner.decoder.state_dict().items()}
    with atomic_path(directory / "head.safetensors") as tmp:
        save_file(state, str(tmp))
    atomic_write(directory / "config.json", json.dumps(to_dict(aligner.head_config),
                                                            indent=2))


def align_command(args: Any) -> int:
    config = load_config(AlignConfig, args.config, args.overrides)
    out = align(config, args.out)
    summary = json.loads((out / "summary.json").read_text())
    print(f"aligned ({config.kind}, target '{summary['target']}') -> {out}")
    for model, ab in summary["ablations"].items():
        for key, row in ab["scores"].items():
            if row["target"]:
                print(f"  {model} {key}: last layer {row['last_before']:.4g} -> "
                      f"{row['last_after']:.4g} (change {row['change']:+.3g} "
                      f"[{row['change_lo']:+.3g}, {row['change_hi']:+.3g}])")
    beyond = summary.get("beyond_truncation")
    if beyond:
        print(f"  gap closed beyond truncation: {_share(beyond)}")
    return 0


def _share(row: dict) -> str:
    if not np.isfinite(row["share"]):
        return "not defined (no target task has a validation gap above its interval)"
    return f"{row['share']:.0%} [{row['lo']:.0%}, {row['hi']:.0%}]"
