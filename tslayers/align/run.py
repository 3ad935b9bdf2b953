"""``tslayers align``: tune an encoder with an alignment head, then re-probe before and after.

Forecast alignment runs two stages (projector + decoder with the encoder frozen, then everything
with DropPath); dynamics alignment runs one. Both end by probing the original and the aligned
encoder with the same task suite and writing both into one results file.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import xarray as xr

from tslayers.config import load_config, save_config, to_dict
from tslayers.data import DataConfig, SeriesDataModule
from tslayers.io import atomic_path, atomic_write
from tslayers.model import EncoderConfig, TemporalEncoder
from tslayers.probing import ProbeConfig, ProbeSource
from tslayers.training import TrainConfig, build_trainer, configure_adamw_cosine

from .heads import DynamicsAligner, DynamicsLossConfig, ForecastAligner, ForecastHeadConfig

KINDS = ("forecast", "dynamics")


def _short_train(**kw) -> TrainConfig:
    base = dict(max_steps=200, warmup_steps=20, val_check_interval=50, ckpt_every_n_steps=50,
                lr=1e-3, progress_bar=False)
    return TrainConfig(**{**base, **kw})


def _default_stage1() -> TrainConfig:
    return _short_train()


def _default_stage2() -> TrainConfig:
    return _short_train(lr=2e-4)


@dataclass
class AlignConfig:
    """One alignment run. ``layer`` / ``dynamics.teacher_layer`` of None are chosen from the
    probing results file ``results`` (the best layer for ``target_task``)."""

    kind: str = "forecast"
    objective: str = "auto"  # in a study: whose encoder to align; auto = largest val gap
    checkpoint: str | None = None  # pretrain run dir or encoder dir (required)
    results: str | None = None  # probing results file for automatic layer choice
    target_task: str | None = None  # task, task prefix or family; default by kind:
    # "forecasting" (forecast alignment) or "dense" (dynamics alignment)
    name: str | None = None  # model name in the results; default: checkpoint folder name
    layer: int | None = None  # forecast alignment: truncate here
    drop_path: float = 0.1  # stage-2 (or dynamics) regularisation
    data: DataConfig = field(default_factory=DataConfig)
    encoder: EncoderConfig | None = None  # unused when a checkpoint is given (kept for studies)
    forecast: ForecastHeadConfig = field(default_factory=ForecastHeadConfig)
    dynamics: DynamicsLossConfig = field(default_factory=DynamicsLossConfig)
    stage1: TrainConfig = field(default_factory=_default_stage1)  # head / dynamics training
    stage2: TrainConfig = field(default_factory=_default_stage2)  # forecast: tune everything
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    probe_data: list[ProbeSource] = field(default_factory=list)  # empty: re-probe on ``data``
    reuse_before: bool = False  # take the original's scores from ``results`` (same probe setup)
    out: str = "runs/align/<kind>"

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"align.kind='{self.kind}': choose one of {KINDS}")
        if not 0.0 <= self.drop_path < 1.0:
            raise ValueError("align.drop_path must lie in [0, 1)")
        if self.target_task is None:
            self.target_task = "forecasting" if self.kind == "forecast" else "dense"
        if not self.probe_data:
            self.probe_data = [ProbeSource(data=self.data, tasks=list(self.probe.tasks))]


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
    trainer = build_trainer(train_cfg, out)
    trainer.fit(module, datamodule=dm)
    metrics = trainer.validate(module, datamodule=dm, verbose=False)[0]
    return float(metrics["val/loss"])


# ---------------------------------------------------------------------------- entry points
def align(config: AlignConfig, out_dir: str | Path | None = None) -> Path:
    """Train the configured alignment, re-probe, write ``results.nc`` and ``summary.json``."""
    from tslayers.probing import merge_results, probe_sources, read_results, write_results

    if config.checkpoint is None:
        raise ValueError("align.checkpoint is required: a pretrain run folder (with encoder/) "
                         "or an encoder folder written by save_pretrained")
    out = Path(out_dir or config.out.replace("<kind>", config.kind))
    out.mkdir(parents=True, exist_ok=True)
    save_config(config, out / "config.yaml")
    original = TemporalEncoder.from_pretrained(config.checkpoint)
    name = config.name or Path(config.checkpoint).name
    torch.manual_seed(config.stage1.seed)

    if config.kind == "forecast":
        data_cfg = _with_horizon(config.data, config.forecast.horizon)
        dm = SeriesDataModule(data_cfg)
        layer = config.layer
        if layer is None:
            if not config.results:
                raise ValueError("align.layer is not set and align.results names no probing "
                                 "results file to choose it from")
            layer = best_layer_from_results(config.results, config.target_task, name, min_layer=1)
        aligner = ForecastAligner(original, layer, config.forecast)
        aligner.set_encoder_trainable(False)
        stage1 = _fit(aligner, config.stage1, dm, out / "stage1")
        aligner.set_encoder_trainable(True)
        aligner.encoder.set_drop_path(config.drop_path)
        stage2 = _fit(aligner, config.stage2, dm, out / "stage2")
        aligned = aligner.encoder
        summary: dict[str, Any] = {"kind": "forecast", "layer": layer,
                                   "val_loss_stage1": stage1, "val_loss_stage2": stage2}
        _save_head(aligner, out / "head")
    else:
        dyn = config.dynamics
        if dyn.teacher_layer is None:
            if not config.results:
                raise ValueError("dynamics.teacher_layer is not set and align.results names no "
                                 "probing results file to choose it from")
            dyn.teacher_layer = best_layer_from_results(config.results, config.target_task, name)
        dm = SeriesDataModule(config.data)
        student = TemporalEncoder.from_pretrained(config.checkpoint)
        student.set_drop_path(config.drop_path)
        aligner = DynamicsAligner(student, dyn)
        loss = _fit(aligner, config.stage1, dm, out / "train")
        aligned = aligner.student
        summary = {"kind": "dynamics", "teacher_layer": dyn.teacher_layer, "val_loss": loss}
    aligned.set_drop_path(0.0)
    aligned.eval().save_pretrained(out / "encoder")

    after_name = f"{name}+align-{config.kind}"
    before = _probed_before(config, name, read_results)
    if before is None:
        before = probe_sources(original.eval(), config.probe_data, config.probe, model_name=name)
    after_cfg = _probe_without_controls(config.probe)
    after = probe_sources(aligned, config.probe_data, after_cfg, model_name=after_name)
    results = merge_results([before, after])
    results.attrs["alignment"] = json.dumps({**summary, "before": name, "after": after_name})
    write_results(results, out / "results.nc")
    summary.update(alignment_summary(results, name, after_name, config.target_task))
    atomic_write(out / "summary.json", json.dumps(summary, indent=2))
    return out


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


def alignment_summary(results: xr.Dataset, before: str, after: str,
                      target: str) -> dict[str, Any]:
    """Per task (primary metric): what alignment changed *at the output*: the last layer's test
    score after minus before, with a paired bootstrap interval over test series (both models
    are scored on the same windows with the same series draws). ``gap_closed`` = change / the
    original's selected-minus-last gap, given only where that gap's interval excludes 0.
    ``best_kept`` (secondary): best layer after vs before, both selected on val."""
    from tslayers.probing.analysis import matching_tasks, primary_metric, significant
    from tslayers.probing.metrics import interval

    ci = float(results.attrs.get("ci", 0.9))
    targets = set(matching_tasks(results, target))
    rows = {}
    for task in results["task"].values.tolist():
        metric = primary_metric(results, task)
        if metric is None:
            continue
        sign = 1.0 if bool(results["higher_is_better"].sel(metric=metric)) else -1.0
        sel = dict(task=task, metric=metric, split="test")
        last = {}
        for name in (before, after):
            layer = results["last_layer"].sel(model=name, task=task, metric=metric).values
            if not np.isfinite(layer).all():
                break
            pick = dict(model=name, layer=int(layer[0]), **sel)
            last[name] = (results["score"].sel(pick).values, results["score_boot"].sel(pick).values)
        if len(last) < 2:
            continue
        delta = sign * (last[after][0] - last[before][0])  # (seed,)
        reps = sign * (last[after][1] - last[before][1])  # (seed, boot)
        lo, hi = interval(reps.mean(0), ci)
        an = dict(model=before, task=task, metric=metric)
        gap = results["gap"].sel(an).values
        glo, ghi = (results[v].sel(an).values.mean() for v in ("gap_lo", "gap_hi"))
        closed = (float("nan"),) * 3
        if significant(glo, ghi) and np.nanmean(gap) > 0:
            ratio = reps.mean(0) / np.nanmean(gap)
            closed = (float(np.nanmean(delta) / np.nanmean(gap)), *interval(ratio, ci))
        rows[f"{task}/{metric}"] = {
            "target": task in targets, "last_layer_before": int(np.nanmax(
                results["last_layer"].sel(an).values)),
            "selected_before": float(np.nanmean(results["selected_score"].sel(an).values)),
            "last_before": float(np.mean(last[before][0])),
            "last_after": float(np.mean(last[after][0])),
            "change": float(np.mean(delta)), "change_lo": lo, "change_hi": hi,
            "gap_before": float(np.nanmean(gap)), "gap_lo": float(glo), "gap_hi": float(ghi),
            "gap_closed": closed[0], "gap_closed_lo": closed[1], "gap_closed_hi": closed[2],
            "best_kept": _kept(results, before, after, task, metric, sign),
        }
    return {"target": target, "scores": rows}


def _kept(results: xr.Dataset, before: str, after: str, task: str, metric: str,
          sign: float) -> float:
    """Selected-layer score after / before (direction-aware), defined for positive scores."""
    b, a = (float(np.nanmean(results["selected_score"].sel(model=m, task=task,
                                                           metric=metric).values))
            for m in (before, after))
    if not (b > 0 and a > 0):
        return float("nan")
    return a / b if sign > 0 else b / a


def align_command(args: Any) -> int:
    from tslayers.probing import read_results
    from tslayers.probing.analysis import primary_metric

    config = load_config(AlignConfig, args.config, args.overrides)
    out = align(config, args.out)
    summary = json.loads((out / "summary.json").read_text())
    results = read_results(out / "results.nc")
    print(f"aligned ({config.kind}, target '{summary['target']}') -> {out}")
    for key, row in summary["scores"].items():
        task, metric = key.rsplit("/", 1)
        if row["target"] and metric == primary_metric(results, task):
            closed = "within noise" if not np.isfinite(row["gap_closed"]) else \
                f"{row['gap_closed']:.0%} [{row['gap_closed_lo']:.0%}, {row['gap_closed_hi']:.0%}]"
            print(f"  {key}: last layer {row['last_before']:.4g} -> {row['last_after']:.4g} "
                  f"(change {row['change']:+.3g} [{row['change_lo']:+.3g}, "
                  f"{row['change_hi']:+.3g}]; gap closed: {closed})")
    return 0
