"""Real-data adapters: everything maps to the one in-memory form of ``tslayers.data.core``.

One import point for every source, each kept in its own module: in-memory arrays, frames and
xarray objects (``convert``), netCDF files (``netcdf``), GluonTS datasets (``gluonts_io``) and the
offline data shipped inside PyPI packages (``archives``). ``load_file`` picks the reader by file
type. Heavy libraries (gluonts, aeon, statsmodels) are imported inside the loaders.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from tslayers.data.archives import (
    STATSMODELS_SERIES,
    UCR_SHIPPED,
    load_airline,
    load_statsmodels,
    load_ucr,
)
from tslayers.data.convert import from_numpy, from_pandas, from_xarray
from tslayers.data.core import DataError
from tslayers.data.gluonts_io import from_gluonts, load_gluonts, load_gluonts_file
from tslayers.data.netcdf import load_netcdf, save_netcdf

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
