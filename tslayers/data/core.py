"""The one in-memory form every source maps to, and its checks.

A dataset is an ``xr.Dataset`` with dims ``series``, ``time``, ``channel`` (and ``state`` when
latent states exist):

- ``obs`` (series, time, channel) float32; NaN marks a missing value and the ragged tail of a
  series shorter than the longest one;
- ``latent`` (series, time, state) float32, optional (synthetic systems);
- ``label`` (series,) int64 with attr ``classes`` (list of names), optional;
- ``time_label`` (series, time) int64 with attr ``kind`` ("regime" or "anomaly"), optional;
- ``split`` (series,) str, optional: an official train/test split to respect;
- ``start`` (series,) datetime64, optional: the timestamp of time index 0 for each series.

``time`` is always the integer position 0..T-1 (series keep their own ``start``), so that slices
made by the splitting code keep their original positions and can be checked for overlap.
Attributes: ``name``, ``system``, ``seed``, generator parameters, ``freq``/``season_length`` when
known. Everything is kept netCDF-serialisable (no dict attributes, no None).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import xarray as xr

__all__ = [
    "DataError", "make_dataset", "validate_dataset", "series_lengths", "clean_attrs",
    "check_sizes",
]


class DataError(ValueError):
    """Input data that cannot be mapped to the in-memory form; the message says how to fix it."""


def clean_attrs(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """Drop None values and turn tuples/numpy scalars into netCDF-friendly python values."""
    out: dict[str, Any] = {}
    for key, value in attrs.items():
        if value is None:
            continue
        if isinstance(value, np.generic):
            value = value.item()
        if isinstance(value, tuple):
            value = list(value)
        if isinstance(value, list) and value and isinstance(value[0], tuple):
            value = [list(v) for v in value]
        if isinstance(value, bool):
            value = int(value)
        out[key] = value
    return out


def make_dataset(
    obs: np.ndarray,
    *,
    latent: np.ndarray | None = None,
    label: np.ndarray | None = None,
    classes: Sequence[str] | None = None,
    time_label: np.ndarray | None = None,
    time_label_kind: str | None = None,
    split: Sequence[str] | np.ndarray | None = None,
    start: np.ndarray | None = None,
    channel_names: Sequence[str] | None = None,
    state_names: Sequence[str] | None = None,
    attrs: Mapping[str, Any] | None = None,
    extra: Mapping[str, tuple[tuple[str, ...], np.ndarray]] | None = None,
) -> xr.Dataset:
    """Assemble the in-memory form from arrays; ``obs`` is (N, T, C)."""
    obs = np.asarray(obs, dtype=np.float32)
    if obs.ndim != 3:
        raise DataError(f"obs must be (series, time, channel), got shape {obs.shape}")
    n, t, c = obs.shape
    coords: dict[str, Any] = {
        "series": np.arange(n, dtype=np.int64),
        "time": np.arange(t, dtype=np.int64),
        "channel": list(channel_names) if channel_names is not None else
        [f"c{i}" for i in range(c)],
    }
    data_vars: dict[str, Any] = {"obs": (("series", "time", "channel"), obs)}
    if latent is not None:
        latent = np.asarray(latent, dtype=np.float32)
        s = latent.shape[-1]
        coords["state"] = list(state_names) if state_names is not None else \
            [f"s{i}" for i in range(s)]
        data_vars["latent"] = (("series", "time", "state"), latent)
    if label is not None:
        data_vars["label"] = ("series", np.asarray(label, dtype=np.int64))
    if time_label is not None:
        data_vars["time_label"] = (("series", "time"), np.asarray(time_label, dtype=np.int64))
    if split is not None:
        data_vars["split"] = ("series", np.asarray(split, dtype=str))
    if start is not None:
        data_vars["start"] = ("series", np.asarray(start, dtype="datetime64[ns]"))
    for key, (dims, arr) in (extra or {}).items():
        data_vars[key] = (dims, arr)
    ds = xr.Dataset(data_vars, coords=coords, attrs=clean_attrs(attrs or {}))
    if label is not None:
        ds["label"].attrs["classes"] = [str(x) for x in (classes or [])] or \
            [str(i) for i in range(int(ds["label"].max()) + 1)]
    if time_label is not None:
        ds["time_label"].attrs["kind"] = time_label_kind or "regime"
    return ds


def add_targets(ds: xr.Dataset, targets: Mapping[str, Any]) -> xr.Dataset:
    """Attach user probe targets to a dataset, one variable each, by shape: ``(N,)`` or
    ``(N, K)`` per series; ``(N, T)`` or ``(N, T, K)`` per time step, aligned with ``obs``.
    An ``(N, T)`` array is read per time step (a per-series vector of exactly T components
    is ambiguous: add it as an xarray variable with dims ``("series", "k")`` instead).
    Integer, boolean and string targets are class labels; floats are regressed."""
    n, t = ds.sizes["series"], ds.sizes["time"]
    out = ds.copy()
    for name, value in targets.items():
        if name in ("obs", "series", "time", "channel"):
            raise DataError(f"target name '{name}' is reserved; rename the target")
        arr = np.asarray(value.detach().cpu() if hasattr(value, "detach") else value)
        if arr.ndim == 0 or arr.shape[0] != n:
            raise DataError(f"target '{name}' has shape {arr.shape}, but the data has {n} "
                            f"series: its first axis must be the series axis ({n})")
        if arr.ndim >= 2 and arr.shape[1] == t:
            dims = ("series", "time") + ((f"{name}_dim",) if arr.ndim == 3 else ())
        elif arr.ndim <= 2:
            dims = ("series",) + ((f"{name}_dim",) if arr.ndim == 2 else ())
        else:
            raise DataError(f"target '{name}' has shape {arr.shape}: use (N,) or (N, K) per "
                            f"series, or (N, T, K) per time step with T = {t} as in the data")
        if arr.ndim > len(dims):
            raise DataError(f"target '{name}' has shape {arr.shape}: at most one axis of "
                            "target components (per series (N, K), per time (N, T, K))")
        out[name] = (dims, arr)
    return out


def series_lengths(ds: xr.Dataset) -> np.ndarray:
    """Length of each series = last observed time index + 1 (ragged tails are all-NaN)."""
    observed = np.isfinite(ds["obs"].values).any(axis=-1)  # (N, T)
    t = observed.shape[1]
    last = t - np.argmax(observed[:, ::-1], axis=1)
    return np.where(observed.any(axis=1), last, 0).astype(np.int64)


def check_sizes(n_series: int, length: int) -> None:
    """A generator's requested size: at least one series of two steps."""
    if n_series < 1 or length < 2:
        raise DataError(f"need n_series >= 1 and length >= 2, got n_series={n_series}, "
                        f"length={length}")


