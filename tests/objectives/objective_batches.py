"""Tiny synthetic problems built in-test, independent of the data engine."""

import math

import torch

from tslayers.model import EncoderConfig


def sine_batch(b: int = 16, t: int = 64, c: int = 2, horizon: int = 16, seed: int = 0,
               noise: float = 0.05) -> dict[str, torch.Tensor]:
    """Sines with random period (8..24 steps), phase, level and amplitude per channel."""
    g = torch.Generator().manual_seed(seed)
    steps = torch.arange(t + horizon, dtype=torch.float32)[None, :, None]
    period = 8 + 16 * torch.rand(b, 1, c, generator=g)
    phase = 2 * math.pi * torch.rand(b, 1, c, generator=g)
    amp = 0.5 + torch.rand(b, 1, c, generator=g)
    level = torch.randn(b, 1, c, generator=g)
    y = level + amp * torch.sin(2 * math.pi * steps / period + phase)
    y = y + noise * torch.randn(y.shape, generator=g)
    return {"x": y[:, :t], "future": y[:, t:]}


def tiny_encoder_config(**kw) -> EncoderConfig:
    cfg = dict(n_channels=2, patch_len=8, d_model=32, n_layers=2, n_heads=2)
    cfg.update(kw)
    return EncoderConfig(**cfg)
