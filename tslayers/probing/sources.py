"""Feature sources: anything that turns a window sample into per-layer features.

One protocol, several implementations, so every task, control and diagnostic applies to every
model alike:

- :class:`EncoderSource`: tslayers' own :class:`~tslayers.model.TemporalEncoder` (patch tokens,
  registers, attention statistics, the forecast lens of its objective);
- :class:`ModuleSource`: any ``nn.Module`` tapped by module-name globs (a GRU world model, a
  Hugging Face transformer, a GluonTS PatchTST);
- controls: :class:`RawWindowSource` (the window itself), :class:`PeriodogramSource` (its
  log-periodogram), :class:`MiniRocketSource` (MiniRocket features), and every source's
  :meth:`untrained` twin (same architecture, fresh initialisation).

To add a source, implement ``name``, ``causal``, ``instance_scaled``, ``series_only`` and
``extract(x, fit_rows)`` returning :class:`~tslayers.probing.features.Features`.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from einops import rearrange
from torch import nn
from tqdm.auto import tqdm

from .diagnostics import AttentionSummary, TokenDiagnostics
from .features import Features, window_scaling
from .taps import LayerTaps, TapsNotFired, firing_taps, select_modules
from .untrained import untrained_twin


class FeatureSource(Protocol):
    """What the probing pipeline needs from a model or a control."""

    name: str
    causal: bool  # features at a step see only the past (compared with the Kalman filter)
    instance_scaled: bool  # the source normalises each window itself (forecast target scaling)
    series_only: bool  # no time-aligned tokens: only series-level tasks apply

    def extract(self, x: np.ndarray, fit_rows: np.ndarray | None = None) -> Features:
        """Features of windows ``x`` (W, T, C); ``fit_rows`` marks the training windows for
        sources that fit something to data (they must not look at the other rows)."""
        ...


@dataclass
class ExtractOptions:
    batch_size: int = 64
    device: str = "cpu"
    diagnostics: bool = True
    outlier_factor: float = 3.0
    progress: bool = False


def _batches(n: int, size: int, progress: bool, desc: str):
    return tqdm(range(0, n, size), desc=desc, disable=not progress, leave=False)


# ------------------------------------------------------------------------------ encoder
def all_layers(encoder: nn.Module, x: torch.Tensor, **forward_kw):
    """Every layer's tokens of a TemporalEncoder from one pass, read by forward hooks on the
    stable tap modules: ({layer: (B', N, D)}, EncoderOutput)."""
    from tslayers.model import tap_name

    names = [tap_name(l) for l in range(encoder.n_layers + 1)]
    with LayerTaps(encoder, names, reduce="none", stop_early=False, to_cpu=False) as taps:
        hidden = taps.run(encoder, x, **forward_kw)
        return {l: hidden[n] for l, n in enumerate(names)}, taps.output


class EncoderSource:
    """tslayers' TemporalEncoder, every layer tapped at ``embed.out`` / ``blocks.{i}.out``."""

    series_only = False

    def __init__(self, encoder: nn.Module, name: str, *, objective=None, pool: str = "mean",
                 options: ExtractOptions | None = None):
        self.encoder, self.name, self.objective, self.pool = encoder, name, objective, pool
        self.options = options or ExtractOptions()
        self.causal = bool(encoder.config.causal)
        self.instance_scaled = bool(encoder.config.scaling)
        if pool == "register" and encoder.num_prefix == 0:
            raise ValueError("probe.pool='register' but the encoder has no register tokens "
                             "(encoder.n_registers=0); use pool: mean")

    def untrained(self, seed: int) -> EncoderSource:
        torch.manual_seed(seed)
        twin = type(self.encoder)(copy.deepcopy(self.encoder.config))
        return EncoderSource(twin, f"{self.name}/untrained", pool=self.pool, options=self.options)

    def token_grid(self, length: int) -> tuple[np.ndarray, int]:
        cfg = self.encoder.config
        n = self.encoder.n_patches(length)
        pad = (n - 1) * cfg.stride + cfg.patch_len - length
        return np.arange(n) * cfg.stride - pad + cfg.patch_len - 1, cfg.patch_len

    @torch.no_grad()
    def extract(self, x: np.ndarray, fit_rows: np.ndarray | None = None) -> Features:
        from tslayers.model import tap_name

        enc, opt = self.encoder.to(self.options.device).eval(), self.options
        layers = list(range(enc.n_layers + 1))
        names = [tap_name(l) for l in layers]
        n_prefix, c = enc.num_prefix, x.shape[-1]
        mixing = enc.config.channel_mixing
        lens_on = self.objective is not None and hasattr(self.objective, "decode")
        tokens: dict[int, list] = {l: [] for l in layers}
        pooled: dict[int, list] = {l: [] for l in layers}
        lens: dict[int, list] = {l: [] for l in layers}
        diag = TokenDiagnostics(layers, opt.outlier_factor) if opt.diagnostics else None
        attn = AttentionSummary()

        def per_window(t: torch.Tensor) -> torch.Tensor:  # (B', N, D) -> (B, N, C*D)
            return t if mixing else rearrange(t, "(b c) n d -> b n (c d)", c=c)

        with LayerTaps(enc, names, reduce="none", stop_early=False, to_cpu=False) as taps:
            for s in _batches(len(x), opt.batch_size, opt.progress, self.name):
                xb = torch.from_numpy(x[s : s + opt.batch_size]).to(opt.device)
                hidden = taps.run(enc, xb, attn_stats=opt.diagnostics)
                out = taps.output
                h = {l: hidden[n].float() for l, n in zip(layers, names)}
                for l in layers:
                    w = per_window(h[l])
                    tokens[l].append(w[:, n_prefix:].cpu().numpy())
                    pooled[l].append(self._pool(w, n_prefix).cpu().numpy())
                    if lens_on:
                        z = enc.norm(h[l]) if l < enc.n_layers else out.tokens
                        lens[l].append(self.objective.decode(z, out).float().cpu().numpy())
                if diag is not None:
                    diag.update({l: v.cpu() for l, v in h.items()},
                                {l: per_window(v)[:, n_prefix:].mean(1).cpu()
                                 for l, v in h.items()})
                    attn.update(out.attn_stats)
        end, length = self.token_grid(x.shape[1])
        feats = Features(layers=layers, names=names,
                         tokens={l: np.concatenate(v) for l, v in tokens.items()},
                         pooled={l: np.concatenate(v) for l, v in pooled.items()},
                         token_end=end, token_len=length, n_heads=enc.config.n_heads,
                         lens={l: np.concatenate(v) for l, v in lens.items()} if lens_on else None)
        if diag is not None:
            feats.diag, feats.attn = diag.result(), attn.result()
        return feats

    def _pool(self, w: torch.Tensor, n_prefix: int) -> torch.Tensor:
        if self.pool == "register":
            return w[:, :n_prefix].mean(1)
        if self.pool == "last":
            return w[:, -1]
        return w[:, n_prefix:].mean(1)


# ------------------------------------------------------------------------------ any module
LAYOUTS = ("btc", "bct", "bt")


class ModuleSource:
    """Any ``nn.Module`` tapped by module-name globs (forward hooks).

    ``layout``: how the model takes a batch: (B, T, C), (B, C, T), or (B, T) with every channel
    as its own series (features of the channels are concatenated). ``reduce="tokens"`` keeps
    every step of a sequence tap, so per-time tasks apply: a tap with N steps over a T-step
    window is aligned so that token i ends at step ``round((i + 1) * T / N) - 1`` (N = T: one
    token per step). Missing values are given to the model as 0 (generic models have no mask).
    """

    series_only = False

    def __init__(self, model: nn.Module, taps: str | list[str], name: str = "model", *,
                 layout: str = "btc", reduce: str = "tokens", time_dim: int = 1,
                 causal: bool = False, instance_scaled: bool = False,
                 options: ExtractOptions | None = None):
        if layout not in LAYOUTS:
            raise ValueError(f"input layout '{layout}' is not one of {LAYOUTS}")
        if reduce not in ("tokens", "mean", "last"):
            raise ValueError(f"reduce '{reduce}' must be tokens, mean or last")
        self.model, self.patterns, self.name = model, taps, name
        self.layout, self.reduce, self.time_dim = layout, reduce, time_dim
        self.causal, self.instance_scaled = causal, instance_scaled
        self.options = options or ExtractOptions()
        self.tap_names = list(select_modules(model, taps))  # fails early on a bad glob

    def untrained(self, seed: int) -> ModuleSource:
        return ModuleSource(untrained_twin(self.model, seed), self.patterns,
                            f"{self.name}/untrained", layout=self.layout, reduce=self.reduce,
                            time_dim=self.time_dim, causal=self.causal,
                            instance_scaled=self.instance_scaled, options=self.options)

    def _input(self, xb: torch.Tensor) -> torch.Tensor:
        if self.layout == "bct":
            return rearrange(xb, "b t c -> b c t")
        if self.layout == "bt":
            return rearrange(xb, "b t c -> (b c) t")
        return xb

    def _call(self, taps: LayerTaps | None, xb: torch.Tensor) -> dict[str, torch.Tensor]:
        try:
            if taps is None:  # first batch: keep the wildcard taps that fire
                self.tap_names = firing_taps(self.model, self.patterns, self._input(xb))
                return {}
            return taps.run(self.model, self._input(xb))
        except TapsNotFired as err:
            raise ValueError(f"{err}; pick taps on the forward path (--taps)") from None
        except RuntimeError as err:
            raise ValueError(
                f"model '{self.name}' failed on a batch of shape {tuple(xb.shape)} "
                f"(batch, time, channels) given as layout '{self.layout}': {err}. Check "
                "--input-layout, --context and that the data's channel count matches the model"
            ) from None

    @torch.no_grad()
    def extract(self, x: np.ndarray, fit_rows: np.ndarray | None = None) -> Features:
        opt, c, t = self.options, x.shape[-1], x.shape[1]
        model = self.model.to(opt.device).eval()
        reduce = "tokens" if self.reduce == "tokens" else self.reduce
        self._call(None, torch.from_numpy(np.nan_to_num(x[:1], posinf=0.0, neginf=0.0)
                                          ).to(opt.device))
        raw: dict[str, list[np.ndarray]] = {n: [] for n in self.tap_names}
        with LayerTaps(model, self.tap_names, reduce=reduce, time_dim=self.time_dim) as taps:
            for s in _batches(len(x), opt.batch_size, opt.progress, self.name):
                xb = torch.from_numpy(np.nan_to_num(x[s : s + opt.batch_size],
                                                    posinf=0.0, neginf=0.0)).to(opt.device)
                for name, v in self._call(taps, xb).items():
                    v = v[:, None] if v.dim() == 2 else v
                    if self.layout == "bt":
                        v = rearrange(v, "(b c) n d -> b n (c d)", c=c)
                    raw[name].append(v.numpy())
        layers = list(range(len(self.tap_names)))
        tokens = {l: np.concatenate(raw[n]).astype(np.float32)
                  for l, n in zip(layers, self.tap_names)}
        steps = {v.shape[1] for v in tokens.values()}
        n_tok = steps.pop() if len(steps) == 1 else 1
        if n_tok > t:
            raise ValueError(f"tap outputs have {n_tok} steps on their time axis but windows "
                             f"have {t}: set the tap's time axis (time_dim) or reduce=mean")
        dense = self.reduce == "tokens" and n_tok > 1 and not steps
        if not dense:  # pooled or mismatched lengths: series-level features only
            tokens = {l: v.mean(1, keepdims=True) for l, v in tokens.items()}
            n_tok = 1
        end = np.round((np.arange(n_tok) + 1) * t / n_tok).astype(int) - 1
        feats = Features(layers=layers, names=list(self.tap_names), tokens=tokens,
                         pooled={l: v.mean(1) for l, v in tokens.items()}, token_end=end,
                         token_len=max(1, t // n_tok), dense=dense)
        if opt.diagnostics:
            diag = TokenDiagnostics(layers, opt.outlier_factor)
            for s in range(0, len(x), 256):
                diag.update({l: torch.from_numpy(v[s : s + 256]) for l, v in tokens.items()},
                            {l: v[s : s + 256] for l, v in feats.pooled.items()})
            feats.diag = diag.result()
        return feats


# ------------------------------------------------------------------------------ controls
def _standardised(x: np.ndarray) -> np.ndarray:
    loc, scale = window_scaling(x)
    return np.nan_to_num((x - loc[:, None]) / scale[:, None]).astype(np.float32)


class RawWindowSource:
    """Control: the window itself. Series features are the window, flattened; the token for a
    step is the window re-centred on that step (``span`` steps on either side, zero outside
    the window): a linear probe on it is a linear filter/smoother. Scaled as the model it
    controls sees its input: per window when the model normalises each window, else with one
    global location and scale (so the level of a window stays visible, as it is to the model)."""

    series_only = False

    def __init__(self, name: str, token_end: np.ndarray, token_len: int, *, span: int = 32,
                 causal: bool = False, instance_scaled: bool = True):
        self.name, self.token_end, self.token_len = name, token_end, token_len
        self.span, self.causal, self.instance_scaled = span, causal, instance_scaled

    def extract(self, x: np.ndarray, fit_rows: np.ndarray | None = None) -> Features:
        if self.instance_scaled:
            z = _standardised(x)
        else:
            loc, scale = np.nanmean(x, (0, 1)), np.nanstd(x, (0, 1)) + 1e-8
            z = np.nan_to_num((x - loc) / scale).astype(np.float32)
        w, t, c = z.shape
        span = min(self.span, t - 1)
        lead = 0 if self.causal else span
        padded = np.pad(z, ((0, 0), (span, lead), (0, 0)))
        offsets = np.arange(-span, lead + 1)
        idx = self.token_end[:, None] + offsets[None] + span  # (P, K) into padded time
        tokens = padded[:, idx].reshape(w, len(self.token_end), -1)  # (W, P, K*C)
        return Features(layers=[0], names=["raw window"], tokens={0: tokens},
                        pooled={0: z.reshape(w, -1)}, token_end=self.token_end,
                        token_len=self.token_len)


class PeriodogramSource:
    """Control: the log-periodogram of each standardised channel (series-level tasks)."""

    series_only, causal, instance_scaled = True, False, True

    def __init__(self, name: str):
        self.name = name

    def extract(self, x: np.ndarray, fit_rows: np.ndarray | None = None) -> Features:
        z = _standardised(x)
        power = np.abs(np.fft.rfft(z, axis=1)) ** 2 / z.shape[1]
        feats = np.log(power[:, 1:] + 1e-6).reshape(len(z), -1).astype(np.float32)
        return _series_features(feats, "log-periodogram", x.shape[1])


class MiniRocketSource:
    """Control: MiniRocket features (aeon), fitted on the training windows only."""

    series_only, causal, instance_scaled = True, False, True

    def __init__(self, name: str, n_kernels: int = 840, seed: int = 0):
        self.name, self.n_kernels, self.seed = name, n_kernels, seed

    def extract(self, x: np.ndarray, fit_rows: np.ndarray | None = None) -> Features:
        from aeon.transformations.collection.convolution_based import MiniRocket

        z = rearrange(_standardised(x), "w t c -> w c t").astype(np.float32)
        rows = np.flatnonzero(fit_rows) if fit_rows is not None else np.arange(len(z))
        rocket = MiniRocket(n_kernels=self.n_kernels, random_state=self.seed).fit(z[rows])
        return _series_features(np.asarray(rocket.transform(z), dtype=np.float32), "minirocket",
                                x.shape[1])


def _series_features(feats: np.ndarray, name: str, length: int) -> Features:
    return Features(layers=[0], names=[name], tokens={0: feats[:, None]}, pooled={0: feats},
                    token_end=np.array([length - 1]), token_len=length, dense=False)
