"""Adapters that make public forecasting models tappable on (B, T, C) windows.

Each builder returns a :class:`PublicModel`: a wrapper ``nn.Module`` taking (B, T, C) float
windows (NaN = missing where the model has a mask), the tap glob that reaches every block, and
the keyword arguments :class:`~tslayers.probing.LayerTaps` needs for the blocks' layout::

    pm = patchtst("ibm-granite/granite-timeseries-patchtst")      # hub id or local folder
    pm = patchtst(context_length=64, num_input_channels=3, seed=0)  # random init from a config
    with LayerTaps(pm.module, pm.taps, reduce="mean", **pm.tap_kwargs) as taps:
        feats = taps.run(pm.module, x)                                # x: (B, T, C)

A ``source`` (hub id or local directory) loads weights with the library's ``from_pretrained``;
without one, the model is built from its config (library defaults overridden by ``config``
keyword arguments) with the library's random initialisation under ``seed``.

Architectures: Hugging Face ``transformers`` PatchTST, PatchTSMixer and TimesFM; Chronos and
Chronos-Bolt (``chronos-forecasting``); MOMENT (``momentfm``, in an environment of its own).
Each needs its package (the ``models`` extra); builders raise ``ImportError`` naming it when it
is absent.

Channel handling: PatchTST and PatchTSMixer take all channels at once (their blocks hold
(B, C, N, D): tokens per channel, so the taps' time axis is 2 and pooled features concatenate
channels). TimesFM, Chronos, Chronos-Bolt and MOMENT are univariate: the wrapper folds
channels into the batch and ``tap_kwargs["transform"]`` regroups each tap's (B·C, N, D) as
(B, N, C·D).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import torch
from einops import rearrange
from torch import nn

from .taps import select_modules


@dataclasses.dataclass
class PublicModel:
    """A public model behind a (B, T, C) interface, with the globs and layout to tap it.

    ``module(x)`` returns the encoder's last hidden state. ``taps``: comma-separated names of
    every block (``model.encoder.layers.0,...``), accepted wherever tap globs are.
    ``context_length``: the window length the model takes (``exact_length``: only that
    length; otherwise at most that, and longer windows are refused). ``n_channels``: the
    channel count it was built for (None: any, channels are folded into the batch).
    """

    name: str
    module: nn.Module
    taps: str
    context_length: int
    n_channels: int | None
    exact_length: bool
    time_dim: int = 1
    transform: Callable[[str, torch.Tensor], torch.Tensor] | None = None
    layout: str = "(B, T, C) float windows"

    @property
    def tap_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for :class:`LayerTaps` on ``module``."""
        return {"time_dim": self.time_dim, "transform": self.transform}

    def layer_names(self) -> list[str]:
        """Every tapped block, in forward order."""
        return list(select_modules(self.module, self.taps))


def _blocks(module: nn.Module, prefix: str) -> str:
    """Tap patterns naming each block of the ``nn.ModuleList`` at ``prefix`` (a bare
    ``prefix.*`` would also match every sub-module, since ``*`` crosses dots)."""
    return ",".join(f"{prefix}.{i}" for i in range(len(module.get_submodule(prefix))))


def _require(package: str, extra: str = "models") -> None:
    import importlib.util

    if importlib.util.find_spec(package) is None:
        raise ImportError(f"this adapter needs the '{package}' package: pip install "
                          f"'tslayers[{extra}]' (or pip install {package})")


def _check(x: torch.Tensor, name: str, context: int, channels: int | None, exact: bool) -> None:
    if x.dim() != 3:
        raise ValueError(f"{name} wrapper takes (batch, time, channels) windows, got shape "
                         f"{tuple(x.shape)}")
    t, c = x.shape[1], x.shape[2]
    if (exact and t != context) or t > context:
        need = f"exactly {context}" if exact else f"at most {context}"
        raise ValueError(f"{name} takes windows of {need} steps (its context_length), got {t}: "
                         f"set --context {context}")
    if channels is not None and c != channels:
        raise ValueError(f"{name} was built for {channels} channels, the data has {c}: pick "
                         "data with that many channels or rebuild the model with "
                         f"num_input_channels={c}")


