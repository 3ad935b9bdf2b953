"""Real-data adapters: everything maps to the one in-memory form of ``tslayers.data.core``.

Sources: numpy arrays (equal or variable length), pandas frames (wide: one column per series;
long: id/time/value columns), xarray Datasets/DataArrays and netCDF files, GluonTS datasets
(ListDataset, FileDataset, the dataset repository) and the offline real data shipped inside
PyPI packages: UCR/UEA classification sets through aeon (official train/test split kept as the
``split`` variable), and forecasting series from statsmodels (sunspots, co2, nile...) and aeon
(airline). Heavy libraries (gluonts, aeon, statsmodels) are imported inside the functions.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import xarray as xr

from tslayers.data.core import DataError, add_targets, make_dataset, validate_dataset

__all__ = [
    "from_numpy",
    "from_pandas",
    "from_xarray",
    "load_netcdf",
    "save_netcdf",
    "from_gluonts",
    "load_gluonts",
    "load_gluonts_file",
    "load_ucr",
    "load_statsmodels",
    "load_airline",
    "load_file",
    "UCR_SHIPPED",
    "STATSMODELS_SERIES",
]


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
    if format != "long":
        raise DataError(f"format must be 'wide' or 'long', got {format!r}")
    missing = [c for c in [id_col, time_col, label_col] if c is not None and c not in df.columns]
    if missing:
        raise DataError(f"long frame lacks columns {missing}; it has {list(df.columns)}. Pass "
                        "id_col=, time_col= (or None), label_col= naming your columns.")
    if value_cols is None:
        skip = {id_col, time_col, label_col}
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
    if time_col is not None:
        dup = df.duplicated([id_col, time_col])
        if dup.any():
            first = df[dup].iloc[0]
            raise DataError(f"{name}: series '{first[id_col]}' has time {first[time_col]} more "
                            f"than once ({int(dup.sum())} duplicate rows); keep one row per "
                            "(series, time), e.g. df.drop_duplicates([id, time]) or aggregate")
        df = df.sort_values([id_col, time_col], kind="stable")
    groups = list(df.groupby(id_col, sort=False))
    series = [_numeric(g[value_cols], f"{name}: series '{k}'",
                       g[time_col].to_numpy() if time_col is not None else None)
              for k, g in groups]
    labels = None
    if label_col is not None:
        per = [g[label_col].unique() for _, g in groups]
        bad = [str(k) for (k, _), u in zip(groups, per, strict=True) if len(u) != 1]
        if bad:
            raise DataError(f"label_col '{label_col}' varies within series {bad[:5]}; a "
                            "series-level label must be constant per id")
        labels = [u[0] for u in per]
    start = None
    if time_col is not None and pd.api.types.is_datetime64_any_dtype(df[time_col]):
        start = np.array([g[time_col].iloc[0] for _, g in groups], dtype="datetime64[ns]")
    ds = from_numpy(series, labels=labels, name=name, channel_names=value_cols,
                    drop_empty=drop_empty, **attrs)
    if start is not None and ds.sizes["series"] == len(start):
        ds["start"] = ("series", start)
    if ds.sizes["series"] == len(groups):
        ds = ds.assign_coords(series_id=("series", [str(k) for k, _ in groups]))
    return ds


def _freq_of(index: pd.Index) -> str | None:
    freq = getattr(index, "freqstr", None)
    if freq is None and isinstance(index, pd.DatetimeIndex) and len(index) >= 3:
        freq = pd.infer_freq(index)
    return freq


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


def _netcdf_engine() -> str:
    """h5netcdf (netCDF4) when h5py is importable, else scipy (netCDF3, always available)."""
    try:
        import h5py  # noqa: F401
    except ImportError:
        return "scipy"
    return "h5netcdf"


_JSON = "json:"


def _map_attrs(ds: xr.Dataset, fn: Any) -> xr.Dataset:
    ds = ds.copy()
    ds.attrs = {k: fn(v) for k, v in ds.attrs.items()}
    for name in ds.variables:
        ds[name].attrs = {k: fn(v) for k, v in ds[name].attrs.items()}
    return ds


def _encode_attr(v: Any) -> Any:
    # netCDF3 cannot hold lists of strings (class names); JSON keeps every list exact
    return _JSON + json.dumps(v) if isinstance(v, (list, tuple)) else v


def _decode_attr(v: Any) -> Any:
    if isinstance(v, str) and v.startswith(_JSON):
        return json.loads(v[len(_JSON):])
    if isinstance(v, np.ndarray):
        return v.tolist()
    return v


def load_netcdf(path: str | Path, **kwargs: Any) -> xr.Dataset:
    """Open a netCDF file written by ``save_netcdf`` (or any file ``from_xarray`` can map)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"netCDF file '{path}' does not exist")
    errors = []
    for engine in dict.fromkeys([_netcdf_engine(), "scipy"]):
        try:
            with xr.open_dataset(path, engine=engine) as f:
                ds = _map_attrs(f.load(), _decode_attr)
            break
        except (ImportError, OSError, ValueError, TypeError) as err:
            errors.append(f"{engine}: {err}")
    else:
        raise DataError(f"cannot read netCDF file '{path}' ({'; '.join(errors)}); netCDF4/HDF5 "
                        "files need h5py (pip install h5py)")
    for name in ("series", "time", "label", "time_label", "anomaly_type"):  # netCDF3: int32
        if name in ds.variables and np.issubdtype(ds[name].dtype, np.integer):
            ds[name] = ds[name].astype(np.int64)
    if "obs" in ds and ds["obs"].dims == ("series", "time", "channel") and not kwargs:
        return validate_dataset(ds, where=str(path))
    return from_xarray(ds, **kwargs)


