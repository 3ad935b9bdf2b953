"""TemporalEncoder: instance scaling, patch tokens, prefix registers, pre-norm RoPE blocks, taps.

Layer indices used everywhere in tslayers: ``0`` is the patch embedding, ``i`` (1..L) the output
of block ``i-1``. Every layer ends in an identity module, so its stable tap name is a real entry
of ``named_modules()`` and a forward hook on it is the one way to read it (the TransformerLens
hook-point idea; :mod:`tslayers.probing.taps` reads them for this encoder and any other model):

=================  =======================================================
``embed.out``      layer 0: patch (+ register) embeddings
``blocks.{i}.out`` layer ``i + 1``: residual stream after block ``i``
=================  =======================================================

Sub-modules keep readable names (``blocks.{i}.attn``, ``blocks.{i}.mlp``) so hooks can reach
inside a block too.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from einops import rearrange
from torch import nn

from tslayers.kernels import BACKENDS, AttentionStats

from .layers import Block, rope_tables

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


@dataclass
class EncoderConfig:
    """Architecture of a :class:`TemporalEncoder` (everything needed to rebuild it)."""

    n_channels: int = 1
    patch_len: int = 16
    stride: int | None = None  # None: non-overlapping patches (stride = patch_len)
    d_model: int = 128
    n_layers: int = 6
    n_heads: int = 4
    mlp_ratio: float = 4.0
    dropout: float = 0.0
    drop_path: float = 0.0
    layerscale: float | None = 0.1  # None or 0 disables LayerScale
    causal: bool = False
    channel_mixing: bool = False  # False: one token sequence per channel (channel-independent)
    n_registers: int = 0  # prefix register/CLS tokens
    rope_base: float = 10000.0
    scaling: bool = True  # instance scaling from observed values (RevIN-style, no affine)
    attn_backend: str = "auto"

    def __post_init__(self) -> None:
        if self.stride is None:
            self.stride = self.patch_len
        from tslayers.config import check_ranges

        heads_ok = self.n_heads >= 1 and self.d_model % self.n_heads == 0
        check_ranges("encoder", self, {
            "patch_len": (self.patch_len >= 1, "use a patch length >= 1"),
            "stride": (self.stride >= 1, "use a stride >= 1 (or leave it empty = patch_len)"),
            "d_model": (self.d_model >= 2, "use a width >= 2"),
            "n_layers": (self.n_layers >= 1, "use at least 1 layer"),
            "n_heads": (heads_ok and (self.d_model // self.n_heads) % 2 == 0,
                        f"use a head count that splits d_model={self.d_model} into heads of "
                        "even size (RoPE rotates pairs)"),
            "mlp_ratio": (self.mlp_ratio > 0, "use a positive MLP width ratio, e.g. 4"),
            "dropout": (0.0 <= self.dropout < 1.0, "use a rate in [0, 1)"),
            "drop_path": (0.0 <= self.drop_path < 1.0, "use a rate in [0, 1)"),
            "n_registers": (self.n_registers >= 0, "use 0 or more registers"),
            "n_channels": (self.n_channels >= 1, "use 1 or more channels"),
            "rope_base": (self.rope_base > 0, "use a positive base, e.g. 10000"),
        })
        if self.attn_backend not in BACKENDS:
            raise ValueError(f"encoder.attn_backend must be one of {BACKENDS}")


@dataclass
class Patched:
    """Instance-scaled input cut into patches (what the embedding and objectives consume).

    ``values``  (B', P, patch_len * k) scaled values with unobserved entries set to 0;
    ``observed`` same shape, 1.0 where observed; B' = B*C and k = 1 when channel-independent,
    B' = B and k = C when channel-mixing. ``loc``/``scale`` (B, 1, C) map scaled values back.
    """

    values: torch.Tensor
    observed: torch.Tensor
    loc: torch.Tensor
    scale: torch.Tensor
    n_channels: int
    pad: int  # time steps of NaN padding added at the front so patches end at the last step


@dataclass
class EncoderOutput:
    """Result of one forward pass. ``tokens``: (B', N, D) with N = n_registers + P."""

    tokens: torch.Tensor
    patched: Patched
    num_prefix: int
    attn_stats: dict[int, AttentionStats] = field(default_factory=dict)

    @property
    def patch_tokens(self) -> torch.Tensor:
        """Final tokens without the prefix registers, (B', P, D)."""
        return self.tokens[:, self.num_prefix :]

    def per_channel(self, t: torch.Tensor) -> torch.Tensor:
        """Regroup a (B*C, ...) channel-independent tensor as (B, C, ...)."""
        return rearrange(t, "(b c) ... -> b c ...", c=self.patched.n_channels)


FLAT_FLOOR = 1e-2  # scale floor, relative to the context's root-mean-square


def instance_stats(x: torch.Tensor, observed: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per (series, channel) ``loc`` and ``scale`` (B, 1, C) from observed values only.

    ``loc`` is the mean and ``scale`` the standard deviation, floored at ``FLAT_FLOOR`` times
    the root-mean-square of the observed values: a flat context (std 0) at level ``m`` gets
    scale ``0.01 |m|``, so what follows it is measured relative to the series' own magnitude
    instead of being multiplied by ~316 as an absolute ``sqrt(var + 1e-5)`` floor did. An
    all-zero or unobserved context gets scale 1 (nothing to normalise). Call with float64
    inputs (x zero where unobserved) so huge values do not overflow.
    """
    count = observed.sum(1, keepdim=True).clamp(min=1)
    loc = x.sum(1, keepdim=True) / count
    var = ((x - loc) ** 2 * observed).sum(1, keepdim=True) / count
    rms = torch.sqrt((x**2 * observed).sum(1, keepdim=True) / count)
    scale = torch.maximum(torch.sqrt(var), FLAT_FLOOR * rms)
    return loc, torch.where(scale > 0, scale, torch.ones_like(scale))


def tap_name(layer: int) -> str:
    """Stable module name of layer ``layer`` (0 = embeddings)."""
    return "embed.out" if layer == 0 else f"blocks.{layer - 1}.out"


class PatchEmbed(nn.Module):
    """Linear embedding of (values, observed-mask) patches; ``out`` is the layer-0 tap point."""

    def __init__(self, per_token: int, d_model: int):
        super().__init__()
        self.proj = nn.Linear(2 * per_token, d_model)
        self.out = nn.Identity()


class TemporalEncoder(nn.Module):
    """Patch-token transformer over (B, T, C) series with NaNs as missing values."""

    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.config = config
        c = config
        per_token = c.patch_len * (c.n_channels if c.channel_mixing else 1)
        self.embed = PatchEmbed(per_token, c.d_model)
        self.mask_token = nn.Parameter(torch.zeros(c.d_model))
        self.registers = nn.Parameter(torch.randn(c.n_registers, c.d_model) * 0.02)
        dpr = [c.drop_path * i / max(1, c.n_layers - 1) for i in range(c.n_layers)]
        self.blocks = nn.ModuleList(
            Block(c.d_model, c.n_heads, c.mlp_ratio, c.dropout, dpr[i], c.layerscale or None,
                  c.attn_backend)
            for i in range(c.n_layers)
        )
        self.norm = nn.LayerNorm(c.d_model)
        self.apply(_init_weights)

    # ------------------------------------------------------------------ names and sizes
    @property
    def n_layers(self) -> int:
        return len(self.blocks)

    @property
    def num_prefix(self) -> int:
        return self.registers.shape[0]

    def tap_names(self) -> dict[str, int]:
        """Stable tap name -> layer index (0 = embeddings, L = last block)."""
        return {tap_name(i): i for i in range(self.n_layers + 1)}

    def n_patches(self, length: int) -> int:
        c = self.config
        return -(-(max(length, c.patch_len) - c.patch_len) // c.stride) + 1

    # ------------------------------------------------------------------ input handling
    def patchify(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> Patched:
        """Scale (B, T, C) by observed statistics and cut into patches (see :class:`Patched`)."""
        c = self.config
        if x.dim() != 3:
            raise ValueError(
                f"expected input of shape (batch, time, channels), got {tuple(x.shape)}"
            )
        b, t, ch = x.shape
        if t < c.patch_len:
            raise ValueError(
                f"series of length {t} is shorter than one patch: the minimum length is "
                f"patch_len={c.patch_len}; use longer windows or a smaller encoder.patch_len"
            )
        if c.channel_mixing and ch != c.n_channels:
            raise ValueError(
                f"channel-mixing encoder was built for n_channels={c.n_channels}, got {ch} channels"
            )
        observed = torch.isfinite(x)  # NaN and +-inf both count as missing
        if mask is not None:
            observed = observed & mask.bool()
        # statistics in float64 (squares of values near 1e20 overflow float32); MPS has none
        wide = torch.float32 if x.device.type == "mps" else torch.float64
        x64 = torch.where(observed, x.to(wide), torch.zeros((), dtype=wide, device=x.device))
        obs64 = observed.to(wide)
        if c.scaling:
            loc, scale = instance_stats(x64, obs64)
        else:
            loc = torch.zeros(b, 1, ch, dtype=wide, device=x.device)
            scale = torch.ones(b, 1, ch, dtype=wide, device=x.device)
        values = ((x64 - loc) / scale * obs64).float()
        obs_f = observed.float()
        loc, scale = loc.float(), scale.float()
        pad = (self.n_patches(t) - 1) * c.stride + c.patch_len - t
        if pad:
            values = nn.functional.pad(values, (0, 0, pad, 0))
            obs_f = nn.functional.pad(obs_f, (0, 0, pad, 0))
        v = values.unfold(1, c.patch_len, c.stride)  # (B, P, C, patch_len)
        o = obs_f.unfold(1, c.patch_len, c.stride)
        pattern = "b p c l -> b p (c l)" if c.channel_mixing else "b p c l -> (b c) p l"
        return Patched(rearrange(v, pattern), rearrange(o, pattern), loc, scale, ch, pad)

    def embed_patches(
        self, patched: Patched, patch_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Patch embeddings with prefix registers: (B', n_registers + P, D).

        ``patch_mask`` (B', P) bool replaces those patches by the learned mask token
        (masked reconstruction and JEPA context encoders).
        """
        tokens = self.embed.proj(torch.cat([patched.values, patched.observed], dim=-1))
        if patch_mask is not None:
            if patch_mask.shape != tokens.shape[:2]:
                raise ValueError(f"patch_mask must be {tuple(tokens.shape[:2])}, "
                                 f"got {tuple(patch_mask.shape)}")
            tokens = torch.where(patch_mask[..., None], self.mask_token.to(tokens.dtype), tokens)
        prefix = self.registers.expand(tokens.shape[0], -1, -1)
        return self.embed.out(torch.cat([prefix.to(tokens.dtype), tokens], dim=1))

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None = None,
        *,
        patch_mask: torch.Tensor | None = None,
        key_lengths: torch.Tensor | None = None,
        attn_stats: bool = False,
    ) -> EncoderOutput:
        """Encode (B, T, C) -> :class:`EncoderOutput`.

        ``attn_stats``: collect per-layer :class:`AttentionStats` (keyed by layer index 1..L).
        Intermediate layers are read with forward hooks on ``embed.out`` / ``blocks.{i}.out``
        (see :class:`tslayers.probing.LayerTaps`, which also stops the pass early).
        """
        patched = self.patchify(x, mask)
        h = self.embed_patches(patched, patch_mask)
        n_patches = h.shape[1] - self.num_prefix
        head_dim = self.config.d_model // self.config.n_heads
        rope = rope_tables(n_patches, self.num_prefix, head_dim, self.config.rope_base,
                           h.device, h.dtype)
        stats: dict[int, AttentionStats] = {}
        for i, block in enumerate(self.blocks):
            h, st = block(h, rope, causal=self.config.causal, num_prefix=self.num_prefix,
                          key_lengths=key_lengths, stats=attn_stats)
            if st is not None:
                stats[i + 1] = st
        return EncoderOutput(self.norm(h), patched, self.num_prefix, stats)

    # ------------------------------------------------------------------ surgery and I/O
    def set_drop_path(self, rate: float) -> None:
        """Stochastic depth growing linearly with depth up to ``rate`` (0 switches it off);
        alignment tuning raises it for regularisation, evaluation sets it back to 0."""
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"drop_path rate must lie in [0, 1), got {rate}")
        for i, block in enumerate(self.blocks):
            block.drop_path.p = rate * i / max(1, self.n_layers - 1)

    def truncated(self, n_layers: int) -> TemporalEncoder:
        """A copy keeping blocks 0..n_layers-1 (layer ``n_layers``) and their weights."""
        if not 1 <= n_layers <= self.n_layers:
            raise ValueError(f"cannot truncate a {self.n_layers}-layer encoder at layer "
                             f"{n_layers}; choose 1..{self.n_layers}")
        clone = copy.deepcopy(self)
        clone.blocks = clone.blocks[:n_layers]
        clone.config = dataclasses.replace(self.config, n_layers=n_layers)
        return clone

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write ``config.json`` and ``model.safetensors`` (no pickles) into ``directory``."""
        from safetensors.torch import save_file

        from tslayers.io import atomic_path, atomic_write

        directory = Path(directory)
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        with atomic_path(directory / WEIGHTS_FILE) as tmp:
            save_file(state, str(tmp), metadata={"format": "pt", "tslayers": "TemporalEncoder"})
        atomic_write(directory / CONFIG_FILE, json.dumps(dataclasses.asdict(self.config), indent=2))
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | Path, **overrides) -> TemporalEncoder:
        """Rebuild from :meth:`save_pretrained` output; ``overrides`` change e.g. attn_backend.

        ``directory`` may also be a run folder holding an ``encoder/`` sub-folder (pretrain and
        align runs write one).
        """
        from safetensors.torch import load_file

        from tslayers.config import from_dict

        directory = Path(directory)
        nested = directory / "encoder"
        if not (directory / CONFIG_FILE).is_file() and (nested / CONFIG_FILE).is_file():
            directory = nested
        cfg_path, w_path = directory / CONFIG_FILE, directory / WEIGHTS_FILE
        for p in (cfg_path, w_path):
            if not p.is_file():
                raise FileNotFoundError(
                    f"no {p.name} in '{directory}': expected a directory written by "
                    "TemporalEncoder.save_pretrained (e.g. a pretrain run's 'encoder/' folder)"
                )
        config = from_dict(EncoderConfig, {**json.loads(cfg_path.read_text()), **overrides})
        model = cls(config)
        state = load_file(str(w_path))
        own = model.state_dict()
        missing = sorted(set(own) - set(state))
        unexpected = sorted(set(state) - set(own))
        mismatched = [k for k in state if k in own and own[k].shape != state[k].shape]
        if missing or unexpected or mismatched:
            raise ValueError(
                f"weights in '{w_path}' do not fit the architecture in {cfg_path.name}: "
                f"missing={missing[:5]} unexpected={unexpected[:5]} mismatched={mismatched[:5]}"
            )
        model.load_state_dict(state)
        return model


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
