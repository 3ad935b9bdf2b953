"""``tslayers align``: tune an encoder with an alignment head, then re-probe before and after.

Forecast alignment runs two stages (projector + decoder with the encoder frozen, then everything
with DropPath); dynamics alignment runs one. Both end by probing the original and the aligned
encoder with the same task suite and writing both into one results file.
"""

from __future__ import annotations

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
from tslayers.model import EncoderConfig, TemporalEncoder
from tslayers.probing import ProbeConfig
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
    checkpoint: str | None = None  # pretrain run dir or encoder dir (required)
    results: str | None = None  # probing results file for automatic layer choice
    target_task: str | None = None  # default: "forecast" or "correspondence" by kind
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
    out: str = "runs/align/<kind>"

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"align.kind='{self.kind}': choose one of {KINDS}")
        if not 0.0 <= self.drop_path < 1.0:
            raise ValueError("align.drop_path must lie in [0, 1)")
        if self.target_task is None:
            self.target_task = "forecast" if self.kind == "forecast" else "correspondence"


# ---------------------------------------------------------------------------- layer choice
def best_layer_from_results(path: str | Path, task: str, model: str | None = None) -> int:
    """Best layer for ``task`` (first metric, mean over seeds) in a probing results file."""
    from tslayers.probing import read_results

    ds = read_results(path)
    tasks = [str(t) for t in ds["task"].values]
    if task not in tasks:
        raise ValueError(f"results file '{path}' has no task '{task}' (it has {tasks}); probe "
                         "that task first or give the layer explicitly")
    models = [str(m) for m in ds["model"].values if "/" not in str(m)]
    model = model or (models[0] if models else None)
    if model not in [str(m) for m in ds["model"].values]:
        raise ValueError(f"results file '{path}' has no model '{model}'; it has {models}")
    score = ds["score"].sel(model=model, task=task).mean("seed")
    score = score.dropna("metric", how="all")
    if score.sizes["metric"] == 0:
        raise ValueError(f"results file '{path}' has no scores for task '{task}'")
    metric = str(score["metric"].values[0])
    s = score.sel(metric=metric).dropna("layer")
    higher = bool(ds["higher_is_better"].sel(metric=metric))
    return int(s["layer"].values[int(np.argmax(s.values) if higher else np.argmin(s.values))])


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


def _set_drop_path(encoder: TemporalEncoder, rate: float) -> None:
    n = encoder.n_layers
    for i, block in enumerate(encoder.blocks):
        block.drop_path.p = rate * i / max(1, n - 1)


# ---------------------------------------------------------------------------- entry points
def align(config: AlignConfig, out_dir: str | Path | None = None) -> Path:
    """Train the configured alignment, re-probe, write ``results.nc`` and ``summary.json``."""
    from tslayers.probing import merge_results, probe_encoder, write_results

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
            layer = best_layer_from_results(config.results, config.target_task, name)
        aligner = ForecastAligner(original, layer, config.forecast)
        aligner.set_encoder_trainable(False)
        stage1 = _fit(aligner, config.stage1, dm, out / "stage1")
        aligner.set_encoder_trainable(True)
        _set_drop_path(aligner.encoder, config.drop_path)
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
        _set_drop_path(student, config.drop_path)
        aligner = DynamicsAligner(student, dyn)
        loss = _fit(aligner, config.stage1, dm, out / "train")
        aligned = aligner.student
        summary = {"kind": "dynamics", "teacher_layer": dyn.teacher_layer, "val_loss": loss}
    _set_drop_path(aligned, 0.0)
    aligned.eval().save_pretrained(out / "encoder")

    after_name = f"{name}+align-{config.kind}"
    before = probe_encoder(original.eval(), config.data, config.probe, model_name=name)
    after_cfg = _probe_without_controls(config.probe)
    after = probe_encoder(aligned, config.data, after_cfg, model_name=after_name)
    results = merge_results([before, after])
    results.attrs["alignment"] = json.dumps({**summary, "before": name, "after": after_name})
    write_results(results, out / "results.nc")
    summary.update(alignment_summary(results, name, after_name, config.target_task))
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return out


def _with_horizon(data: DataConfig, horizon: int) -> DataConfig:
    import dataclasses

    if data.horizon and data.horizon < horizon:
        raise ValueError(f"forecast.horizon={horizon} is longer than data.horizon={data.horizon}")
    return dataclasses.replace(data, horizon=max(data.horizon, horizon))


def _probe_without_controls(cfg: ProbeConfig) -> ProbeConfig:
    import dataclasses

    return dataclasses.replace(cfg, controls=[])


def _save_head(aligner: ForecastAligner, directory: Path) -> None:
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    state = {f"projector.{k}": v.contiguous() for k, v in aligner.projector.state_dict().items()}
    state |= {f"decoder.{k}": v.contiguous() for k, v in aligner.decoder.state_dict().items()}
    save_file(state, str(directory / "head.safetensors"))
    (directory / "config.json").write_text(json.dumps(to_dict(aligner.head_config), indent=2))


def alignment_summary(results: xr.Dataset, before: str, after: str,
                      target_task: str) -> dict[str, Any]:
    """Per task and metric: best/last layer before, last layer after, share of the gap closed,
    and how much of the pre-alignment best score the aligned model keeps at its best layer."""
    score = results["score"].mean("seed")
    rows = {}
    for task in [str(t) for t in results["task"].values]:
        for metric in [str(m) for m in results["metric"].values]:
            b = score.sel(model=before, task=task, metric=metric).dropna("layer")
            a = score.sel(model=after, task=task, metric=metric).dropna("layer")
            if b.size == 0 or a.size == 0:
                continue
            sign = 1.0 if bool(results["higher_is_better"].sel(metric=metric)) else -1.0
            best_b = float((sign * b).max()) * sign
            last_b, last_a = float(b.isel(layer=-1)), float(a.isel(layer=-1))
            best_a = float((sign * a).max()) * sign
            gap = sign * (best_b - last_b)
            best_layer = int(b["layer"][int(np.argmax(sign * b.values))])
            rows[f"{task}/{metric}"] = {
                "best_before": best_b, "best_layer_before": best_layer,
                "last_before": last_b, "last_after": last_a, "best_after": best_a,
                "gap_closed": (sign * (last_a - last_b) / gap) if gap > 1e-12 else float("nan"),
                "kept": _kept(best_a, best_b, sign),
                "target": task == target_task,
            }
    return {"scores": rows}


def _kept(after: float, before: float, sign: float) -> float:
    """Share of the pre-alignment best score kept (1 = no loss), direction-aware; defined for
    positive scores only (an R^2 below zero has no meaningful ratio)."""
    if before <= 0 or after <= 0:
        return float("nan")
    return after / before if sign > 0 else before / after


def align_command(args: Any) -> int:
    config = load_config(AlignConfig, args.config, args.overrides)
    out = align(config, args.out)
    summary = json.loads((out / "summary.json").read_text())
    print(f"aligned ({config.kind}) -> {out}")
    for key, row in summary["scores"].items():
        if row["target"]:
            print(f"  {key}: best before {row['best_before']:.4g} (layer "
                  f"{row['best_layer_before']}), last before {row['last_before']:.4g}, "
                  f"last after {row['last_after']:.4g}, gap closed {row['gap_closed']:.0%}")
    return 0
