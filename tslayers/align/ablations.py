"""The ablation set of each alignment kind, each a separate model in one results file.

Forecast alignment (``<name>/align-forecast/...``):
  ``truncate`` (the encoder cut at the selected layer, no tuning), ``frozen-head`` (stage 1
  only: projector + decoder trained on the frozen truncated encoder, so its *features* are the
  truncation's, bit for bit; it differs only in its decoder's forecasts) and ``full`` (both
  stages).
Dynamics alignment (``<name>/align-dynamics/...``):
  ``self`` (self-distillation towards the frozen teacher layer only), ``corr/<teacher>``
  (correspondence distillation only) and ``both/<teacher>``, for each locality teacher: a layer
  of another pretrained encoder (learned), the spectral descriptor (hand-made) and the true
  latent states (an oracle: ground-truth supervision).
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch

from tslayers.model import TemporalEncoder

from .heads import DynamicsAligner, ForecastAligner

FORECAST_ABLATIONS = ("truncate", "frozen-head", "full")
DYNAMICS_ABLATIONS = ("self", "corr", "both")
#: the name part of each locality teacher in model names
TEACHER_KEYS = {"encoder": "encoder", "spectral": "spectral", "latent": "latent-oracle",
                "layer": "layer"}


@dataclass
class Entry:
    """One ablation: its model name, encoder, teacher label and (forecast) aligner."""

    name: str
    encoder: TemporalEncoder
    teacher: str = ""
    aligner: ForecastAligner | None = None
    val_loss: float = float("nan")
    same_features_as: str | None = None  # probing it again would repeat this entry's scores


def forecast_ablations(original: TemporalEncoder, layer: int, config, dm, out: Path,
                       fit) -> list[Entry]:
    """Truncation only, stage 1 only (frozen encoder) and both stages; ``fit(aligner,
    train_cfg, dm, folder) -> val loss`` trains (a stage of 0 steps is skipped)."""
    base = f"{config.name}/align-forecast"
    trunc = Entry(f"{base}/truncate", original.truncated(layer), teacher=f"layer {layer}")
    aligner = ForecastAligner(original, layer, config.forecast)
    aligner.set_encoder_trainable(False)
    stage1 = _maybe_fit(fit, aligner, config.stage1, dm, out / "stage1")
    _check_unchanged(aligner.encoder, trunc.encoder)
    frozen = Entry(f"{base}/frozen-head", trunc.encoder, trunc.teacher,
                   copy.deepcopy(aligner).eval(), stage1, same_features_as=trunc.name)
    aligner.set_encoder_trainable(True)
    aligner.encoder.set_drop_path(config.drop_path)
    stage2 = _maybe_fit(fit, aligner, config.stage2, dm, out / "stage2")
    aligner.encoder.set_drop_path(0.0)
    full = Entry(f"{base}/full", aligner.encoder.eval(), trunc.teacher, aligner.eval(), stage2)
    return [trunc, frozen, full]


def _maybe_fit(fit, module, train_cfg, dm, out: Path) -> float:
    return float("nan") if train_cfg.max_steps == 0 else fit(module, train_cfg, dm, out)


def _check_unchanged(a: torch.nn.Module, b: torch.nn.Module) -> None:
    """Stage 1 must not move the encoder (its features are reported as truncation's)."""
    sb = b.state_dict()
    moved = [k for k, v in a.state_dict().items() if not torch.equal(v, sb[k])]
    if moved:
        raise RuntimeError(f"stage 1 changed frozen encoder weights: {moved[:3]}")


def teacher_label(dyn, kind: str, teacher_name: str | None = None) -> str:
    """Human-readable teacher of a dynamics ablation, recorded beside its scores."""
    if kind == "self":
        return f"self L{dyn.teacher_layer}"
    t = dyn.locality_teacher
    if t == "encoder":
        return f"learned: {teacher_name or 'encoder'} L{dyn.locality_layer}"
    if t == "latent":
        return "latent states (oracle)"
    return "spectral descriptor" if t == "spectral" else f"layer L{dyn.locality_layer}"


def dynamics_ablations(original: TemporalEncoder, config, teachers: list[str], data_for,
                       out: Path, fit, teacher_encoder: TemporalEncoder | None = None,
                       teacher_layer: int | None = None) -> list[Entry]:
    """Self-distillation only, then correspondence only and both for every locality teacher.
    ``data_for(teacher) -> datamodule`` (the oracle needs data with latent states)."""
    base = f"{config.name}/align-dynamics"
    dyn = config.dynamics
    runs = [("self", None)] + [(k, t) for t in teachers for k in ("corr", "both")]
    entries = []
    for kind, teacher in runs:
        cfg = dataclasses.replace(
            dyn, locality_teacher=teacher or dyn.locality_teacher,
            distill_weight=0.0 if kind == "corr" else dyn.distill_weight,
            correspondence_weight=0.0 if kind == "self" else dyn.correspondence_weight)
        if teacher == "encoder":
            cfg.locality_layer = teacher_layer
        student = copy.deepcopy(original)
        student.set_drop_path(config.drop_path)
        aligner = DynamicsAligner(student, cfg, teacher_encoder)
        name = f"{base}/{kind}" + (f"/{TEACHER_KEYS[teacher]}" if teacher else "")
        folder = out / name.rsplit("/align-dynamics/", 1)[1].replace("/", "-")
        loss = _maybe_fit(fit, aligner, config.stage1, data_for(teacher), folder)
        student.set_drop_path(0.0)
        entries.append(Entry(name, student.eval(), teacher_label(cfg, kind,
                                                                 config.teacher_name), None,
                             loss))
    return entries
