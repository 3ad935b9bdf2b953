"""Series sources and the synthetic engine; windowing, splits and the data module.

Everything maps to one in-memory form, an ``xr.Dataset`` with ``obs`` (series, time, channel)
and optional ``latent``, ``label``, ``time_label``, ``split`` (see ``tslayers.data.core``).

Importing this package is light (numpy/xarray/scipy); torch and Lightning are imported only
when ``WindowDataset``, ``SeriesDataModule`` and friends are first used, gluonts/aeon/
statsmodels only inside their loaders.
"""

from __future__ import annotations

from tslayers._lazy import lazy_getattr
from tslayers.data.adapters import (
    from_gluonts,
    from_numpy,
    from_pandas,
    from_xarray,
    load_airline,
    load_file,
    load_gluonts,
    load_gluonts_file,
    load_netcdf,
    load_statsmodels,
    load_ucr,
    save_netcdf,
)
from tslayers.data.core import (
    DataError,
    add_targets,
    make_dataset,
    series_lengths,
    validate_dataset,
)
from tslayers.data.registry import list_datasets, load_dataset, register_dataset
from tslayers.data.synthetic import (
    make_lgssm,
    make_lorenz,
    make_mixture,
    make_pendulum,
    make_seasonal_anomalies,
    make_switching_ar,
    make_van_der_pol,
)

_LAZY = {
    "WindowDataset": "tslayers.data.windows",
    "collate_windows": "tslayers.data.windows",
    "split_series": "tslayers.data.windows",
    "split_time": "tslayers.data.windows",
    "DataConfig": "tslayers.data.config",
    "SeriesDataModule": "tslayers.data.module",
    "kalman_filter": "tslayers.data.kalman",
    "kalman_smoother": "tslayers.data.kalman",
    "lgssm_optimum": "tslayers.data.kalman",
    "lgssm_window_optimum": "tslayers.data.kalman",
}


__getattr__ = lazy_getattr(__name__, _LAZY)


__all__ = [
    "DataError", "add_targets", "make_dataset", "validate_dataset", "series_lengths",
    "load_dataset", "register_dataset", "list_datasets",
    "make_lgssm", "make_lorenz", "make_pendulum", "make_van_der_pol", "make_switching_ar",
    "make_seasonal_anomalies", "make_mixture",
    "from_numpy", "from_pandas", "from_xarray", "load_netcdf", "save_netcdf", "from_gluonts",
    "load_gluonts", "load_gluonts_file", "load_ucr", "load_statsmodels", "load_airline",
    "load_file",
    *_LAZY,
]
