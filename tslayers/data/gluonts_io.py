"""GluonTS datasets (ListDataset, FileDataset, the dataset repository) -> the in-memory form.

gluonts is imported inside the loaders, so this module is light to import.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import xarray as xr

from tslayers.data.convert import from_numpy
from tslayers.data.core import DataError

__all__ = ["from_gluonts", "load_gluonts", "load_gluonts_file"]


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
