"""Windows in, per-layer token features out: one pass of the encoder per batch, everything
reduced to what the tasks and diagnostics need while the batch is in memory.

Token features are per *window*: channel-independent encoders produce one token sequence per
channel, which are concatenated along features, so a window's patch ``p`` is described by
``(C * D)`` numbers at every layer (the probes see all channels, as the Kalman optimum does).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import xarray as xr
from einops import rearrange
from tqdm.auto import tqdm

from .diagnostics import AttentionSummary, MinibatchCKA, effective_rank_from_gram, mean_token_sim


@dataclass
class Windows:
    """A fixed sample of windows (numpy). ``x`` (W, T, C) with NaN = missing, ``future``
    (W, H, C) or None, ``label`` (W,), ``latent`` (W, T, S), ``time_label`` (W, T), ``series``
    (W,) original series ids, ``system`` (W,) LGSSM system index."""

    x: np.ndarray
    series: np.ndarray
    start: np.ndarray
    future: np.ndarray | None = None
    label: np.ndarray | None = None
    latent: np.ndarray | None = None
    time_label: np.ndarray | None = None
    time_label_kind: str | None = None
    n_classes: int | None = None

    def __len__(self) -> int:
        return len(self.x)


def sample_windows(ds: xr.Dataset, context: int, horizon: int, stride: int | None,
                   max_windows: int, seed: int = 0) -> Windows:
    """Cut windows (context + horizon) from every series and keep ``max_windows`` at random,
    spread evenly over series (so no series dominates the sample)."""
    from tslayers.data.windows import WindowDataset

    wd = WindowDataset(ds, context, horizon, stride)
    rng = np.random.default_rng(seed)
    n = len(wd)
    if n > max_windows:  # round-robin over series: every series' 1st window, then 2nd, ...
        series = wd.index[:, 0]
        order = np.lexsort((rng.random(n), series))  # grouped by series, shuffled within
        rank = np.empty(n, dtype=np.int64)
        rank[order] = np.arange(n) - np.searchsorted(series[order], series[order])
        idx = np.sort(np.lexsort((rng.random(n), rank))[:max_windows])
    else:
        idx = np.arange(n)
    items = [wd[int(i)] for i in idx]

    def stack(key: str) -> np.ndarray | None:
        return np.stack([it[key].numpy() for it in items]) if key in items[0] else None

    tl_kind = ds["time_label"].attrs.get("kind") if "time_label" in ds else None
    n_classes = None
    if "label" in ds:
        classes = ds["label"].attrs.get("classes")
        n_classes = len(np.atleast_1d(classes)) if classes is not None else \
            int(ds["label"].max()) + 1
    return Windows(x=stack("x"), series=stack("series"), start=stack("start"),
                   future=stack("future"), label=stack("label"), latent=stack("latent"),
                   time_label=stack("time_label"), time_label_kind=tl_kind, n_classes=n_classes)


@dataclass
class Features:
    """Per-layer features of a window sample (all float32 numpy, W windows, P patches).

    ``tokens[l]`` (W, P, F) patch tokens with channels concatenated (F = C*D or C*patch_len);
    ``registers[l]`` (W, F) mean of prefix tokens (or None); ``loc``/``scale`` (W, C);
    ``patch_end`` (P,) time index (within the window) of each patch's last step;
    ``masked`` {l: (W, F)} tokens at the masked patch of the imputation pass and ``mask_patch``
    (W,) its index, with ``masked_loc``/``masked_scale`` (W, C); ``lens`` {l: (W, H, C)} the
    model's own forecast head applied to layer l; ``diag`` label-free diagnostics.
    """

    layers: list[int]
    tokens: dict[int, np.ndarray]
    loc: np.ndarray
    scale: np.ndarray
    patch_end: np.ndarray
    patch_len: int
    registers: dict[int, np.ndarray] | None = None
    masked: dict[int, np.ndarray] | None = None
    mask_patch: np.ndarray | None = None
    masked_loc: np.ndarray | None = None
    masked_scale: np.ndarray | None = None
    lens: dict[int, np.ndarray] | None = None
    diag: dict[str, np.ndarray] = field(default_factory=dict)
    attn: dict[int, dict[str, np.ndarray]] = field(default_factory=dict)
    n_heads: int = 0


def _batches(n: int, size: int, progress: bool, desc: str):
    starts = range(0, n, size)
    return tqdm(starts, desc=desc, disable=not progress, leave=False)


class _TokenDiagnostics:
    """Streaming per-layer diagnostics over (B', N, D) token sequences."""

    def __init__(self, layers: list[int], outlier_factor: float):
        self.layers = layers
        self.factor = outlier_factor
        self.gram: dict[int, np.ndarray] = {}
        self.norms: dict[int, list[np.ndarray]] = {l: [] for l in layers}
        self.sim_sum = dict.fromkeys(layers, 0.0)
        self.n_seq = 0
        self.cka = MinibatchCKA()

    def update(self, hidden: dict[int, torch.Tensor], pooled: dict[int, np.ndarray]) -> None:
        for l in self.layers:
            h = hidden[l].double()
            flat = rearrange(h, "b n d -> (b n) d")
            g = (flat.T @ flat).numpy()
            self.gram[l] = self.gram.get(l, 0) + g
            self.norms[l].append(flat.norm(dim=-1).float().numpy())
            self.sim_sum[l] += mean_token_sim(h) * len(h)
        self.n_seq += len(next(iter(hidden.values())))
        self.cka.update(pooled)

    def result(self) -> dict[str, np.ndarray]:
        ls = self.layers
        norms = {l: np.concatenate(self.norms[l]) for l in ls}
        return {
            "effective_rank": np.array([effective_rank_from_gram(self.gram[l]) for l in ls]),
            "norm_outlier_frac": np.array(
                [float((norms[l] > self.factor * np.median(norms[l])).mean()) for l in ls]),
            "mean_token_sim": np.array([self.sim_sum[l] / self.n_seq for l in ls]),
            "cka": self.cka.result(),
        }


def _random_patch(n_windows: int, n_patches: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed + 7919).integers(0, n_patches, n_windows)


@torch.no_grad()
def extract_features(
    encoder: torch.nn.Module,
    win: Windows,
    *,
    batch_size: int = 64,
    device: str = "cpu",
    diagnostics: bool = True,
    impute: bool = False,
    objective=None,
    outlier_factor: float = 3.0,
    seed: int = 0,
    progress: bool = False,
    desc: str = "features",
) -> Features:
    """Run a :class:`~tslayers.model.TemporalEncoder` over the windows tapping every layer."""
    encoder = encoder.to(device).eval()
    n_layers, c = encoder.n_layers, win.x.shape[-1]
    layers = list(range(n_layers + 1))
    n_prefix = encoder.num_prefix
    cfg = encoder.config
    tokens: dict[int, list[np.ndarray]] = {l: [] for l in layers}
    regs: dict[int, list[np.ndarray]] = {l: [] for l in layers}
    masked: dict[int, list[np.ndarray]] = {l: [] for l in layers}
    lens: dict[int, list[np.ndarray]] = {l: [] for l in layers}
    locs, scales, mlocs, mscales = [], [], [], []
    diag = _TokenDiagnostics(layers, outlier_factor) if diagnostics else None
    attn = AttentionSummary()
    n_patches = encoder.n_patches(win.x.shape[1])
    mask_patch = _random_patch(len(win), n_patches, seed) if impute else None
    pad = (n_patches - 1) * cfg.stride + cfg.patch_len - win.x.shape[1]

    def regroup(t: torch.Tensor) -> torch.Tensor:  # (B', N, D) -> (B, N, C*D)
        if cfg.channel_mixing:
            return t
        return rearrange(t, "(b c) n d -> b n (c d)", c=c)

    for start in _batches(len(win), batch_size, progress, desc):
        x = torch.from_numpy(win.x[start : start + batch_size]).to(device)
        out = encoder(x, taps="all", attn_stats=diagnostics)
        hidden = {l: out.hidden[l].float() for l in layers}
        per_window = {l: regroup(h) for l, h in hidden.items()}
        for l in layers:
            tokens[l].append(per_window[l][:, n_prefix:].cpu().numpy())
            if n_prefix:
                regs[l].append(per_window[l][:, :n_prefix].mean(1).cpu().numpy())
        locs.append(out.patched.loc[:, 0].cpu().numpy())
        scales.append(out.patched.scale[:, 0].cpu().numpy())
        if diag is not None:
            pooled = {l: per_window[l][:, n_prefix:].mean(1).cpu() for l in layers}
            diag.update({l: h.cpu() for l, h in hidden.items()}, pooled)
            attn.update({l: s for l, s in out.attn_stats.items()})
        if objective is not None and hasattr(objective, "decode"):
            for l in layers:
                h = hidden[l] if l < n_layers else out.tokens
                h = encoder.norm(h) if l < n_layers else h
                lens[l].append(objective.decode(h, out).float().cpu().numpy())
        if impute:
            mp = mask_patch[start : start + batch_size]
            xm = x.clone()
            t0 = torch.as_tensor(mp * cfg.stride - pad)
            for i, s in enumerate(t0.tolist()):
                xm[i, max(s, 0) : s + cfg.patch_len] = float("nan")
            outm = encoder(xm, taps="all")
            idx = torch.as_tensor(mp) + n_prefix
            for l in layers:
                hm = regroup(outm.hidden[l].float())
                masked[l].append(hm[torch.arange(len(hm)), idx].cpu().numpy())
            mlocs.append(outm.patched.loc[:, 0].cpu().numpy())
            mscales.append(outm.patched.scale[:, 0].cpu().numpy())

    patch_end = np.arange(n_patches) * cfg.stride - pad + cfg.patch_len - 1
    feats = Features(
        layers=layers,
        tokens={l: np.concatenate(v) for l, v in tokens.items()},
        loc=np.concatenate(locs), scale=np.concatenate(scales),
        patch_end=patch_end, patch_len=cfg.patch_len,
        registers={l: np.concatenate(v) for l, v in regs.items()} if n_prefix else None,
        n_heads=cfg.n_heads,
    )
    if impute:
        feats.masked = {l: np.concatenate(v) for l, v in masked.items()}
        feats.mask_patch = mask_patch
        feats.masked_loc, feats.masked_scale = np.concatenate(mlocs), np.concatenate(mscales)
    if objective is not None and hasattr(objective, "decode"):
        feats.lens = {l: np.concatenate(v) for l, v in lens.items()}
    if diag is not None:
        feats.diag = diag.result()
        feats.attn = attn.result()
    return feats


@torch.no_grad()
def raw_patch_features(encoder: torch.nn.Module, win: Windows, *, impute: bool = False,
                       seed: int = 0, batch_size: int = 256) -> Features:
    """The control "raw input patches": the encoder's own scaled patches as layer-0 features
    (same patching, same scaling, same masked patch as :func:`extract_features`)."""
    cfg = encoder.config
    c = win.x.shape[-1]
    n_patches = encoder.n_patches(win.x.shape[1])
    pad = (n_patches - 1) * cfg.stride + cfg.patch_len - win.x.shape[1]
    mask_patch = _random_patch(len(win), n_patches, seed) if impute else None

    def patches(x: torch.Tensor):
        p = encoder.patchify(x)
        v = p.values if cfg.channel_mixing else rearrange(p.values, "(b c) n l -> b n (c l)", c=c)
        return v, p.loc[:, 0], p.scale[:, 0]

    toks, locs, scales, masked, mlocs, mscales = [], [], [], [], [], []
    for start in range(0, len(win), batch_size):
        x = torch.from_numpy(win.x[start : start + batch_size])
        v, loc, scale = patches(x)
        toks.append(v.numpy())
        locs.append(loc.numpy())
        scales.append(scale.numpy())
        if impute:
            mp = mask_patch[start : start + batch_size]
            xm = x.clone()
            for i, s in enumerate((mp * cfg.stride - pad).tolist()):
                xm[i, max(s, 0) : s + cfg.patch_len] = float("nan")
            vm, lm, sm = patches(xm)
            masked.append(vm[torch.arange(len(vm)), torch.as_tensor(mp)].numpy())
            mlocs.append(lm.numpy())
            mscales.append(sm.numpy())
    feats = Features(
        layers=[0], tokens={0: np.concatenate(toks)}, loc=np.concatenate(locs),
        scale=np.concatenate(scales),
        patch_end=np.arange(n_patches) * cfg.stride - pad + cfg.patch_len - 1,
        patch_len=cfg.patch_len,
    )
    if impute:
        feats.masked = {0: np.concatenate(masked)}
        feats.mask_patch = mask_patch
        feats.masked_loc, feats.masked_scale = np.concatenate(mlocs), np.concatenate(mscales)
    return feats
