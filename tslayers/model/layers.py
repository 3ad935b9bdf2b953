"""Transformer building blocks: rotary positions, attention, MLP, LayerScale, DropPath."""

from __future__ import annotations

import torch
from einops import rearrange
from torch import nn

from tslayers.kernels import AttentionStats, attention


def rope_tables(
    n_patches: int, num_prefix: int, head_dim: int, base: float, device, dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin tables (N, head_dim): patch tokens rotate by position, prefix tokens do not."""
    exponents = torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim
    inv_freq = base ** (-exponents)
    pos = torch.arange(n_patches, device=device, dtype=torch.float32)
    angles = torch.outer(pos, inv_freq)  # (P, head_dim/2)
    angles = torch.cat([torch.zeros(num_prefix, angles.shape[1], device=device), angles])
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos().to(dtype), angles.sin().to(dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate (B, H, N, Dh) by the tables (rotate-half convention)."""
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat([-x2, x1], dim=-1) * sin


class DropPath(nn.Module):
    """Stochastic depth: drop a whole residual branch per sample while training."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = torch.rand(x.shape[0], *([1] * (x.dim() - 1)), device=x.device) >= self.p
        return x * keep.to(x.dtype) / (1.0 - self.p)


class LayerScale(nn.Module):
    """Per-channel residual gain (CaiT); small init keeps deep stacks trainable."""

    def __init__(self, dim: int, init: float | None):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), init)) if init else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.gamma is None else x * self.gamma


class SelfAttention(nn.Module):
    def __init__(self, dim: int, n_heads: int, dropout: float, backend: str):
        super().__init__()
        if dim % n_heads or (dim // n_heads) % 2:
            raise ValueError(
                f"d_model={dim} must split into n_heads={n_heads} heads of even size"
            )
        self.n_heads = n_heads
        self.backend = backend
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(
        self,
        x: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor],
        *,
        causal: bool,
        num_prefix: int,
        key_lengths: torch.Tensor | None,
        stats: bool,
    ) -> tuple[torch.Tensor, AttentionStats | None]:
        qkv = rearrange(self.qkv(x), "b n (three h d) -> three b h n d", three=3, h=self.n_heads)
        q, k, v = qkv
        q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        result = attention(
            q, k, v, causal=causal, key_lengths=key_lengths, stats=stats,
            num_prefix=num_prefix, backend=self.backend,
        )
        out, st = result if stats else (result, None)
        return self.dropout(self.proj(rearrange(out, "b h n d -> b n (h d)"))), st


class MLP(nn.Module):
    def __init__(self, dim: int, hidden: int, dropout: float):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.fc2(self.act(self.fc1(x))))


class Block(nn.Module):
    """Pre-norm transformer block: x + DropPath(LayerScale(f(LayerNorm(x)))) for attn and MLP."""

    def __init__(
        self, dim: int, n_heads: int, mlp_ratio: float, dropout: float, drop_path: float,
        layerscale: float | None, backend: str,
    ):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, n_heads, dropout, backend)
        self.ls1 = LayerScale(dim, layerscale)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = MLP(dim, int(dim * mlp_ratio), dropout)
        self.ls2 = LayerScale(dim, layerscale)
        self.drop_path = DropPath(drop_path)
        self.out = nn.Identity()  # tap point "blocks.{i}.out": the residual stream after the block

    def forward(self, x, rope, *, causal, num_prefix, key_lengths, stats):
        a, st = self.attn(self.norm1(x), rope, causal=causal, num_prefix=num_prefix,
                          key_lengths=key_lengths, stats=stats)
        x = x + self.drop_path(self.ls1(a))
        x = x + self.drop_path(self.ls2(self.mlp(self.norm2(x))))
        return self.out(x), st
