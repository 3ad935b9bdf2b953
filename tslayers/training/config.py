"""``TrainConfig`` (the optimisation and hardware section) and ``PretrainConfig`` (a whole run)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from tslayers.data.config import DataConfig
from tslayers.model import EncoderConfig
from tslayers.objectives import ObjectiveConfig

PRECISIONS = ("auto", "32-true", "32", "bf16-mixed", "16-mixed", "bf16-true", "64-true")


@dataclass
class TrainConfig:
    """Optimiser, schedule, loop length, logging/checkpoint cadence and hardware.

    Steps are optimizer steps. ``max_steps=-1`` trains for ``max_epochs``; ``max_time``
    ("DD:HH:MM:SS") stops earlier when given. ``val_check_interval`` counts training steps
    (validation runs every that many steps, across epoch boundaries). ``precision="auto"``
    picks bf16-mixed on GPUs that support it, 16-mixed on other GPUs, 32-true on CPU.
    ``resume``: a checkpoint path, "auto" (``<run>/checkpoints/last.ckpt`` if it exists) or None.
    ``collapse_rank_fraction``: warn when the effective rank of the pooled validation
    embeddings falls below this fraction of ``d_model`` (contrastive and JEPA).
    """

    max_steps: int = 2000
    max_epochs: int = -1
    max_time: str | None = None
    lr: float = 1e-3
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.95)
    warmup_steps: int = 100
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0
    accumulate_grad_batches: int = 1
    precision: str = "auto"
    accelerator: str = "auto"
    devices: int | str = "auto"
    strategy: str = "auto"
    num_nodes: int = 1
    seed: int = 0
    val_check_interval: int = 200
    limit_val_batches: int | None = None  # None: all validation batches
    log_every_n_steps: int = 10
    ckpt_every_n_steps: int = 200
    progress_bar: bool = True
    deterministic: bool = False
    resume: str | None = None
    collapse_rank_fraction: float = 0.02  # untrained encoders already sit near 0.04
    max_val_embeddings: int = 4096

    def __post_init__(self) -> None:
        if self.max_steps == -1 and self.max_epochs == -1 and not self.max_time:
            raise ValueError("train: set max_steps, max_epochs or max_time, or the run never ends")
        if self.precision not in PRECISIONS:
            raise ValueError(f"train.precision='{self.precision}': choose one of "
                             f"{', '.join(PRECISIONS)}")
        from tslayers.config import check_ranges

        devices_ok = (self.devices == "auto" or (isinstance(self.devices, int)
                                                 and (self.devices >= 1 or self.devices == -1))
                      or isinstance(self.devices, str))
        check_ranges("train", self, {
            "max_steps": (self.max_steps >= -1,
                          "use a step count >= 0 (0: no step, e.g. an untrained head), or -1 "
                          "to stop by max_epochs/max_time"),
            "max_epochs": (self.max_epochs == -1 or self.max_epochs >= 1,
                           "use an epoch count >= 1, or -1 for no epoch limit"),
            "lr": (math.isfinite(self.lr) and self.lr > 0, "use a positive learning rate"),
            "weight_decay": (self.weight_decay >= 0, "use a weight decay >= 0"),
            "betas": (len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas),
                      "use two AdamW betas in [0, 1), e.g. [0.9, 0.95]"),
            "warmup_steps": (self.warmup_steps >= 0, "use 0 or more warmup steps"),
            "min_lr_ratio": (0 <= self.min_lr_ratio <= 1, "use a ratio in [0, 1]"),
            "grad_clip": (self.grad_clip >= 0, "use a norm >= 0 (0 switches clipping off)"),
            "val_check_interval": (self.val_check_interval >= 1, "use a step count >= 1"),
            "ckpt_every_n_steps": (self.ckpt_every_n_steps >= 1, "use a step count >= 1"),
            "log_every_n_steps": (self.log_every_n_steps >= 1, "use a step count >= 1"),
            "accumulate_grad_batches": (self.accumulate_grad_batches >= 1, "use 1 or more"),
            "num_nodes": (self.num_nodes >= 1, "use 1 or more nodes"),
            "devices": (devices_ok, "use a device count >= 1, -1 (all) or \"auto\""),
            "limit_val_batches": (self.limit_val_batches is None or self.limit_val_batches >= 1,
                                  "use a batch count >= 1, or leave it empty for all"),
            "collapse_rank_fraction": (0 <= self.collapse_rank_fraction <= 1,
                                       "use a fraction in [0, 1]"),
            "max_val_embeddings": (self.max_val_embeddings >= 2, "use 2 or more"),
        })


@dataclass
class PretrainConfig:
    """One pretraining run. ``out`` may contain ``<objective>``, replaced by its name."""

    data: DataConfig = field(default_factory=DataConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    out: str = "runs/pretrain/<objective>"

    def __post_init__(self) -> None:
        """Tie the forecast horizon to the data's: one number, checked once."""
        if self.objective.name != "forecast":
            return
        if self.data.horizon == 0:
            self.data.horizon = self.objective.horizon
        elif self.data.horizon < self.objective.horizon:
            raise ValueError(f"objective.horizon={self.objective.horizon} is longer than "
                             f"data.horizon={self.data.horizon}: the batches would not hold "
                             "enough future steps; set them equal")

    @property
    def run_dir(self) -> str:
        return self.out.replace("<objective>", self.objective.name)
