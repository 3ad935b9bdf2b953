"""Temporal alignment heads: the modules and losses, free of any training loop.

* :class:`ForecastAligner` — the language-alignment analogue. The encoder is truncated at a chosen
  layer, a 2-layer MLP projector maps its tokens, and a small transformer decoder turns them into
  the forecast horizon (learned horizon queries cross-attend to the projected patch tokens).
* :class:`DynamicsAligner` — the spatial-alignment analogue. A student copy of the encoder is
  pulled (a) towards a frozen teacher layer by a cosine loss on every token and (b) towards a
  sharpened locality teacher by matching token-token cosine-similarity matrices.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from tslayers.model import EncoderOutput, TemporalEncoder, tap_name
from tslayers.objectives.forecast import pinball_loss
from tslayers.probing.taps import LayerTaps


# ---------------------------------------------------------------------------- losses
def sharpened_similarity(features: torch.Tensor, temperature: float) -> torch.Tensor:
    """Teacher similarity ``exp(t * (cos - 1))`` between all token pairs: (B, P, F) -> (B, P, P).

    Equal to 1 on the diagonal and decaying fast with dissimilarity (the paper uses t = 20).
    """
    f = F.normalize(features.float(), dim=-1)
    return torch.exp(temperature * (f @ f.transpose(1, 2) - 1.0))


def correspondence_loss(student_tokens: torch.Tensor, teacher_similarity: torch.Tensor):
    """MSE between the student's token-token cosine matrix (B, P, P) and the teacher's."""
    s = F.normalize(student_tokens.float(), dim=-1)
    return F.mse_loss(s @ s.transpose(1, 2), teacher_similarity)


def cosine_distillation_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Mean over tokens of 1 - cos(student, teacher); both (B, N, D)."""
    return (1.0 - F.cosine_similarity(student.float(), teacher.float(), dim=-1)).mean()


def quantile_loss(pred: torch.Tensor, target: torch.Tensor, quantiles: list[float]):
    """Pinball loss; ``pred`` (..., Q), ``target`` (...) with NaNs ignored."""
    q = torch.tensor(quantiles, device=pred.device, dtype=pred.dtype)
    observed = ~torch.isnan(target)
    loss = pinball_loss(pred, torch.nan_to_num(target), q)
    return (loss * observed[..., None]).sum() / (observed.sum() * len(quantiles)).clamp(min=1)


def masked_mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    observed = ~torch.isnan(target)
    diff = (pred - torch.nan_to_num(target)) ** 2
    return (diff * observed).sum() / observed.sum().clamp(min=1)


def spectral_descriptor(values: torch.Tensor, scales: tuple[int, ...] = (1, 2, 4)) -> torch.Tensor:
    """A per-patch signal descriptor: FFT magnitudes of the patch and of wider windows around it.

    ``values`` (B, P, L) scaled patch values -> (B, P, F). Multi-scale windows give neighbouring
    patches of the same local dynamics similar descriptors (a locality teacher with no training).
    """
    feats = []
    for s in scales:
        if s == 1:
            window = values
        else:  # average-pooled neighbourhood of s patches, centred, same length P
            pad = (s - 1) // 2, s - 1 - (s - 1) // 2
            padded = F.pad(rearrange(values, "b p l -> b l p"), pad, mode="replicate")
            window = rearrange(F.avg_pool1d(padded, s, stride=1), "b l p -> b p l")
        spec = torch.fft.rfft(window - window.mean(-1, keepdim=True), dim=-1).abs()
        feats.append(torch.log1p(spec))
    return torch.cat(feats, dim=-1)


# ---------------------------------------------------------------------------- forecast
class ForecastDecoder(nn.Module):
    """Small transformer decoder: horizon queries cross-attend to projected tokens."""

    def __init__(self, d_model: int, patch_len: int, horizon: int, n_outputs: int,
                 n_layers: int = 2, n_heads: int = 4):
        super().__init__()
        self.horizon = horizon
        self.n_queries = math.ceil(horizon / patch_len)
        self.patch_len = patch_len
        self.n_outputs = n_outputs
        self.queries = nn.Parameter(torch.randn(self.n_queries, d_model) * 0.02)
        layer = nn.TransformerDecoderLayer(d_model, n_heads, 4 * d_model, dropout=0.0,
                                           batch_first=True, norm_first=True, activation="gelu")
        self.decoder = nn.TransformerDecoder(layer, n_layers)
        self.norm = nn.LayerNorm(d_model)
        self.out = nn.Linear(d_model, patch_len * n_outputs)

    def forward(self, memory: torch.Tensor) -> torch.Tensor:
        """(B', N, D) -> (B', horizon, n_outputs) in scaled units."""
        q = self.queries.expand(memory.shape[0], -1, -1)
        h = self.out(self.norm(self.decoder(q, memory)))
        h = rearrange(h, "b q (l o) -> b (q l) o", o=self.n_outputs)
        return h[:, : self.horizon]


