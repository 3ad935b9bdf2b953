"""JEPA: predict the latents of masked blocks, as an EMA target encoder sees them.

The online (context) encoder sees the window with the target blocks replaced by its mask
token; a narrow predictor transformer reads the context tokens, puts its own mask token at the
target positions (RoPE gives them their place) and regresses the target encoder's layer-normed
tokens there. The target encoder gets no gradient: it follows the online encoder by an
exponential moving average whose momentum rises from ``ema_start`` to ``ema_end`` on a cosine
schedule (slow early targets would lag a fast-moving online encoder; late ones should settle).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from tslayers.model import EncoderConfig, TemporalEncoder
from tslayers.model.layers import Block, rope_tables

from .base import (
    Objective,
    ObjectiveConfig,
    ObjectiveOutput,
    pool,
    register_objective,
    sample_patch_mask,
)


class Predictor(nn.Module):
    """Narrow transformer: context tokens (B', N, D) + target mask (B', P) -> latents (B', P, D)."""

    def __init__(self, d_model: int, dim: int, n_layers: int, n_heads: int, backend: str):
        super().__init__()
        self.n_heads = n_heads
        self.inp = nn.Linear(d_model, dim)
        self.mask_token = nn.Parameter(torch.zeros(dim))
        self.blocks = nn.ModuleList(Block(dim, n_heads, 4.0, 0.0, 0.0, None, backend)
                                    for _ in range(n_layers))
        self.norm = nn.LayerNorm(dim)
        self.out = nn.Linear(dim, d_model)
        nn.init.trunc_normal_(self.mask_token, std=0.02)

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor, num_prefix: int) -> torch.Tensor:
        h = self.inp(tokens)
        prefix, patches = h[:, :num_prefix], h[:, num_prefix:]
        patches = torch.where(mask[..., None], self.mask_token.to(h.dtype), patches)
        h = torch.cat([prefix, patches], dim=1)
        rope = rope_tables(patches.shape[1], num_prefix, h.shape[-1] // self.n_heads, 10000.0,
                           h.device, h.dtype)
        for block in self.blocks:
            h, _ = block(h, rope, causal=False, num_prefix=num_prefix, key_lengths=None,
                         stats=False)
        return self.out(self.norm(h))[:, num_prefix:]


def ema_momentum(progress: float, start: float, end: float) -> float:
    """Cosine ramp of the EMA momentum from ``start`` (progress 0) to ``end`` (progress 1)."""
    progress = min(max(progress, 0.0), 1.0)
    return end - (end - start) * (math.cos(math.pi * progress) + 1) / 2


@register_objective("jepa")
class JEPAObjective(Objective):
    monitors_collapse = True
    uses_mask_token = True

    def __init__(self, config: ObjectiveConfig, encoder_config: EncoderConfig):
        super().__init__(config)
        if config.predictor_dim % (2 * config.predictor_heads):
            raise ValueError(f"objective.predictor_dim={config.predictor_dim} must split into "
                             f"predictor_heads={config.predictor_heads} heads of even size")
        self.target = TemporalEncoder(encoder_config).requires_grad_(False)
        self.predictor = Predictor(encoder_config.d_model, config.predictor_dim,
                                   config.predictor_layers, config.predictor_heads,
                                   encoder_config.attn_backend)
        self.momentum = config.ema_start

    def train(self, mode: bool = True) -> JEPAObjective:
        super().train(mode)
        self.target.eval()  # targets never use dropout / drop-path
        return self

    def attach(self, encoder: TemporalEncoder) -> None:
        self.target.load_state_dict(encoder.state_dict())

    @torch.no_grad()
    def after_step(self, encoder: TemporalEncoder, progress: float) -> None:
        """target <- m * target + (1 - m) * online, m from the momentum schedule."""
        c = self.config
        self.momentum = ema_momentum(progress, c.ema_start, c.ema_end)
        for t, o in zip(self.target.parameters(), encoder.parameters()):
            t.lerp_(o.detach().to(t.dtype), 1.0 - self.momentum)

    def sample_mask(self, n: int, p: int, device: torch.device) -> torch.Tensor:
        c = self.config
        return sample_patch_mask(n, p, c.mask_ratio, c.mask_type, c.block_len, device)

    def forward(self, encoder: TemporalEncoder, batch: dict[str, torch.Tensor]) -> ObjectiveOutput:
        x = batch["x"]
        patched = encoder.patchify(x)
        mask = self.sample_mask(*patched.values.shape[:2], patched.values.device)
        with torch.no_grad():
            tgt_out = self.target(x)
            target = F.layer_norm(tgt_out.patch_tokens, tgt_out.patch_tokens.shape[-1:])
        ctx = encoder(x, patch_mask=mask)
        pred = self.predictor(ctx.tokens, mask, ctx.num_prefix)
        # count masked patches that hold at least one observed step (front padding holds none)
        w = (mask & (patched.observed.sum(-1) > 0)).to(pred.dtype)[..., None]
        if self.config.loss == "mse":
            err = F.mse_loss(pred, target, reduction="none")
        else:
            err = F.smooth_l1_loss(pred, target, reduction="none")
        loss = (err * w).sum() / (w.sum() * pred.shape[-1]).clamp(min=1)
        emb = pool(tgt_out)
        metrics = {"loss": loss.detach(),
                   "target_std": emb.std(0).mean(),  # falls towards 0 when targets collapse
                   "momentum": torch.tensor(self.momentum)}
        return ObjectiveOutput(loss, metrics, emb)
