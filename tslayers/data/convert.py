"""Converters from in-memory containers to the one form of ``tslayers.data.core``.

numpy arrays (equal or variable length), pandas frames (wide: one column per series; long:
id/time/value columns) and xarray Datasets/DataArrays with any dim names. Bad input fails
with a ``DataError`` that names the offending series, cell or column.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd
import xarray as xr

from tslayers.data.core import DataError, add_targets, make_dataset, validate_dataset

__all__ = ["from_numpy", "from_pandas", "from_xarray"]


def _encode_labels(labels: Sequence[Any] | np.ndarray, classes: Sequence[Any] | None = None
                   ) -> tuple[np.ndarray, list[str]]:
    """Map arbitrary labels to 0..K-1 (sorted, numerically when they look numeric)."""
    raw = np.asarray(labels)
    if raw.ndim != 1:
        raise DataError(f"labels must be one value per series, got shape {raw.shape}")
    missing = np.flatnonzero(pd.isna(pd.Series(raw, dtype=object)).to_numpy())
    if len(missing):  # would otherwise become classes "nan" / "None"
        raise DataError(f"{len(missing)} series have no label (None/NaN), e.g. series index "
                        f"{missing[:5].tolist()}; give every series a label or drop the "
                        "unlabelled series before loading")
    if classes is None:
        uniq = pd.unique(raw.astype(str))
        try:
            uniq = sorted(uniq, key=float)
        except ValueError:
            uniq = sorted(uniq)
        classes = list(uniq)
    classes = [str(c) for c in classes]
    index = {c: i for i, c in enumerate(classes)}
    try:
        codes = np.array([index[str(v)] for v in raw], dtype=np.int64)
    except KeyError as err:
        raise DataError(f"label {err.args[0]!r} is not in classes {classes}; add it to "
                        "classes or fix the labels") from None
    return codes, classes


def _pad(series: list[np.ndarray]) -> np.ndarray:
    """Stack (T_i, C) arrays into (N, max T, C) with NaN tails."""
    t_max = max(s.shape[0] for s in series)
    out = np.full((len(series), t_max, series[0].shape[1]), np.nan, dtype=np.float32)
    for i, s in enumerate(series):
        out[i, : s.shape[0]] = s
    return out


def _numeric(frame: pd.DataFrame, where: str, times: Any = None) -> np.ndarray:
    """Columns as float32, refusing cells that are present but not numbers: coercing them to
    NaN would silently turn a typo into a missing value. ``times`` labels the rows."""
    num = frame.apply(pd.to_numeric, errors="coerce")
    bad = num.isna().to_numpy() & frame.notna().to_numpy()
    if bad.any():
        row, col = (int(i[0]) for i in np.nonzero(bad))
        label = (times if times is not None else frame.index)[row]
        raise DataError(f"{where}: column '{frame.columns[col]}' holds the non-numeric value "
                        f"{frame.iat[row, col]!r} at time {label} ({int(bad.sum())} such cells);"
                        " fix or blank those cells (empty/NaN = missing)")
    return num.to_numpy(dtype=np.float32)


def _as_series_list(x: Any, layout: str) -> list[np.ndarray]:
    """A list of per-series arrays -> list of (T_i, C) float arrays, with clear ragged errors."""
    out = []
    for i, s in enumerate(x):
        try:
            a = np.asarray(s, dtype=np.float32)
        except (ValueError, TypeError) as err:
            raise DataError(
                f"series {i} cannot be read as a numeric array ({err}); each series must be a "
                "(time,) or (time, channel) array of numbers (channels of one series must have "
                "equal length)") from None
        if a.ndim == 1:
            a = a[:, None]
        elif a.ndim == 2 and layout == "nct":
            a = a.T
        elif a.ndim != 2:
            raise DataError(f"series {i} has shape {a.shape}; expected (time,) or "
                            "(time, channel)")
        out.append(a)
    if not out:
        raise DataError("no series given")
    chans = {a.shape[1] for a in out}
    if len(chans) > 1:
        first = {c: next(i for i, a in enumerate(out) if a.shape[1] == c) for c in chans}
        raise DataError(
            f"ragged channels: series have different channel counts {sorted(chans)} (e.g. "
            f"series {first}); all series need the same channels - pad missing channels with "
            "NaN or select a common subset")
    return out


def from_numpy(
    x: Any,
    *,
    labels: Sequence[Any] | np.ndarray | None = None,
    classes: Sequence[Any] | None = None,
    layout: Literal["ntc", "nct"] = "ntc",
    split: Sequence[str] | None = None,
    name: str = "array",
    channel_names: Sequence[str] | None = None,
    time_label: np.ndarray | None = None,
    time_label_kind: str = "regime",
    drop_empty: bool = False,
    targets: Mapping[str, Any] | None = None,
    **attrs: Any,
) -> xr.Dataset:
    """Arrays -> dataset. ``x`` is (T,) one series, (N, T) univariate, (N, T, C) (or (N, C, T)
    with ``layout="nct"``, aeon's convention), or a list of per-series (T_i,) / (T_i, C) arrays
    of different lengths (padded with NaN). ``targets``: named probe targets per series or per
    time step (see :func:`tslayers.data.add_targets`). Extra keyword arguments become
    attributes (``freq``, ``season_length``...).
    """
    if isinstance(x, np.ndarray) and x.dtype != object:
        arr = np.asarray(x, dtype=np.float32)
        if arr.ndim == 1:
            arr = arr[None, :, None]
        elif arr.ndim == 2:
            arr = arr[..., None]
        elif arr.ndim == 3 and layout == "nct":
            arr = arr.transpose(0, 2, 1)
        elif arr.ndim != 3:
            raise DataError(f"array of shape {arr.shape}: expected (T,), (N, T) or (N, T, C)")
    elif isinstance(x, (list, tuple, np.ndarray)):
        if len(x) and np.isscalar(x[0]):
            return from_numpy(np.asarray(x, dtype=np.float32), labels=labels, classes=classes,
                              split=split, name=name, channel_names=channel_names,
                              drop_empty=drop_empty, targets=targets, **attrs)
        arr = _pad(_as_series_list(x, layout))
    else:
        raise DataError(f"from_numpy expects an array or a list of arrays, got {type(x)}")
    lab, cls = (None, None)
    if labels is not None:
        if len(labels) != arr.shape[0]:
            raise DataError(f"{len(labels)} labels for {arr.shape[0]} series; give one label "
                            "per series")
        lab, cls = _encode_labels(labels, classes)
    if split is not None and len(split) != arr.shape[0]:
        raise DataError(f"{len(split)} split entries for {arr.shape[0]} series")
    ds = make_dataset(arr, label=lab, classes=cls, split=split, channel_names=channel_names,
                      time_label=time_label, time_label_kind=time_label_kind,
                      attrs={"name": name, "system": "real", **attrs})
    if targets:
        ds = add_targets(ds, targets)
    return validate_dataset(ds, drop_empty=drop_empty, where=name)


def from_pandas(
    df: pd.DataFrame | pd.Series,
    *,
    format: Literal["wide", "long"] = "wide",
    id_col: str = "item_id",
    time_col: str | None = "timestamp",
    value_cols: Sequence[str] | str | None = None,
    label_col: str | None = None,
    name: str = "frame",
    drop_empty: bool = False,
    **attrs: Any,
) -> xr.Dataset:
    """Frames -> dataset.

    ``wide``: rows are time steps (index = time), each column one univariate series (a
    ``pd.Series`` is one series). ``long``: one row per (series, time) with columns ``id_col``,
    ``time_col`` (sorted within a series; None = row order) and ``value_cols`` (each a channel;
    default: every other numeric column); ``label_col`` holds a per-series label. Series keep
    their own start (``start`` variable when times are datetimes) and are left-aligned.
    """
    if isinstance(df, pd.Series):
        df = df.to_frame(name=df.name or "value")
    if format == "wide":
        return _from_wide(df, name=name, drop_empty=drop_empty, **attrs)
    if format != "long":
        raise DataError(f"format must be 'wide' or 'long', got {format!r}")
    return _from_long(df, id_col=id_col, time_col=time_col, value_cols=value_cols,
                      label_col=label_col, name=name, drop_empty=drop_empty, **attrs)


def _from_wide(df: pd.DataFrame, *, name: str, drop_empty: bool, **attrs: Any) -> xr.Dataset:
    """One univariate series per column; the index gives the start and the frequency."""
    if df.index.has_duplicates:
        dup = df.index[df.index.duplicated()][0]
        raise DataError(f"{name}: time {dup} appears more than once in the index; a wide "
                        "frame needs one row per time step (aggregate or drop duplicates)")
    values = _numeric(df, name).T
    start = None
    if isinstance(df.index, pd.DatetimeIndex):
        start = np.repeat(df.index[0].to_datetime64(), values.shape[0])
    elif isinstance(df.index, pd.PeriodIndex):
        start = np.repeat(df.index[0].to_timestamp().to_datetime64(), values.shape[0])
    freq = attrs.pop("freq", None) or _freq_of(df.index)
    ds = make_dataset(values[..., None], channel_names=["value"], start=start,
                      attrs={"name": name, "system": "real", "freq": freq, **attrs})
    ds = ds.assign_coords(series_id=("series", [str(c) for c in df.columns]))
    return validate_dataset(ds, drop_empty=drop_empty, where=name)


def _freq_of(index: pd.Index) -> str | None:
    freq = getattr(index, "freqstr", None)
    if freq is None and isinstance(index, pd.DatetimeIndex) and len(index) >= 3:
        freq = pd.infer_freq(index)
    return freq


def _from_long(
    df: pd.DataFrame,
    *,
    id_col: str,
    time_col: str | None,
    value_cols: Sequence[str] | str | None,
    label_col: str | None,
    name: str,
    drop_empty: bool,
    **attrs: Any,
) -> xr.Dataset:
    """One row per (series, time): group by id, order by time, one channel per value column."""
    missing = [c for c in [id_col, time_col, label_col] if c is not None and c not in df.columns]
    if missing:
        raise DataError(f"long frame lacks columns {missing}; it has {list(df.columns)}. Pass "
                        "id_col=, time_col= (or None), label_col= naming your columns.")
    value_cols = _value_columns(df, value_cols, {id_col, time_col, label_col}, name)
    if time_col is not None:
        _refuse_repeated_times(df, id_col, time_col, name)
        df = df.sort_values([id_col, time_col], kind="stable")
    groups = list(df.groupby(id_col, sort=False))
    series = [_numeric(g[value_cols], f"{name}: series '{k}'",
                       g[time_col].to_numpy() if time_col is not None else None)
              for k, g in groups]
    labels = _series_labels(groups, label_col) if label_col is not None else None
    start = None
    if time_col is not None and pd.api.types.is_datetime64_any_dtype(df[time_col]):
        start = np.array([g[time_col].iloc[0] for _, g in groups], dtype="datetime64[ns]")
    ds = from_numpy(series, labels=labels, name=name, channel_names=value_cols,
                    drop_empty=drop_empty, **attrs)
    if start is not None and ds.sizes["series"] == len(start):  # not when drop_empty dropped
        ds["start"] = ("series", start)
    if ds.sizes["series"] == len(groups):
        ds = ds.assign_coords(series_id=("series", [str(k) for k, _ in groups]))
    return ds


def _value_columns(df: pd.DataFrame, value_cols: Sequence[str] | str | None, skip: set[Any],
                   name: str) -> list[str]:
    """The channels of a long frame: those given, else every numeric column not in ``skip``."""
    if value_cols is None:
        value_cols = [c for c in df.columns if c not in skip
                      and pd.api.types.is_numeric_dtype(df[c])]
        for c in df.columns:  # a numeric column spoiled by a few strings is not metadata
            if c not in skip and c not in value_cols:
                col = df[c].dropna()
                if len(col) and pd.to_numeric(col, errors="coerce").notna().mean() > 0.5:
                    _numeric(df[[c]], name)  # raises, naming the cell
    value_cols = [value_cols] if isinstance(value_cols, str) else list(value_cols)
    if not value_cols:
        raise DataError("long frame has no numeric value columns; pass value_cols=[...]")
    return value_cols


def _refuse_repeated_times(df: pd.DataFrame, id_col: str, time_col: str, name: str) -> None:
    dup = df.duplicated([id_col, time_col])
    if dup.any():
        first = df[dup].iloc[0]
        raise DataError(f"{name}: series '{first[id_col]}' has time {first[time_col]} more "
                        f"than once ({int(dup.sum())} duplicate rows); keep one row per "
                        "(series, time), e.g. df.drop_duplicates([id, time]) or aggregate")


def _series_labels(groups: list[tuple[Any, pd.DataFrame]], label_col: str) -> list[Any]:
    """One label per series group, refusing a label that changes within a series."""
    per = [g[label_col].unique() for _, g in groups]
    bad = [str(k) for (k, _), u in zip(groups, per, strict=True) if len(u) != 1]
    if bad:
        raise DataError(f"label_col '{label_col}' varies within series {bad[:5]}; a "
                        "series-level label must be constant per id")
    return [u[0] for u in per]


def from_xarray(
    data: xr.Dataset | xr.DataArray,
    *,
    obs_var: str = "obs",
    series_dim: str = "series",
    time_dim: str = "time",
    channel_dim: str | None = "channel",
    drop_empty: bool = False,
) -> xr.Dataset:
    """An xarray object with any dim names -> the in-memory form (renames and transposes).

    A DataArray is taken as the observations; missing ``series``/``channel`` dims are added
    with size 1. Other variables of a Dataset keep their dims (renamed accordingly).
    """
    ds = data.to_dataset(name="obs") if isinstance(data, xr.DataArray) else data.copy()
    if isinstance(data, xr.Dataset) and obs_var not in ds:
        raise DataError(f"variable '{obs_var}' not in dataset (has {list(ds.data_vars)}); pass "
                        "obs_var=<name of the observations>")
    if obs_var != "obs":
        ds = ds.rename({obs_var: "obs"})
    dims = ds["obs"].dims
    for d, what in [(time_dim, "time_dim")]:
        if d not in dims:
            raise DataError(f"obs has dims {dims}; no '{d}' dim - pass {what}=<name>")
    ren = {k: v for k, v in [(series_dim, "series"), (time_dim, "time"),
                             (channel_dim, "channel")] if k and k in ds.dims and k != v}
    ds = ds.rename(ren)
    if "series" not in ds["obs"].dims:
        ds["obs"] = ds["obs"].expand_dims("series")
    if "channel" not in ds["obs"].dims:
        ds["obs"] = ds["obs"].expand_dims("channel", axis=-1)
    extra = [d for d in ds["obs"].dims if d not in ("series", "time", "channel")]
    if extra:
        raise DataError(f"obs has extra dims {extra}; select or stack them into 'channel' "
                        "first (e.g. da.stack(channel=[...]))")
    ds["obs"] = ds["obs"].transpose("series", "time", "channel").astype(np.float32)
    # positions as coords: time values (e.g. dates) are kept aside as ``time_value``
    if "time" in ds.coords and not np.issubdtype(ds["time"].dtype, np.integer):
        ds = ds.assign_coords(time_value=("time", ds["time"].values))
    ds = ds.assign_coords(series=np.arange(ds.sizes["series"]), time=np.arange(ds.sizes["time"]))
    if "channel" not in ds.coords:
        ds = ds.assign_coords(channel=[f"c{i}" for i in range(ds.sizes["channel"])])
    ds.attrs.setdefault("name", "xarray")
    return validate_dataset(ds, drop_empty=drop_empty)