def _seeded(seed: int, build: Callable[[], nn.Module]) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def _regroup(n_channels: Callable[[], int]) -> Callable[[str, torch.Tensor], torch.Tensor]:
    """Transform for univariate models: (B·C, N, D) -> (B, N, C·D), C read at call time."""

    def transform(name: str, t: torch.Tensor) -> torch.Tensor:
        return rearrange(t, "(b c) n d -> b n (c d)", c=n_channels())

    return transform


class _Folded(nn.Module):
    """Base for univariate models: remembers the channel count of the current batch."""

    n_channels_seen = 1

    def fold(self, x: torch.Tensor) -> torch.Tensor:
        self.n_channels_seen = x.shape[2]
        return rearrange(x, "b t c -> (b c) t")


# ---------------------------------------------------------------------------- PatchTST
class HFWindows(nn.Module):
    """A Hugging Face patch model (PatchTST, PatchTSMixer) on (B, T, C): ``past_values=x``, NaNs
    given as unobserved through the model's own mask argument (``mask_arg``)."""

    def __init__(self, model: nn.Module, name: str, mask_arg: str):
        super().__init__()
        self.model, self.name, self.mask_arg = model, name, mask_arg

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cfg = self.model.config
        _check(x, self.name, cfg.context_length, cfg.num_input_channels, True)
        out = self.model(past_values=torch.nan_to_num(x), **{self.mask_arg: ~torch.isnan(x)})
        return out.last_hidden_state  # (B, C, N, D)


def patchtst(source: str | None = None, *, seed: int = 0, **config: Any) -> PublicModel:
    """PatchTST (Nie et al., 2023) from ``transformers``; taps ``model.encoder.layers.*``."""
    _require("transformers")
    from transformers import PatchTSTConfig, PatchTSTModel

    if source is not None:
        model = PatchTSTModel.from_pretrained(source)
    else:
        model = _seeded(seed, lambda: PatchTSTModel(PatchTSTConfig(**config)))
    cfg = model.config
    wrapper = HFWindows(model.eval(), "PatchTST", "past_observed_mask")
    return PublicModel("patchtst", wrapper, _blocks(wrapper, "model.encoder.layers"),
                       cfg.context_length, cfg.num_input_channels, True, time_dim=2,
                       layout="past_values (B, T, C); blocks hold (B, C, N, D)")


# ---------------------------------------------------------------------------- PatchTSMixer
def patchtsmixer(source: str | None = None, *, seed: int = 0, **config: Any) -> PublicModel:
    """PatchTSMixer (Ekambaram et al., 2023); taps ``model.encoder.mlp_mixer_encoder.mixers.*``
    (one per mixer layer)."""
    _require("transformers")
    from transformers import PatchTSMixerConfig, PatchTSMixerModel

    if source is not None:
        model = PatchTSMixerModel.from_pretrained(source)
    else:
        model = _seeded(seed, lambda: PatchTSMixerModel(PatchTSMixerConfig(**config)))
    cfg = model.config
    wrapper = HFWindows(model.eval(), "PatchTSMixer", "observed_mask")
    return PublicModel("patchtsmixer", wrapper,
                       _blocks(wrapper, "model.encoder.mlp_mixer_encoder.mixers"),
                       cfg.context_length,
                       cfg.num_input_channels, True, time_dim=2,
                       layout="past_values (B, T, C); blocks hold (B, C, N, D)")


# ---------------------------------------------------------------------------- TimesFM
class TimesFMWindows(_Folded):
    """HF ``TimesFmModel`` on (B, T, C): channels folded into the batch, windows left-padded
    to a whole number of patches (padding marked in ``past_values_padding``, as are NaNs)."""

    def __init__(self, model: nn.Module, freq: int = 0):
        super().__init__()
        self.model = model
        self.freq = freq

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cfg = self.model.config
        _check(x, "TimesFM", cfg.context_length, None, False)
        series = self.fold(x)
        pad = -series.shape[1] % cfg.patch_length
        missing = torch.isnan(series)
        series = nn.functional.pad(torch.nan_to_num(series), (pad, 0))
        padding = nn.functional.pad(missing.long(), (pad, 0), value=1)
        freq = torch.full((len(series), 1), self.freq, dtype=torch.long, device=x.device)
        return self.model(past_values=series, past_values_padding=padding,
                          freq=freq).last_hidden_state


