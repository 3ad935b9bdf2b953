"""Adapters on dirty input: strings, duplicate times, missing labels, infinities, empty series."""

import numpy as np
import pandas as pd
import pytest

from tslayers.data import DataConfig, SeriesDataModule, from_numpy, from_pandas
from tslayers.data.core import DataError

RNG = np.random.default_rng(0)


def test_a_string_cell_in_a_wide_frame_is_refused_with_column_and_time():
    idx = pd.date_range("2024-01-01", periods=4, freq="D")
    df = pd.DataFrame({"a": [1.0, 2.0, 3.0, 4.0], "b": [1, "oops", 3, 4]}, index=idx)
    with pytest.raises(DataError, match=r"column 'b' holds the non-numeric value 'oops' at "
                                        r"time 2024-01-02"):
        from_pandas(df)


def test_a_string_cell_in_a_long_frame_is_refused_not_dropped():
    df = pd.DataFrame({"item_id": ["x"] * 3 + ["y"] * 3, "timestamp": [0, 1, 2] * 2,
                       "value": [1.0, 2.0, 3.0, 4.0, "5,0", 6.0]})
    with pytest.raises(DataError, match=r"column 'value' holds the non-numeric value '5,0'"):
        from_pandas(df, format="long")  # default value_cols: not silently skipped
    with pytest.raises(DataError, match=r"series 'y'.*'5,0' at time 1"):
        from_pandas(df, format="long", value_cols="value")


def test_duplicate_timestamps_are_refused_with_the_series_and_time():
    df = pd.DataFrame({"item_id": ["x", "x", "x"], "timestamp": [0, 1, 1],
                       "value": [1.0, 2.0, 3.0]})
    with pytest.raises(DataError, match=r"series 'x' has time 1 more than once"):
        from_pandas(df, format="long")
    wide = pd.DataFrame({"a": [1.0, 2.0, 3.0]}, index=pd.to_datetime(
        ["2024-01-01", "2024-01-02", "2024-01-02"]))
    with pytest.raises(DataError, match=r"time 2024-01-02 00:00:00 appears more than once"):
        from_pandas(wide)


@pytest.mark.parametrize("labels", [["a", None, "b"], [1.0, np.nan, 2.0]])
def test_missing_labels_are_refused_not_turned_into_classes(labels):
    with pytest.raises(DataError, match=r"1 series have no label.*series index \[1\]"):
        from_numpy(RNG.random((3, 20)), labels=labels)


def test_infinities_become_missing_values_with_a_warning():
    x = RNG.random((2, 20)).astype(np.float32)
    x[1, 7] = np.inf
    x[0, 3] = -np.inf
    with pytest.warns(UserWarning, match=r"2 \+-inf values .* \(first at series 0, time 3"):
        ds = from_numpy(x)
    obs = ds["obs"].values[..., 0]
    assert np.isnan(obs[1, 7]) and np.isnan(obs[0, 3]) and np.isfinite(obs).sum() == 38


def test_drop_empty_applies_to_file_datasets(tmp_path):
    x = RNG.random((30, 80)).astype(np.float32)
    x[4] = np.nan
    np.save(tmp_path / "d.npy", x)
    cfg = DataConfig(name=str(tmp_path / "d.npy"), context=32, batch_size=4)
    with pytest.raises(DataError, match="pass drop_empty=True"):
        SeriesDataModule(cfg).setup()
    cfg.drop_empty = True
    data = SeriesDataModule(cfg)
    data.setup()
    assert data.dataset.sizes["series"] == 29
