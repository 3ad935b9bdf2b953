"""Forecasting collections shipped offline (aeon, statsmodels) as lists of series, and their
GluonTS test windows."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd


def _aeon_csv(folder: str, file: str) -> pd.DataFrame:
    from pathlib import Path

    import aeon.datasets

    return pd.read_csv(Path(aeon.datasets.__file__).parent / "data" / folder / file)


def load_collection(spec: dict) -> tuple[list[np.ndarray], list[pd.Period]]:
    """(series values, their start periods) for one collection in the config."""
    src, freq = spec["source"], spec["freq"]
    if src == "m1_yearly":
        from aeon.datasets import load_forecasting

        df = load_forecasting("m1_yearly_dataset")
        vals = [np.asarray(v, np.float64) for v in df["series_value"]]
        starts = [pd.Period(t, freq=freq) for t in df["start_timestamp"]]
        return vals, starts
    if src == "solar":
        df = _aeon_csv("solar", "solar.csv")
        t0 = pd.Timestamp(df.iloc[0, 0]).tz_localize(None)
        return [df["solar_gen"].to_numpy(np.float64)], [pd.Period(t0, freq=freq)]
    if src == "lynx":
        df = _aeon_csv("Lynx", "Lynx.csv")
        return [df.iloc[:, 1].to_numpy(np.float64)], [pd.Period(str(df.iloc[0, 0]), freq=freq)]
    if src == "shampoo":
        df = _aeon_csv("ShampooSales", "ShampooSales.csv")
        return [df["Sales"].to_numpy(np.float64)], [pd.Period(df.iloc[0, 0], freq=freq)]
    from tslayers.data import load_dataset  # statsmodels/* and aeon airline

    v = load_dataset(src)["obs"].values[0, :, 0].astype(np.float64)
    if np.isnan(v).any():  # co2's missing weeks: linear interpolation, for every model
        v = pd.Series(v).interpolate(limit_direction="both").to_numpy()
    return [v], [pd.Period(spec["start"], freq=freq)]


def gluonts_data(values: list[np.ndarray], starts: list[pd.Period], spec: dict) -> dict[str, Any]:
    """Train part = each series without its last ``test_len`` steps; test windows = every
    ``step``-th forecast origin whose horizon lies inside the test part (rolling origin, true
    history as context). ``groups``: the bootstrap unit of each window - the series when a
    collection has many series, else blocks of windows whose origins lie within one horizon."""
    from gluonts.dataset.common import ListDataset
    from gluonts.dataset.split import split

    h, test_len, step = int(spec["horizon"]), int(spec["test_len"]), int(spec.get("step", 1))
    freq = spec["freq"]
    ds = ListDataset([{"start": s, "target": v.astype(np.float32), "item_id": str(i)}
                      for i, (v, s) in enumerate(zip(values, starts))], freq=freq)
    n_windows = (test_len - h) // step + 1
    train, template = split(ds, offset=-test_len)
    test = template.generate_instances(prediction_length=h, windows=n_windows, distance=step)
    labels = [np.asarray(lab["target"], np.float64) for lab in test.label]
    if len(values) > 1:
        groups = np.repeat(np.arange(len(values)), n_windows)
        unit = "series"
    else:
        groups = (np.arange(n_windows) * step) // h
        unit = f"blocks of windows with origins within {h} steps"
    train_values = [v[:-test_len] for v in values]
    return dict(train=train, test=test, labels=labels, groups=groups, unit=unit,
                n_windows=n_windows, train_values=train_values)
