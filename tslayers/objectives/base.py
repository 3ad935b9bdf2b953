"""What every objective shares: its config, its output, the base class, masks and pooling.

An objective owns its heads and its loss. It calls the encoder itself (reconstruction and JEPA
mask patches, contrastive learning augments the input), so the training loop only ever does
``objective(encoder, batch).loss``.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import MISSING, dataclass, field, fields

import torch
from torch import nn

from tslayers.model import EncoderOutput, TemporalEncoder

#: the one registry: objective name -> class (filled by :func:`register_objective`)
OBJECTIVES: dict[str, type] = {}


def register_objective(name: str):
    """Class decorator: make an objective available by name in configs and checkpoints."""

    def deco(cls: type) -> type:
        OBJECTIVES[name] = cls
        return cls

    return deco


#: the knobs each built-in objective reads (setting another objective's knob draws a warning)
KNOBS = {
    "forecast": {"horizon", "loss", "quantiles", "head_hidden"},
    "reconstruct": {"mask_ratio", "mask_type", "block_len"},
    "contrastive": {"temperature", "proj_dim", "crop_ratio", "jitter", "scale_std", "time_mask",
                    "series_weight", "token_weight"},
    "jepa": {"mask_ratio", "mask_type", "block_len", "predictor_dim", "predictor_layers",
             "predictor_heads", "ema_start", "ema_end", "loss"},
}


@dataclass
class ObjectiveConfig:
    """Which objective, and its knobs (a knob of another objective set away from its default
    draws a warning that names it, so a setting is never silently ignored).

    forecast:    ``horizon``, ``loss`` ("mse" | "mae" | "quantile"), ``quantiles``,
                 ``head_hidden`` (0: linear head on the last patch token).
    reconstruct: ``mask_ratio``, ``mask_type`` ("random" | "block"), ``block_len`` (patches).
    contrastive: ``temperature``, ``proj_dim``, ``crop_ratio``, ``jitter``, ``scale_std``,
                 ``time_mask``, ``series_weight``, ``token_weight``.
    jepa:        ``mask_ratio``/``mask_type``/``block_len`` for target blocks, ``predictor_dim``,
                 ``predictor_layers``, ``predictor_heads``, ``ema_start``/``ema_end``
                 (momentum, cosine schedule over training), ``loss`` ("mse" | "smooth_l1").
    """

    name: str = "forecast"
    # forecast
    horizon: int = 64
    loss: str = "mse"
    quantiles: list[float] = field(default_factory=lambda: [0.1, 0.5, 0.9])
    head_hidden: int = 0
    # reconstruct / jepa masks
    mask_ratio: float = 0.4
    mask_type: str = "block"
    block_len: int = 3
    # contrastive
    temperature: float = 0.1
    proj_dim: int = 64
    crop_ratio: float = 0.75
    jitter: float = 0.05
    scale_std: float = 0.2
    time_mask: float = 0.1
    series_weight: float = 1.0
    token_weight: float = 1.0
    # jepa
    predictor_dim: int = 64
    predictor_layers: int = 2
    predictor_heads: int = 2
    ema_start: float = 0.996
    ema_end: float = 1.0

    def __post_init__(self) -> None:
        if self.name not in OBJECTIVES:
            raise ValueError(f"objective.name='{self.name}' is unknown; choose one of "
                             f"{', '.join(sorted(OBJECTIVES))}")
        if not 0.0 < self.mask_ratio < 1.0:
            raise ValueError(f"objective.mask_ratio={self.mask_ratio} must lie strictly between 0 "
                             "and 1 (the fraction of patches to mask)")
        if self.mask_type not in ("random", "block"):
            raise ValueError(f"objective.mask_type='{self.mask_type}': use 'random' or 'block'")
        losses = {"forecast": ("mse", "mae", "quantile"), "jepa": ("mse", "smooth_l1")}
        if self.name in losses and self.loss not in losses[self.name]:
            raise ValueError(f"objective.loss='{self.loss}' is not available for {self.name}; "
                             f"choose one of {', '.join(losses[self.name])}")
        checks = {
            "horizon": self.horizon >= 1,
            "block_len": self.block_len >= 1,
            "temperature": self.temperature > 0,
            "crop_ratio": 0.0 < self.crop_ratio <= 1.0,
            "time_mask": 0.0 <= self.time_mask < 1.0,
            "quantiles": bool(self.quantiles) and all(0 < q < 1 for q in self.quantiles),
            "ema_start": 0.0 <= self.ema_start <= self.ema_end <= 1.0,
            "predictor_layers": self.predictor_layers >= 1,
            "head_hidden": self.head_hidden >= 0,
        }
        for key, ok in checks.items():
            if not ok:
                raise ValueError(f"objective.{key}={getattr(self, key)!r} is out of range")
        self._warn_foreign_knobs()

    def _warn_foreign_knobs(self) -> None:
        if self.name not in KNOBS:  # a user-registered objective reads what it likes
            return
        ignored = []
        for f in fields(self):
            if f.name == "name" or f.name in KNOBS[self.name]:
                continue
            default = f.default_factory() if f.default_factory is not MISSING else f.default
            if getattr(self, f.name) != default:
                users = "/".join(sorted(n for n, k in KNOBS.items() if f.name in k))
                ignored.append(f"{f.name}={getattr(self, f.name)!r} ({users})")
        if ignored:  # a warning, not an error: one settings block is often shared by several
            warnings.warn(f"objective '{self.name}' ignores {', '.join(ignored)}: knobs of "
                          f"other objectives; '{self.name}' reads "
                          f"{', '.join(sorted(KNOBS[self.name]))}", stacklevel=3)


@dataclass
class ObjectiveOutput:
    """``loss`` (scalar, differentiable); ``metrics`` (detached scalars, logged by name);
    ``embeddings`` (B', D) pooled representations for collapse monitoring, or None."""

    loss: torch.Tensor
    metrics: dict[str, torch.Tensor]
    embeddings: torch.Tensor | None = None


class Objective(nn.Module):
    """Base class: a head + a loss. Subclasses implement :meth:`forward`."""

    config: ObjectiveConfig
    monitors_collapse: bool = False  # warn when the pooled embeddings' effective rank drops
    uses_mask_token: bool = False  # calls the encoder with a patch_mask (needs its mask token)

    def __init__(self, config: ObjectiveConfig):
        super().__init__()
        self.config = config

    def forward(self, encoder: TemporalEncoder, batch: dict[str, torch.Tensor]) -> ObjectiveOutput:
        raise NotImplementedError

    def attach(self, encoder: TemporalEncoder) -> None:
        """Called once with the online encoder before training (JEPA copies it)."""

    def after_step(self, encoder: TemporalEncoder, progress: float) -> None:
        """Called after every optimizer step; ``progress`` in [0, 1] (JEPA's EMA update)."""


def pool(out: EncoderOutput) -> torch.Tensor:
    """Series embedding (B', D): mean of the final patch tokens (registers excluded)."""
    return out.patch_tokens.mean(dim=1)


def sample_patch_mask(
    n: int, p: int, ratio: float, kind: str = "random", block_len: int = 1,
    device: torch.device | str | None = None, generator: torch.Generator | None = None,
) -> torch.Tensor:
    """(n, p) bool, True = masked; every row masks at least one and keeps at least one patch.

    ``random``: exactly ``round(ratio * p)`` patches per row. ``block``: the row is cut into
    contiguous blocks of ``block_len`` patches at a random phase and whole blocks are masked
    until about ``ratio * p`` patches are (contiguous spans make interpolation from neighbours
    useless, so the model must use longer-range structure).
    """
    if p < 2:
        raise ValueError(f"masking needs at least 2 patches per series, got {p}; use longer "
                         "windows (data.context) or a smaller encoder.patch_len")
    k = min(max(round(ratio * p), 1), p - 1)
    if kind == "random" or block_len <= 1:
        rank = torch.rand(n, p, device=device, generator=generator).argsort(1).argsort(1)
        return rank < k
    n_blocks = math.ceil(p / block_len) + 1
    phase = torch.randint(0, block_len, (n, 1), device=device, generator=generator)
    block_id = (torch.arange(p, device=device)[None] + phase) // block_len  # (n, p)
    block_rank = torch.rand(n, n_blocks, device=device, generator=generator).argsort(1).argsort(1)
    # per row, mask blocks in random order until the cumulative size reaches k
    size = torch.zeros(n, n_blocks, device=device).scatter_add_(
        1, block_id, torch.ones(n, p, device=device))
    order = block_rank.argsort(1)  # block ids in masking order
    cum = size.gather(1, order).cumsum(1)
    take = (cum - size.gather(1, order)) < k  # blocks started before reaching k
    chosen = torch.zeros(n, n_blocks, dtype=torch.bool, device=device).scatter_(1, order, take)
    mask = chosen.gather(1, block_id)
    # never mask a whole row: keep the last patch visible if everything got masked
    full = mask.all(1)
    mask[full, -1] = False
    return mask
