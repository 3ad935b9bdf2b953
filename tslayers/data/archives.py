"""Offline real data shipped inside PyPI packages.

UCR/UEA classification sets through aeon (official train/test split kept as the ``split``
variable) and forecasting series from statsmodels (sunspots, co2, nile, elnino) and aeon
(airline). aeon and statsmodels are imported inside the loaders.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
import xarray as xr

from tslayers.data.convert import from_numpy, from_pandas
from tslayers.data.core import DataError

__all__ = ["load_ucr", "load_statsmodels", "load_airline", "UCR_SHIPPED", "STATSMODELS_SERIES"]


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


# name -> (description, freq, season_length)
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
