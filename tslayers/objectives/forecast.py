"""Forecasting: predict the next ``horizon`` values from the last patch token.

The head reads one token (B', D), so any layer's tokens can be decoded with it (the "forecast
lens" of probing and alignment). Losses are computed in the instance-scaled space, so every
series weighs the same whatever its units; :meth:`ForecastObjective.decode` maps back.
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import nn

from tslayers.model import EncoderConfig, EncoderOutput, TemporalEncoder

from .base import Objective, ObjectiveConfig, ObjectiveOutput, pool, register_objective


def pinball_loss(pred: torch.Tensor, target: torch.Tensor, quantiles: torch.Tensor) -> torch.Tensor:
    """Quantile loss, elementwise: pred (..., Q), target (...), quantiles (Q,) -> (..., Q)."""
    diff = target[..., None] - pred
    return torch.maximum(quantiles * diff, (quantiles - 1) * diff)


@register_objective("forecast")
class ForecastObjective(Objective):
    def __init__(self, config: ObjectiveConfig, encoder_config: EncoderConfig):
        super().__init__(config)
        e = encoder_config
        self.horizon = config.horizon
        self.channel_mixing = e.channel_mixing
        self.k = e.n_channels if e.channel_mixing else 1  # channels per token
        self.register_buffer(
            "quantiles",
            torch.tensor(config.quantiles if config.loss == "quantile" else [0.5]),
            persistent=False,
        )
        out_dim = self.horizon * self.k * len(self.quantiles)
        d = e.d_model
        self.head = (nn.Linear(d, out_dim) if config.head_hidden == 0 else
                     nn.Sequential(nn.Linear(d, config.head_hidden), nn.GELU(),
                                   nn.Linear(config.head_hidden, out_dim)))
        self.point_index = int((self.quantiles - 0.5).abs().argmin())

    # ------------------------------------------------------------------ heads
    def scaled(self, tokens: torch.Tensor, n_channels: int) -> torch.Tensor:
        """Tokens (B', N, D) -> scaled forecasts (B, H, C, Q) from the last patch token."""
        y = self.head(tokens[:, -1])
        q = len(self.quantiles)
        if self.channel_mixing:
            return rearrange(y, "b (c h q) -> b h c q", h=self.horizon, q=q)
        return rearrange(y, "(b c) (h q) -> b h c q", c=n_channels, q=q)

    def decode(self, tokens: torch.Tensor, out: EncoderOutput) -> torch.Tensor:
        """Point forecasts (B, horizon, C) in original units from tokens shaped like
        ``out.tokens`` (any layer's), un-scaled with ``out.patched.loc/scale``."""
        y = self.scaled(tokens, out.patched.n_channels)[..., self.point_index]
        return y * out.patched.scale + out.patched.loc

    @torch.no_grad()
    def predict(self, encoder: TemporalEncoder, x: torch.Tensor) -> torch.Tensor:
        """Point forecast (B, horizon, C) for a context (B, T, C); median for quantile heads."""
        out = encoder(x)
        return self.decode(out.tokens, out)

    # ------------------------------------------------------------------ loss
    def forward(self, encoder: TemporalEncoder, batch: dict[str, torch.Tensor]) -> ObjectiveOutput:
        future = batch.get("future")
        if future is None or future.shape[1] < self.horizon:
            got = None if future is None else future.shape[1]
            raise ValueError(f"forecast objective needs batch['future'] with {self.horizon} "
                             f"steps (got {got}); set data.horizon = objective.horizon")
        future = future[:, : self.horizon]
        out = encoder(batch["x"])
        pred = self.scaled(out.tokens, out.patched.n_channels)  # (B, H, C, Q)
        target = (future - out.patched.loc) / out.patched.scale
        observed = torch.isfinite(target)  # +-inf is missing, as in the encoder's input
        target = torch.where(observed, target, torch.zeros_like(target))
        w = observed.float()
        n = w.sum().clamp(min=1)
        point = pred[..., self.point_index]
        err = point - target
        mse = (err**2 * w).sum() / n
        mae = (err.abs() * w).sum() / n
        if self.config.loss == "quantile":
            loss = (pinball_loss(pred, target, self.quantiles).mean(-1) * w).sum() / n
        else:
            loss = mse if self.config.loss == "mse" else mae
        metrics = {"loss": loss.detach(), "mse": mse.detach(), "mae": mae.detach()}
        return ObjectiveOutput(loss, metrics, pool(out).detach())
