"""Contrastive: two augmented views of each window, InfoNCE at series and token level.

Views are patch-aligned crops (their offsets are whole strides, so token ``i`` of a view covers
absolute patch ``offset + i``), then jitter, a smooth gain drift ("scaling": a constant gain
would be undone by instance scaling) and random time steps hidden as NaN (the encoder treats
them as unobserved). Series level: SimCLR's NT-Xent over pooled embeddings, the other 2B'-2
views as negatives. Token level (TS2Vec's temporal loss): a token's positive is the other view's
token of the same absolute patch, its negatives the other view's other patches of that series.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tslayers.model import EncoderConfig, TemporalEncoder

from .base import Objective, ObjectiveConfig, ObjectiveOutput, pool, register_objective


def info_nce(
    a: torch.Tensor, b: torch.Tensor, temperature: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """NT-Xent over a (N, D), b (N, D): positives a[i] <-> b[i], the other 2N - 2 rows negatives.

    Returns (loss, top-1 accuracy of finding the positive).
    """
    z = F.normalize(torch.cat([a, b]), dim=-1)
    sim = z @ z.T / temperature
    sim = sim.masked_fill(torch.eye(len(z), dtype=torch.bool, device=z.device), float("-inf"))
    n = len(a)
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)
    acc = (sim.argmax(1) == target).float().mean()
    return F.cross_entropy(sim, target), acc


def token_info_nce(
    u: torch.Tensor, v: torch.Tensor, off_u: torch.Tensor, off_v: torch.Tensor, temperature: float
) -> torch.Tensor:
    """Token-level InfoNCE between crops u, v (B', P, D) starting at patch offsets (B',).

    Anchor ``u[b, i]`` (absolute patch ``off_u[b] + i``) has positive ``v[b, j]`` with
    ``off_v[b] + j`` equal, and negatives ``v[b, j']`` for the other j'; anchors without a
    counterpart in the other crop are skipped. Symmetrised over the two directions.
    """
    u, v = F.normalize(u, dim=-1), F.normalize(v, dim=-1)
    logits = torch.einsum("bid,bjd->bij", u, v) / temperature
    p = u.shape[1]
    idx = torch.arange(p, device=u.device)[None]

    def one_way(lg: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
        j = idx + shift[:, None]  # (B', P) index of each anchor's positive
        valid = (j >= 0) & (j < p)
        ce = F.cross_entropy(lg.flatten(0, 1), j.clamp(0, p - 1).flatten(), reduction="none")
        return (ce * valid.flatten()).sum() / valid.sum().clamp(min=1)

    return 0.5 * (one_way(logits, off_u - off_v) + one_way(logits.transpose(1, 2), off_v - off_u))


@register_objective("contrastive")
class ContrastiveObjective(Objective):
    monitors_collapse = True

    def __init__(self, config: ObjectiveConfig, encoder_config: EncoderConfig):
        super().__init__(config)
        self.patch_len = encoder_config.patch_len
        self.stride = encoder_config.stride
        self.channel_mixing = encoder_config.channel_mixing
        d = encoder_config.d_model
        self.projector = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Linear(d, config.proj_dim))

    def crop_offsets(self, b: int, n_patches: int, device) -> tuple[int, torch.Tensor]:
        """Crop size in patches and (2, B) random patch offsets of the two views."""
        n_crop = min(max(2, round(self.config.crop_ratio * n_patches)), n_patches)
        return n_crop, torch.randint(0, n_patches - n_crop + 1, (2, b), device=device)

    def augment(self, x: torch.Tensor, offset: torch.Tensor, n_crop: int) -> torch.Tensor:
        """One view (B, L_crop, C) of an aligned window x (B, T, C) starting at patch ``offset``."""
        c = self.config
        length = self.patch_len + (n_crop - 1) * self.stride
        idx = offset[:, None] * self.stride + torch.arange(length, device=x.device)[None]
        v = x.gather(1, idx[..., None].expand(-1, -1, x.shape[-1]))
        centred = v - torch.nanmean(v, 1, keepdim=True)
        std = torch.sqrt(torch.nanmean(centred**2, 1, keepdim=True))  # per (series, channel)
        v = v + c.jitter * torch.nan_to_num(std) * torch.randn_like(v)
        ramp = torch.linspace(-0.5, 0.5, length, device=x.device)[None, :, None]
        gain = torch.exp(c.scale_std * (torch.randn_like(v[:, :1]) +
                                        torch.randn_like(v[:, :1]) * ramp))
        v = v * gain
        hide = torch.rand_like(v[..., :1]) < c.time_mask
        return v.masked_fill(hide, float("nan"))

    def forward(self, encoder: TemporalEncoder, batch: dict[str, torch.Tensor]) -> ObjectiveOutput:
        c = self.config
        x = batch["x"]
        n_patches = (x.shape[1] - self.patch_len) // self.stride + 1
        if n_patches < 2:
            raise ValueError("contrastive objective needs windows of at least two patches")
        x = x[:, x.shape[1] - (self.patch_len + (n_patches - 1) * self.stride):]  # align to patches
        n_crop, offsets = self.crop_offsets(len(x), n_patches, x.device)
        outs = [encoder(self.augment(x, offsets[v], n_crop)) for v in range(2)]
        if not self.channel_mixing:  # one row per (series, channel): repeat offsets per channel
            offsets = offsets.repeat_interleave(x.shape[-1], dim=1)
        series_loss, acc = info_nce(self.projector(pool(outs[0])), self.projector(pool(outs[1])),
                                    c.temperature)
        token_loss = token_info_nce(self.projector(outs[0].patch_tokens),
                                    self.projector(outs[1].patch_tokens),
                                    offsets[0], offsets[1], c.temperature)
        loss = c.series_weight * series_loss + c.token_weight * token_loss
        metrics = {"loss": loss.detach(), "series_nce": series_loss.detach(),
                   "token_nce": token_loss.detach(), "series_acc": acc}
        return ObjectiveOutput(loss, metrics, pool(outs[0]).detach())