def save_netcdf(ds: xr.Dataset, path: str | Path) -> Path:
    """Write the dataset to netCDF: netCDF4 via h5netcdf when h5py is installed, else netCDF3
    via scipy; list attributes (class names...) are stored as JSON so both round-trip."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _map_attrs(ds, _encode_attr).to_netcdf(path, engine=_netcdf_engine())
    return path


# --------------------------------------------------------------------------------------------
# GluonTS
# --------------------------------------------------------------------------------------------


def _period_start(start: Any) -> np.datetime64 | None:
    try:
        if isinstance(start, pd.Period):
            return start.to_timestamp().to_datetime64()
        return pd.Timestamp(start).to_datetime64()
    except (TypeError, ValueError):
        return None


def from_gluonts(
    dataset: Iterable[dict[str, Any]],
    *,
    name: str = "gluonts",
    freq: str | None = None,
    label_field: str | None = None,
    max_series: int | None = None,
    split: str | None = None,
    **attrs: Any,
) -> xr.Dataset:
    """Any GluonTS dataset (ListDataset, FileDataset, a repository split) -> dataset.

    Univariate targets are (T,), multivariate (C, T) as in GluonTS. ``label_field`` (e.g.
    ``"feat_static_cat"``) gives a series label (first entry). ``split`` fills the ``split``
    variable with one value for all series.
    """
    series, starts, labels, ids = [], [], [], []
    for i, entry in enumerate(dataset):
        if max_series is not None and i >= max_series:
            break
        if "target" not in entry:
            raise DataError(f"GluonTS entry {i} has no 'target' field (keys {list(entry)})")
        tgt = np.asarray(entry["target"], dtype=np.float32)
        series.append(tgt.T if tgt.ndim == 2 else tgt)
        starts.append(_period_start(entry.get("start")))
        ids.append(str(entry.get("item_id", i)))
        if label_field is not None:
            if label_field not in entry:
                raise DataError(f"label_field '{label_field}' missing from GluonTS entry {i}; "
                                f"it has {list(entry)}")
            labels.append(np.atleast_1d(entry[label_field])[0])
        if freq is None and isinstance(entry.get("start"), pd.Period):
            freq = entry["start"].freqstr
    if not series:
        raise DataError(f"GluonTS dataset '{name}' is empty")
    ds = from_numpy(series, labels=labels or None, name=name, freq=freq,
                    split=[split] * len(series) if split else None, **attrs)
    if all(s is not None for s in starts):
        ds["start"] = ("series", np.array(starts, dtype="datetime64[ns]"))
    return ds.assign_coords(series_id=("series", ids))


def load_gluonts_file(path: str | Path, *, freq: str | None = None, **kwargs: Any) -> xr.Dataset:
    """A GluonTS FileDataset (a JSON-lines file or a folder of them) -> dataset."""
    from gluonts.dataset.common import FileDataset

    path = Path(path)
    if not path.exists():
        raise DataError(f"GluonTS file dataset '{path}' does not exist")
    if freq is None:
        raise DataError(f"loading GluonTS file dataset '{path}' needs freq= (e.g. 'h', 'D')")
    return from_gluonts(FileDataset(path, freq=freq), name=str(path.name), freq=freq, **kwargs)


def load_gluonts(
    name: str,
    *,
    path: str | Path | None = None,
    part: Literal["train", "test", "both"] = "test",
    regenerate: bool = False,
    max_series: int | None = None,
) -> xr.Dataset:
    """A GluonTS repository dataset by name (``gluonts/<name>``).

    Loads from ``path`` (default ``~/.gluonts/datasets``) when materialised there; otherwise
    GluonTS downloads it (needs the internet) or generates it (artificial ones such as
    ``constant``). ``part="test"`` is the usual choice: GluonTS test series extend the train
    series. ``both`` keeps the repository's train/test split in the ``split`` variable.
    """
    from gluonts.dataset.repository import get_dataset

    kw: dict[str, Any] = {"regenerate": regenerate}
    if path is not None:
        kw["path"] = Path(path)
    try:
        tds = get_dataset(name, **kw)
    except Exception as err:  # download failures come in many types
        raise DataError(f"GluonTS dataset '{name}' could not be loaded ({type(err).__name__}: "
                        f"{err}). Offline, materialise it first under path= or use a local "
                        "FileDataset (load_dataset('path/to/data.json', freq=...)).") from err
    freq = tds.metadata.freq
    pl = tds.metadata.prediction_length
    attrs = {"freq": freq, "prediction_length": pl}
    if part in ("train", "test"):
        ds = from_gluonts(getattr(tds, part), name=f"gluonts/{name}", max_series=max_series,
                          **attrs)
    elif part == "both":
        tr = from_gluonts(tds.train, name=f"gluonts/{name}", split="train",
                          max_series=max_series, **attrs)
        te = from_gluonts(tds.test, name=f"gluonts/{name}", split="test",
                          max_series=max_series, **attrs)
        ds = _concat_series([tr, te])
    else:
        raise DataError(f"part must be 'train', 'test' or 'both', got {part!r}")
    ds.attrs["system"] = "gluonts"
    return ds


def _concat_series(parts: list[xr.Dataset]) -> xr.Dataset:
    """Concatenate datasets along series, padding time with NaN (ragged tails)."""
    ds = xr.concat(parts, dim="series", join="outer", fill_value={"obs": np.nan},
                   combine_attrs="override", coords="minimal", compat="override")
    ds = ds.assign_coords(series=np.arange(ds.sizes["series"]))
    ds["obs"] = ds["obs"].astype(np.float32)
    return ds


# --------------------------------------------------------------------------------------------
# Real data shipped inside PyPI packages (offline)
# --------------------------------------------------------------------------------------------

UCR_SHIPPED = ("GunPoint", "ArrowHead", "ItalyPowerDemand", "BasicMotions", "JapaneseVowels",
               "OSULeaf", "ACSF1", "PickupGestureWiimoteZ")


def load_ucr(name: str, *, part: Literal["train", "test", "both"] = "both") -> xr.Dataset:
    """A UCR/UEA classification set through aeon's loader, official split kept in ``split``.

    Sets shipped inside aeon (``UCR_SHIPPED``) load offline; others need aeon's download.
    Variable-length sets (JapaneseVowels) are padded with NaN; labels are encoded over the
    union of train and test labels so codes agree between the splits.
    """
    try:
        from aeon.datasets import load_classification
    except ImportError as err:  # pragma: no cover - aeon is a project dependency
        raise DataError("loading UCR/UEA data needs aeon (pip install aeon)") from err
    parts = ["train", "test"] if part == "both" else [part]
    xs, ys, splits = [], [], []
    for p in parts:
        try:
            x, y = load_classification(name, split=p)
        except Exception as err:
            raise DataError(
                f"UCR/UEA dataset '{name}' could not be loaded ({type(err).__name__}: {err}). "
                f"Offline, the sets shipped with aeon are {list(UCR_SHIPPED)}.") from err
        xs.extend(list(x))  # each (C, T_i)
        ys.extend(list(y))
        splits.extend([p] * len(y))
    return from_numpy(xs, labels=ys, layout="nct", split=splits, name=f"ucr/{name}",
                      system="ucr")


# name -> (loader of a pandas Series/DataFrame column, freq, season_length, description)
STATSMODELS_SERIES: dict[str, tuple[str, str, int]] = {
    "sunspots": ("yearly sunspot activity 1700-2008 (season_length = the ~11-year cycle)",
                 "YS", 11),
    "co2": ("weekly Mauna Loa CO2 1958-2001, with missing weeks", "W-SAT", 52),
    "nile": ("yearly Nile flow at Aswan 1871-1970", "YS", 1),
    "elnino": ("monthly El Nino sea-surface temperatures 1950-2010", "MS", 12),
}


def load_statsmodels(name: str) -> xr.Dataset:
    """A forecasting series shipped with statsmodels (``STATSMODELS_SERIES``), one series.

    ``co2`` keeps its missing weeks as NaN; ``airline`` is served from aeon's copy (statsmodels
    only fetches it online).
    """
    if name == "airline":
        return load_airline()
    if name not in STATSMODELS_SERIES:
        raise DataError(f"unknown statsmodels series '{name}'; available: "
                        f"{sorted([*STATSMODELS_SERIES, 'airline'])}")
    import statsmodels.api as sm

    desc, freq, season = STATSMODELS_SERIES[name]
    if name == "sunspots":
        d = sm.datasets.sunspots.load_pandas().data
        s = pd.Series(d["SUNACTIVITY"].to_numpy(), pd.date_range(
            f"{int(d['YEAR'].iloc[0])}-01-01", periods=len(d), freq="YS"), name="sunspots")
    elif name == "co2":
        s = sm.datasets.co2.load_pandas().data["co2"]
    elif name == "nile":
        d = sm.datasets.nile.load_pandas().data
        s = pd.Series(d["volume"].to_numpy(), pd.date_range(
            f"{int(d['year'].iloc[0])}-01-01", periods=len(d), freq="YS"), name="nile")
    else:  # elnino: wide (year x month) -> one monthly series
        d = sm.datasets.elnino.load_pandas().data
        vals = d.drop(columns="YEAR").to_numpy().ravel()
        s = pd.Series(vals, pd.date_range(f"{int(d['YEAR'].iloc[0])}-01-01", periods=len(vals),
                                          freq="MS"), name="elnino")
    return from_pandas(s, name=f"statsmodels/{name}", freq=freq, season_length=season,
                       description=desc, system="statsmodels")


def load_airline() -> xr.Dataset:
    """Box-Jenkins monthly airline passengers 1949-1960 (aeon's shipped copy)."""
    from aeon.datasets import load_airline as _aeon_airline

    y = np.asarray(_aeon_airline(), dtype=np.float32)
    s = pd.Series(y, pd.date_range("1949-01-01", periods=len(y), freq="MS"), name="airline")
    return from_pandas(s, name="statsmodels/airline", freq="MS", season_length=12,
                       description="monthly airline passengers 1949-1960", system="aeon")


def load_file(path: str | Path, **kwargs: Any) -> xr.Dataset:
    """Load by file type: ``.nc`` netCDF, ``.npy``/``.npz`` arrays (an ``.npz`` holds ``x``,
    optional ``labels`` and any named targets, see :func:`tslayers.data.add_targets`),
    ``.csv`` frames (``format`` wide/long), ``.json``/``.jsonl`` or a folder = GluonTS
    FileDataset (needs ``freq``)."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"data file '{path}' does not exist")
    suffix = path.suffix.lower()
    if suffix in (".nc", ".nc4", ".netcdf"):
        return load_netcdf(path, **kwargs)
    if suffix == ".npy":
        return from_numpy(np.load(path), name=path.stem, **kwargs)
    if suffix == ".npz":
        with np.load(path) as z:
            if "x" not in z:
                raise DataError(f"{path}: an .npz needs an array 'x' (and optional 'labels' "
                                f"and named targets); found {list(z.keys())}")
            labels = z["labels"] if "labels" in z else None
            targets = {k: z[k] for k in z.keys() if k not in ("x", "labels")}
            return from_numpy(z["x"], labels=labels, name=path.stem, targets=targets, **kwargs)
    if suffix == ".csv":
        fmt = kwargs.pop("format", "wide")
        if fmt == "wide":
            df = pd.read_csv(path, index_col=0, parse_dates=[0])
        else:
            df = pd.read_csv(path)
            tc = kwargs.get("time_col", "timestamp")
            if tc in df.columns:
                df[tc] = pd.to_datetime(df[tc])
        return from_pandas(df, format=fmt, name=path.stem, **kwargs)
    if suffix in (".json", ".jsonl") or path.is_dir():
        return load_gluonts_file(path, **kwargs)
    raise DataError(f"don't know how to read '{path}' (suffix '{suffix}'); use .nc, .npy, .npz, "
                    ".csv, .json/.jsonl or a GluonTS folder")
