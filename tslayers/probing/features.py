"""The window sample and the per-layer features a feature source produces for it.

:class:`Windows` is a fixed sample of windows cut from a dataset (numpy, NaN = missing) with
everything the tasks may need (future values, labels, latent states, per-time labels).
:class:`Features` is what any :class:`~tslayers.probing.sources.FeatureSource` returns for it:
per-layer token features aligned to time, pooled series features, and label-free diagnostics.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import xarray as xr


@dataclass
class Windows:
    """A fixed sample of windows (numpy). ``x`` (W, T, C) with NaN = missing, ``future``
    (W, H, C) or None, ``label`` (W,), ``latent`` (W, T, S), ``time_label`` (W, T), ``series``
    (W,) original series ids, ``start`` (W,) first time index in the series. User targets
    (dataset variables named in ``probe.targets``): ``targets`` per series, (W,) or (W, K);
    ``step_targets`` per time step, (W, T, K), aligned with ``x``."""

    x: np.ndarray
    series: np.ndarray
    start: np.ndarray
    future: np.ndarray | None = None
    label: np.ndarray | None = None
    latent: np.ndarray | None = None
    time_label: np.ndarray | None = None
    time_label_kind: str | None = None
    n_classes: int | None = None
    targets: dict[str, np.ndarray] = field(default_factory=dict)
    step_targets: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.x)


def sample_windows(ds: xr.Dataset, context: int, horizon: int, stride: int | None,
                   max_windows: int, seed: int = 0, targets: list[str] = ()) -> Windows:
    """Cut windows (context + horizon) from every series and keep ``max_windows`` at random,
    spread evenly over series (so no series dominates the sample). ``targets`` names dataset
    variables to carry along as probe targets (see :func:`user_targets`)."""
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
    per_series, per_step = user_targets(ds, list(targets), wd.index[idx], context)
    return Windows(x=stack("x"), series=stack("series"), start=stack("start"),
                   future=stack("future"), label=stack("label"), latent=stack("latent"),
                   time_label=stack("time_label"), time_label_kind=tl_kind, n_classes=n_classes,
                   targets=per_series, step_targets=per_step)


def user_targets(ds: xr.Dataset, names: list[str], index: np.ndarray, context: int
                 ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The named variables at the sampled windows (``index``: positional (series, start)).
    A variable with a ``time`` dim is cut to each window's context, (W, T, K), so its value
    at step t belongs to input step t; one without is read per series. Class labels (integer,
    boolean or string values) become codes 0..K-1 in sorted order of their values."""
    check_targets(ds, names)
    per_series, per_step = {}, {}
    for name in names:
        var = ds[name]
        if var.dims[0] != "series" or ("time" in var.dims and var.dims[1] != "time"):
            raise ValueError(f"probe target '{name}' has dims {var.dims}; expected (series, "
                             "...) or (series, time, ...)")
        arr = _target_values(name, var.values)
        if arr.dtype.kind == "i" and arr.ndim > 1 + ("time" in var.dims):
            raise ValueError(f"probe target '{name}': class labels take one value per series "
                             f"or per time step, got dims {var.dims}; split the components "
                             "into separate targets")
        s = index[:, 0]
        if "time" in var.dims:
            steps = index[:, 1:2] + np.arange(context)[None]
            vals = arr[s[:, None], steps]
            per_step[name] = vals if vals.ndim == 3 or vals.dtype.kind == "i" else vals[..., None]
        else:
            per_series[name] = arr[s]
    return per_series, per_step


def check_targets(ds: xr.Dataset, names: list[str], what: str = "probe.targets") -> None:
    """Refuse target names that are not variables of the dataset, listing the ones that are."""
    missing = [n for n in names if n not in ds.data_vars or n == "obs"]
    if missing:
        have = [v for v in ds.data_vars if v != "obs" and "series" in ds[v].dims]
        raise ValueError(f"{what}: {missing} not in dataset '{ds.attrs.get('name', 'dataset')}'"
                         f", whose variables with a series dim are {have}; add targets with "
                         "tslayers.data.add_targets or as named arrays in an .npz")


