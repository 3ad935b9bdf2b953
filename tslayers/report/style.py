"""One look for every figure: colours per base model, grey for controls, plain labels for the
diagnostics, and layer tick labels (tap names for models that are not a TemporalEncoder)."""

from __future__ import annotations

import re
from contextlib import contextmanager

import numpy as np
import xarray as xr

#: Okabe-Ito: distinguishable under the common colour-vision deficiencies
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442",
           "#000000")
CONTROL = dict(color="0.45", lw=1.1)
TWIN = dict(CONTROL, ls="--")  # untrained twin: a curve over layers
FLOOR = dict(CONTROL, ls=":")  # best single-layer control: a horizontal line
OPTIMUM = dict(color="black", lw=1.0, ls="-")
SELECTED = dict(marker="o", ms=8, mfc="none", mew=1.6, ls="none")  # ring on the val-selected
DPI = 120
#: diagnostics: variable -> (plain title, y-label, whether it is a share in [0, 1])
DIAGNOSTICS = {
    "attn_entropy": ("attention entropy (nats)", "nats, mean over heads", False),
    "attn_distance": ("attention distance (tokens)", "tokens from query to key", False),
    "attn_prefix_mass": ("attention on the first token", "share of attention", True),
    "attn_received_max": ("attention taken by the top token", "share of all attention", True),
    "effective_rank": ("effective rank (RankMe)", "effective dimensions", False),
    "norm_outlier_frac": ("share of high-norm tokens", "share with norm > 3 × median", True),
    "mean_token_sim": ("token similarity to the mean token", "cosine similarity", True),
}
_OWN_TAP = re.compile(r"^(embed\.out|blocks\.\d+\.out|L\d+)$")


@contextmanager
def new_figure(width: float, height: float):
    """A Figure (not registered with pyplot, so no backend or global state is touched) built
    under the house rcParams."""
    import matplotlib
    from matplotlib.figure import Figure

    rc = {"font.size": 8, "axes.titlesize": 9, "axes.labelsize": 8, "xtick.labelsize": 7,
          "ytick.labelsize": 7, "legend.fontsize": 7, "axes.spines.top": False,
          "axes.spines.right": False, "axes.grid": True, "grid.alpha": 0.25,
          "grid.linewidth": 0.6, "axes.formatter.useoffset": False}
    with matplotlib.rc_context(rc):
        yield Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def model_colours(models: list[str]) -> dict[str, str]:
    """A fixed colour per base model, in the results' order, shared by every figure."""
    return {m: PALETTE[i % len(PALETTE)] for i, m in enumerate(models)}


def layer_names(ds: xr.Dataset, model: str) -> list[str] | None:
    """Tap names of an external model's layers (None for our encoder, whose layer index is its
    name: 0 = embeddings)."""
    if "layer_name" not in ds or model not in ds["model"].values.tolist():
        return None
    names = [n if isinstance(n, str) else "" for n in
             ds["layer_name"].sel(model=model).values.tolist()]
    used = [n for n in names if n]
    if not used and "/" in model:  # a refit on a model's features (x/mlp, x/permuted): its taps
        return layer_names(ds, model.rsplit("/", 1)[0])
    if not used or all(_OWN_TAP.match(n) for n in used):
        return None
    return names


def layer_ticks(ax, ds: xr.Dataset, models: list[str], axis: str = "x", every: int = 1) -> None:
    """Integer layer ticks, or the tap names when every model drawn shares the same ones."""
    layers = ds["layer"].values
    names = {tuple(n) if n else None for n in (layer_names(ds, m) for m in models)}
    set_ticks = ax.set_xticks if axis == "x" else ax.set_yticks
    pos = list(range(0, len(layers), max(1, every)))
    if len(names) == 1 and None not in names:
        labels = [next(iter(names))[i] for i in pos]
        set_ticks([layers[i] for i in pos], labels, rotation=45 if axis == "x" else 0,
                  ha="right" if axis == "x" else "right")
    else:
        set_ticks([layers[i] for i in pos], [str(layers[i]) for i in pos])


def tick_step(n: int, most: int = 16) -> int:
    """Label every k-th of n ticks so that at most ``most`` labels show."""
    return max(1, int(np.ceil(n / most)))


def text_colour(rgba) -> str:
    """Black or white, whichever reads better on a cell of colour ``rgba``."""
    r, g, b = rgba[:3]
    return "black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.55 else "white"


def metric_label(ds: xr.Dataset, metric: str, short: bool = False) -> str:
    """``r2 (higher is better)``, or ``r2 ↑`` when space is short."""
    up = bool(ds["higher_is_better"].sel(metric=metric))
    if short:
        return f"{metric} {'↑' if up else '↓'}"
    return f"{metric} ({'higher' if up else 'lower'} is better)"


def y_limits(ax, lines: list[np.ndarray], bands: list[np.ndarray], rel: float = 0.05,
             min_span: float = 1e-3) -> None:
    """Fit the y-axis to the lines, let bands extend at most one line-span beyond them, and
    keep a minimum span (``rel`` of the level) so differences within noise look flat."""
    v = np.concatenate([np.ravel(x) for x in lines]) if lines else np.array([])
    v = v[np.isfinite(v)]
    if v.size == 0:
        return
    lo, hi = float(v.min()), float(v.max())
    span = max(hi - lo, rel * max(abs(lo), abs(hi)), min_span)
    b = np.concatenate([np.ravel(x) for x in bands]) if bands else np.array([])
    b = b[np.isfinite(b)]
    blo = max(float(b.min()), lo - span) if b.size else lo
    bhi = min(float(b.max()), hi + span) if b.size else hi
    mid, half = (min(lo, blo) + max(hi, bhi)) / 2, max(max(hi, bhi) - min(lo, blo), span) / 2
    ax.set_ylim(mid - 1.08 * half, mid + 1.08 * half)
