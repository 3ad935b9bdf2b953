"""Masked reconstruction: hide patches behind the learned mask token, predict their values.

The loss only counts masked patches (and, inside them, observed time steps): visible patches
would be solved by copying, which teaches nothing.
"""

from __future__ import annotations

import torch
from torch import nn

from tslayers.model import EncoderConfig, TemporalEncoder

from .base import (
    Objective,
    ObjectiveConfig,
    ObjectiveOutput,
    pool,
    register_objective,
    sample_patch_mask,
)


def masked_patch_mse(
    pred: torch.Tensor, target: torch.Tensor, observed: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """Mean squared error over masked patches' observed entries.

    pred/target/observed (B', P, L); mask (B', P) bool, True = masked.
    """
    w = observed * mask[..., None].to(observed.dtype)
    return ((pred - target) ** 2 * w).sum() / w.sum().clamp(min=1)


@register_objective("reconstruct")
class ReconstructObjective(Objective):
    uses_mask_token = True

    def __init__(self, config: ObjectiveConfig, encoder_config: EncoderConfig):
        super().__init__(config)
        e = encoder_config
        per_token = e.patch_len * (e.n_channels if e.channel_mixing else 1)
        self.head = nn.Linear(e.d_model, per_token)

    def sample_mask(self, n: int, p: int, device: torch.device) -> torch.Tensor:
        """(n, p) bool patch mask; a method so tests and subclasses can fix it."""
        c = self.config
        return sample_patch_mask(n, p, c.mask_ratio, c.mask_type, c.block_len, device)

    def forward(self, encoder: TemporalEncoder, batch: dict[str, torch.Tensor]) -> ObjectiveOutput:
        patched = encoder.patchify(batch["x"])
        n, p = patched.values.shape[:2]
        mask = self.sample_mask(n, p, patched.values.device)
        out = encoder(batch["x"], patch_mask=mask)
        pred = self.head(out.patch_tokens)  # (B', P, L) scaled values
        loss = masked_patch_mse(pred, patched.values, patched.observed, mask)
        visible = masked_patch_mse(pred, patched.values, patched.observed, ~mask)
        metrics = {"loss": loss.detach(), "mse_masked": loss.detach(),
                   "mse_visible": visible.detach()}
        return ObjectiveOutput(loss, metrics, pool(out).detach())