def _target_values(name: str, values: np.ndarray) -> np.ndarray:
    """Floats stay floats (regression); integers, booleans and strings become class codes."""
    if values.dtype.kind == "f":
        return values.astype(np.float64)
    if values.dtype.kind not in "iubUSO":
        raise ValueError(f"probe target '{name}' has dtype {values.dtype}; use floats "
                         "(regression) or integers / strings (classes)")
    _, codes = np.unique(values.astype(str) if values.dtype.kind in "USO" else values,
                         return_inverse=True)
    return codes.reshape(values.shape).astype(np.int64)


def window_scaling(x: np.ndarray, floor: float = 1e-5) -> tuple[np.ndarray, np.ndarray]:
    """Per-window, per-channel mean and std of the observed values, (W, C) each (what an
    instance-normalising model sees; used to scale targets the same way for every source)."""
    obs = np.isfinite(x)
    cnt = np.maximum(obs.sum(1), 1)
    loc = np.where(obs, x, 0.0).sum(1) / cnt
    var = (np.where(obs, x - loc[:, None], 0.0) ** 2).sum(1) / cnt
    return loc, np.sqrt(var + floor)


@dataclass
class Features:
    """Per-layer features of a window sample from one source (float32 numpy; W windows).

    ``tokens[l]`` (W, P, F): per-token features with channels concatenated (F = C*D for
    channel-independent encoders). ``token_end`` (P,) is the time index (within the window) of
    the last step each token covers and ``token_len`` how many steps it covers; per-time
    targets are read at ``token_end`` (a pooled tap has P = 1 and ``token_end = [T-1]``).
    ``pooled[l]`` (W, F) series features (mean over tokens, the registers, or the last token).
    ``lens[l]`` (W, H, C) the model's own forecast head applied to layer l (or None).
    ``masked[l]`` (W, F): the token at position ``hidden[w]`` in a second pass where that
    token's steps were NaN (the imputation task). ``dense``: tokens are aligned to time, so
    per-token (dense) tasks apply.
    """

    layers: list[int]
    names: list[str]
    tokens: dict[int, np.ndarray]
    pooled: dict[int, np.ndarray]
    token_end: np.ndarray
    token_len: int
    dense: bool = True
    lens: dict[int, np.ndarray] | None = None
    masked: dict[int, np.ndarray] | None = None
    hidden: np.ndarray | None = None
    diag: dict[str, np.ndarray] = field(default_factory=dict)
    attn: dict[int, dict[str, np.ndarray]] = field(default_factory=dict)
    n_heads: int = 0

    def check_finite(self, source: str) -> None:
        """Refuse non-finite activations: every probe would silently turn them into numbers."""
        for l, name in zip(self.layers, self.names):
            for what, arr in (("tokens", self.tokens.get(l)), ("pooled", self.pooled.get(l))):
                if arr is not None and not np.isfinite(arr).all():
                    bad = int((~np.isfinite(arr)).any(tuple(range(1, arr.ndim))).sum())
                    raise ValueError(
                        f"{source}: layer {l} ({name}) produced non-finite activations "
                        f"({what}: {bad} of {len(arr)} windows hold NaN or inf); the model "
                        "output is broken for this input (check its weights, input scaling and "
                        "missing values) - no probe can be fitted on it")


def hide_spans(x: np.ndarray, token_end: np.ndarray, token_len: int,
               hidden: np.ndarray) -> np.ndarray:
    """A copy of windows ``x`` (W, T, C) with the steps of token ``hidden[w]`` set to NaN."""
    xm = x.copy()
    for w, p in enumerate(hidden):
        end = int(token_end[p])
        xm[w, max(end - token_len + 1, 0) : end + 1] = np.nan
    return xm


def token_values(arr: np.ndarray, token_end: np.ndarray) -> np.ndarray:
    """(W, T, ...) -> (W*P, ...): the value at each token's last step."""
    return arr[:, np.clip(token_end, 0, None)].reshape(-1, *arr.shape[2:])