def timesfm(source: str | None = None, *, seed: int = 0, freq: int = 0,
            **config: Any) -> PublicModel:
    """TimesFM (Das et al., 2024) decoder from ``transformers``; taps ``model.layers.*``.
    ``freq``: TimesFM's frequency class (0 high, 1 medium, 2 low)."""
    _require("transformers")
    try:
        from transformers import TimesFmConfig, TimesFmModel
    except ImportError as err:
        raise ImportError("this transformers version has no TimesFM (added in 4.52)") from err

    if source is not None:
        model = TimesFmModel.from_pretrained(source)
    else:
        model = _seeded(seed, lambda: TimesFmModel(TimesFmConfig(**config)))
    wrapper = TimesFMWindows(model.eval(), freq)
    return PublicModel("timesfm", wrapper, _blocks(wrapper, "model.layers"),
                       model.config.context_length, None, False,
                       transform=_regroup(lambda: wrapper.n_channels_seen),
                       layout="univariate past_values (B*C, T); blocks hold (B*C, N, D)")


# ---------------------------------------------------------------------------- Chronos-Bolt
class ChronosBoltWindows(_Folded):
    """Chronos-Bolt's T5 encoder on (B, T, C): channels folded into the batch, NaN = missing
    (the model's own mask and instance scaling)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check(x, "Chronos-Bolt", self.model.chronos_config.context_length, None, False)
        return self.model.encode(self.fold(x))[0]


def chronos_bolt(source: str | None = None, *, seed: int = 0,
                 chronos_config: dict[str, Any] | None = None, **t5_config: Any) -> PublicModel:
    """Chronos-Bolt (``chronos-forecasting``): T5 encoder over patches; taps
    ``model.encoder.block.*``. From a config: ``T5Config(**t5_config)`` plus
    ``chronos_config`` (context_length, prediction_length, input_patch_size,
    input_patch_stride, quantiles, use_reg_token)."""
    _require("chronos")
    from chronos.chronos_bolt import ChronosBoltModelForForecasting

    if source is not None:
        model = ChronosBoltModelForForecasting.from_pretrained(source)
    else:
        from transformers import T5Config

        bolt = dict(context_length=512, prediction_length=64, input_patch_size=16,
                    input_patch_stride=16, quantiles=[0.1, 0.5, 0.9], use_reg_token=False)
        bolt.update(chronos_config or {})
        cfg = T5Config(**t5_config, chronos_config=bolt)
        model = _seeded(seed, lambda: ChronosBoltModelForForecasting(cfg))
    wrapper = ChronosBoltWindows(model.eval())
    return PublicModel("chronos-bolt", wrapper, _blocks(wrapper, "model.encoder.block"),
                       model.chronos_config.context_length, None, False,
                       transform=_regroup(lambda: wrapper.n_channels_seen),
                       layout="univariate context (B*C, T); blocks hold (B*C, N, D)")


# ---------------------------------------------------------------------------- Chronos (T5)
class ChronosWindows(_Folded):
    """Original Chronos (tokenised values, T5 encoder) on (B, T, C): channels folded into the
    batch, values mean-scaled and binned by Chronos' own tokenizer (NaN = missing); the
    encoder sees T tokens plus EOS."""

    def __init__(self, pipeline: Any):
        super().__init__()
        self.model = pipeline.model  # ChronosModel: .model is the T5 model
        self.tokenizer = pipeline.tokenizer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check(x, "Chronos", self.model.config.context_length, None, False)
        ids, mask, _ = self.tokenizer.context_input_transform(self.fold(x).cpu())
        return self.model.encode(ids.to(x.device), mask.to(x.device))


CHRONOS_DEFAULTS: dict[str, Any] = dict(
    tokenizer_class="MeanScaleUniformBins",
    tokenizer_kwargs={"low_limit": -15.0, "high_limit": 15.0},
    context_length=512, prediction_length=64, n_tokens=4096, n_special_tokens=2,
    pad_token_id=0, eos_token_id=1, use_eos_token=True, model_type="seq2seq", num_samples=20,
    temperature=1.0, top_k=50, top_p=1.0,
)


def chronos(source: str | None = None, *, seed: int = 0,
            chronos_config: dict[str, Any] | None = None, **t5_config: Any) -> PublicModel:
    """Chronos (Ansari et al., 2024; ``chronos-forecasting``), seq2seq T5 on binned values;
    taps ``model.model.encoder.block.*``. From a config: ``T5Config(**t5_config)`` plus
    ``chronos_config`` over :data:`CHRONOS_DEFAULTS` (the chronos-t5 settings)."""
    _require("chronos")
    from chronos.chronos import ChronosConfig, ChronosModel, ChronosPipeline

    if source is not None:
        pipeline = ChronosPipeline.from_pretrained(source)
    else:
        from transformers import T5Config, T5ForConditionalGeneration

        cc = ChronosConfig(**{**CHRONOS_DEFAULTS, **(chronos_config or {})})
        t5 = T5Config(**{"vocab_size": cc.n_tokens, "pad_token_id": cc.pad_token_id,
                         "eos_token_id": cc.eos_token_id,
                         "decoder_start_token_id": cc.pad_token_id, **t5_config})
        inner = _seeded(seed, lambda: T5ForConditionalGeneration(t5))
        pipeline = ChronosPipeline(tokenizer=cc.create_tokenizer(),
                                   model=ChronosModel(config=cc, model=inner))
    wrapper = ChronosWindows(pipeline)
    wrapper.eval()
    return PublicModel("chronos", wrapper, _blocks(wrapper, "model.model.encoder.block"),
                       pipeline.model.config.context_length, None, False,
                       transform=_regroup(lambda: wrapper.n_channels_seen),
                       layout="univariate tokens (B*C, T+1); blocks hold (B*C, T+1, D)")


# ---------------------------------------------------------------------------- MOMENT
class MomentWindows(_Folded):
    """MOMENT's T5 encoder on (B, T, C) (``task_name='embedding'``); channels are independent
    in MOMENT, given as (B, C, T)."""

    def __init__(self, pipeline: nn.Module):
        super().__init__()
        self.model = pipeline

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check(x, "MOMENT", self.model.seq_len, None, True)
        self.n_channels_seen = x.shape[2]
        observed = ~torch.isnan(x).any(-1)
        out = self.model(x_enc=torch.nan_to_num(x).transpose(1, 2), input_mask=observed.long())
        return out.embeddings


def moment(source: str | None = None, *, seed: int = 0, seq_len: int = 512, patch_len: int = 8,
           **t5_config: Any) -> PublicModel:
    """MOMENT (Goswami et al., 2024) from ``momentfm`` (e.g. ``"AutonLab/MOMENT-1-small"``);
    taps ``model.encoder.block.*``; windows must be ``seq_len`` steps. From a config: a T5
    encoder ``T5Config(**t5_config)`` over patches of ``patch_len`` steps. momentfm pins
    transformers 4.33, so it lives in its own environment, not next to the ``models`` extra."""
    _require("momentfm")
    from momentfm import MOMENTPipeline

    embed = {"task_name": "embedding"}
    if source is not None:
        pipeline = MOMENTPipeline.from_pretrained(source, model_kwargs=embed)
    else:
        config = dict(task_name="embedding", seq_len=seq_len, patch_len=patch_len,
                      patch_stride_len=patch_len, transformer_backbone="google/flan-t5-small",
                      transformer_type="encoder_only", d_model=None, t5_config=t5_config,
                      enable_gradient_checkpointing=False)
        pipeline = _seeded(seed, lambda: MOMENTPipeline(config, model_kwargs=dict(embed)))
    pipeline.init()
    wrapper = MomentWindows(pipeline.eval())
    return PublicModel("moment", wrapper, _blocks(wrapper, "model.encoder.block"),
                       pipeline.seq_len, None, True,
                       transform=_regroup(lambda: wrapper.n_channels_seen),
                       layout="x_enc (B, C, T); blocks hold (B*C, N, D)")


BUILDERS: dict[str, Callable[..., PublicModel]] = {
    "patchtst": patchtst,
    "patchtsmixer": patchtsmixer,
    "timesfm": timesfm,
    "chronos": chronos,
    "chronos-bolt": chronos_bolt,
    "moment": moment,
}


def load_public(name: str, source: str | None = None, **kwargs: Any) -> PublicModel:
    """``load_public("patchtst", "ibm-granite/...")`` or ``load_public("timesfm", **config)``."""
    if name not in BUILDERS:
        raise ValueError(f"unknown public model '{name}'; available: {', '.join(BUILDERS)}")
    if source is not None:
        kwargs["source"] = source
    return BUILDERS[name](**kwargs)