def validate_dataset(ds: xr.Dataset, *, drop_empty: bool = False, where: str = "") -> xr.Dataset:
    """Check the in-memory form; raise ``DataError`` with a fix, or return the (cleaned) dataset.

    Catches what would otherwise fail much later inside a DataLoader: missing ``obs``, wrong
    dims, series with no observed value at all, labels out of range of ``classes``.
    """
    name = where or ds.attrs.get("name", "dataset")
    if "obs" not in ds:
        raise DataError(f"{name}: no 'obs' variable; found {list(ds.data_vars)}. Put the "
                        "observations in ds['obs'] with dims (series, time, channel).")
    dims = ds["obs"].dims
    if dims != ("series", "time", "channel"):
        raise DataError(f"{name}: ds['obs'] has dims {dims}, expected ('series', 'time', "
                        "'channel'); use tslayers.data.from_xarray(ds, series_dim=..., "
                        "time_dim=..., channel_dim=...) to rename/transpose.")
    if ds.sizes["series"] == 0 or ds.sizes["time"] == 0:
        raise DataError(f"{name}: empty dataset (sizes {dict(ds.sizes)})")
    if ds["obs"].dtype != np.float32:
        ds = ds.assign(obs=ds["obs"].astype(np.float32))
    obs = ds["obs"].values
    inf = np.isinf(obs)
    if inf.any():  # +-inf is no measurement: treat it as missing, and say so
        s, t, c = (int(i[0]) for i in np.nonzero(inf))
        warnings.warn(f"{name}: {int(inf.sum())} +-inf values in obs are treated as missing "
                      f"(first at series {s}, time {t}, channel {c})", stacklevel=2)
        ds = ds.assign(obs=ds["obs"].where(~inf))
        obs = ds["obs"].values
    empty = ~np.isfinite(obs).any(axis=(1, 2))
    if empty.any():
        idx = np.flatnonzero(empty)
        if not drop_empty:
            raise DataError(
                f"{name}: {len(idx)} series are entirely missing (all NaN), e.g. series index "
                f"{idx[:5].tolist()}; drop them (ds.isel(series=...)) or pass drop_empty=True.")
        ds = ds.isel(series=np.flatnonzero(~empty))
    if "label" in ds:
        lab = ds["label"].values
        classes = ds["label"].attrs.get("classes")
        if lab.min() < 0:
            raise DataError(f"{name}: label has negative values; encode classes as 0..K-1.")
        if classes is not None and lab.max() >= len(np.atleast_1d(classes)):
            raise DataError(f"{name}: label value {lab.max()} exceeds the {len(classes)} "
                            "names in label.attrs['classes']; fix the class list.")
    return ds