@dataclass
class ForecastHeadConfig:
    """Projector + decoder head of the forecast alignment."""

    horizon: int = 32
    decoder_layers: int = 2
    decoder_heads: int = 4
    quantiles: list[float] = field(default_factory=list)  # empty: point forecast with MSE


class ForecastAligner(nn.Module):
    """Truncated encoder -> 2-layer MLP projector -> forecasting decoder head."""

    def __init__(self, encoder: TemporalEncoder, layer: int, head: ForecastHeadConfig):
        super().__init__()
        if encoder.config.channel_mixing:
            raise ValueError("forecast alignment needs a channel-independent encoder")
        self.encoder = encoder.truncated(layer)
        d = encoder.config.d_model
        self.projector = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Linear(d, d))
        self.head_config = head
        n_out = max(1, len(head.quantiles))
        self.decoder = ForecastDecoder(d, encoder.config.patch_len, head.horizon, n_out,
                                       head.decoder_layers, head.decoder_heads)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, EncoderOutput]:
        """(B, T, C) -> forecast (B, horizon, C, n_outputs) in original units, encoder output."""
        out = self.encoder(x)
        pred = self.decoder(self.projector(out.tokens))  # (B*C, H, O)
        pred = rearrange(pred, "(b c) h o -> b h c o", c=out.patched.n_channels)
        loc, scale = out.patched.loc[..., None], out.patched.scale[..., None]
        return pred * scale + loc, out

    def loss(self, x: torch.Tensor, future: torch.Tensor) -> torch.Tensor:
        """Loss in scaled units so series of every magnitude weigh the same."""
        pred, out = self(x)
        loc, scale = out.patched.loc[..., None], out.patched.scale[..., None]
        pred_s = (pred - loc) / scale
        target_s = (future - out.patched.loc) / out.patched.scale
        if self.head_config.quantiles:
            return quantile_loss(pred_s, target_s, self.head_config.quantiles)
        return masked_mse(pred_s[..., 0], target_s)

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Point forecast (B, horizon, C): the median quantile, or the point output."""
        pred, _ = self(x)
        q = self.head_config.quantiles
        return pred[..., q.index(0.5) if 0.5 in q else pred.shape[-1] // 2]

    def head_parameters(self) -> list[nn.Parameter]:
        return [*self.projector.parameters(), *self.decoder.parameters()]

    def set_encoder_trainable(self, trainable: bool) -> None:
        self.encoder.requires_grad_(trainable)


# ---------------------------------------------------------------------------- dynamics
#: locality teachers: a layer of the encoder itself, a hand-made spectral descriptor, the true
#: latent states (an oracle: ground-truth supervision), a layer of another pretrained encoder
LOCALITY_TEACHERS = ("layer", "spectral", "latent", "encoder")


def _check_same_tokens(student: TemporalEncoder, teacher: TemporalEncoder) -> None:
    """Token-token similarities are only comparable on the same patch grid and token layout."""
    keys = ("patch_len", "stride", "channel_mixing")
    a, b = ({k: getattr(e.config, k) for k in keys} for e in (student, teacher))
    if a != b:
        raise ValueError(f"the teacher encoder's tokens do not line up with the student's: "
                         f"{b} vs {a}")


@dataclass
class DynamicsLossConfig:
    """Dynamics alignment losses; a weight of 0 switches a part off (single-teacher ablations)."""

    teacher_layer: int | None = None  # frozen semantic layer for self-distillation
    distill_weight: float = 1.0
    locality_teacher: str = "layer"  # "layer" | "spectral" | "latent" (oracle) | "encoder"
    locality_layer: int | None = 1  # "layer": a layer of this encoder; "encoder": of the
    # teacher encoder (None: chosen on validation from that encoder's probing results)
    correspondence_weight: float = 1.0
    temperature: float = 20.0
    student_mask_ratio: float = 0.0  # fraction of student input patches replaced by the mask token


class DynamicsAligner(nn.Module):
    """Student encoder distilled towards a frozen teacher layer and a locality teacher."""

    def __init__(self, encoder: TemporalEncoder, config: DynamicsLossConfig,
                 locality_encoder: TemporalEncoder | None = None):
        super().__init__()
        if config.locality_teacher not in LOCALITY_TEACHERS:
            raise ValueError(f"dynamics.locality_teacher must be one of {LOCALITY_TEACHERS}")
        layers = {"teacher_layer": (config.teacher_layer, encoder.n_layers)}
        if config.locality_teacher == "layer":
            layers["locality_layer"] = (config.locality_layer, encoder.n_layers)
        if config.locality_teacher == "encoder":
            if locality_encoder is None:
                raise ValueError("locality_teacher='encoder' needs a teacher encoder "
                                 "(align.teacher_checkpoint)")
            _check_same_tokens(encoder, locality_encoder)
            layers["locality_layer"] = (config.locality_layer, locality_encoder.n_layers)
        for name, (layer, L) in layers.items():
            if layer is None or not 0 <= layer <= L:
                raise ValueError(f"dynamics.{name}={layer} does not exist: the encoder has "
                                 f"layers 0..{L}")
        if config.distill_weight <= 0 and config.correspondence_weight <= 0:
            raise ValueError("dynamics alignment needs distill_weight or correspondence_weight > 0")
        if not 0.0 <= config.student_mask_ratio < 1.0:
            raise ValueError("dynamics.student_mask_ratio must lie in [0, 1)")
        self.config = config
        self.student = encoder
        self.teacher = copy.deepcopy(encoder).eval().requires_grad_(False)
        self.locality_encoder = (None if locality_encoder is None or config.locality_teacher
                                 != "encoder" else
                                 copy.deepcopy(locality_encoder).eval().requires_grad_(False))

    def train(self, mode: bool = True):
        super().train(mode)
        self.teacher.eval()  # the teachers never drop paths or mask
        if self.locality_encoder is not None:
            self.locality_encoder.eval()
        return self

    def _encoder_locality(self, x: torch.Tensor) -> torch.Tensor:
        """Patch tokens (B', P, F) of the teacher encoder's ``locality_layer``."""
        enc, name = self.locality_encoder, tap_name(self.config.locality_layer)
        with torch.no_grad(), LayerTaps(enc, [name], reduce="none", stop_early=False,
                                        to_cpu=False) as taps:
            hidden = taps.run(enc, x)[name]
        return hidden[:, enc.num_prefix :]

    def _locality_features(self, teacher_out: EncoderOutput, hidden: dict[int, torch.Tensor],
                           batch: dict) -> torch.Tensor:
        c = self.config
        if c.locality_teacher == "layer":
            return hidden[c.locality_layer][:, teacher_out.num_prefix :]
        if c.locality_teacher == "spectral":
            return spectral_descriptor(teacher_out.patched.values)
        if c.locality_teacher == "encoder":
            return self._encoder_locality(batch["x"])
        if "latent" not in batch:
            raise ValueError("locality_teacher='latent' needs data with latent states "
                             "(e.g. synthetic/lgssm); this batch has none")
        return self._latent_per_patch(batch["latent"], teacher_out)

    def _latent_per_patch(self, latent: torch.Tensor, out: EncoderOutput) -> torch.Tensor:
        """Latent states (B, T, S) averaged within each patch, repeated per channel token."""
        cfg = self.student.config
        lat = F.pad(latent.float(), (0, 0, out.patched.pad, 0))  # align with front padding
        lat = lat.unfold(1, cfg.patch_len, cfg.stride).mean(-1)  # (B, P, S)
        if cfg.channel_mixing:
            return lat
        return lat.repeat_interleave(out.patched.n_channels, dim=0)

    def losses(self, batch: dict) -> dict[str, torch.Tensor]:
        c = self.config
        x = batch["x"]
        need = sorted({c.teacher_layer} |
                      ({c.locality_layer} if c.locality_teacher == "layer" else set()))
        names = {layer: tap_name(layer) for layer in need}
        with LayerTaps(self.teacher, list(names.values()), reduce="none", stop_early=False,
                       to_cpu=False) as taps:
            tapped = taps.run(self.teacher, x)
            t_out = taps.output
        hidden = {layer: tapped[name] for layer, name in names.items()}
        patch_mask = None
        if c.student_mask_ratio > 0 and self.training:
            n_tokens = t_out.tokens.shape[:2]
            patch_mask = torch.rand(n_tokens[0], n_tokens[1] - t_out.num_prefix,
                                    device=x.device) < c.student_mask_ratio
        s_out = self.student(x, patch_mask=patch_mask)
        losses: dict[str, torch.Tensor] = {}
        if c.distill_weight > 0:
            teacher = hidden[c.teacher_layer]
            # compare against the teacher layer as the encoder would emit it (final-normed)
            teacher = F.layer_norm(teacher, teacher.shape[-1:])
            losses["distill"] = cosine_distillation_loss(s_out.tokens, teacher)
        if c.correspondence_weight > 0:
            target = sharpened_similarity(self._locality_features(t_out, hidden, batch),
                                          c.temperature)
            losses["correspondence"] = correspondence_loss(s_out.patch_tokens, target)
        losses["loss"] = (c.distill_weight * losses.get("distill", 0.0)
                          + c.correspondence_weight * losses.get("correspondence", 0.0))
        return losses
