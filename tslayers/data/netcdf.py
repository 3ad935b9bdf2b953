"""netCDF files: write the in-memory form and read it (or any file ``from_xarray`` maps) back.

netCDF4 via h5netcdf when h5py is installed, else netCDF3 via scipy (always available); list
attributes are stored as JSON strings so class names survive netCDF3.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from tslayers.data.convert import from_xarray
from tslayers.data.core import DataError, validate_dataset

__all__ = ["load_netcdf", "save_netcdf"]


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
