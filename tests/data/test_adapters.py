"""Real-data adapters map every source to the same in-memory form, and bad input fails clearly."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from tslayers.data import (
    DataError,
    from_gluonts,
    from_numpy,
    from_pandas,
    from_xarray,
    load_dataset,
    load_netcdf,
    save_netcdf,
)

pytestmark = pytest.mark.filterwarnings("ignore:Using `json`-module")


def _form(ds: xr.Dataset, n: int, t: int, c: int) -> None:
    assert ds["obs"].dims == ("series", "time", "channel")
    assert ds["obs"].shape == (n, t, c) and ds["obs"].dtype == np.float32


def test_numpy_equal_and_variable_length():
    x = np.arange(2 * 5 * 3, dtype=float).reshape(2, 5, 3)
    ds = from_numpy(x, labels=["b", "a"])
    _form(ds, 2, 5, 3)
    np.testing.assert_array_equal(ds["obs"].values, x)
    assert ds["label"].attrs["classes"] == ["a", "b"] and ds["label"].values.tolist() == [1, 0]
    ragged = from_numpy([np.ones(4), np.arange(7.0)])
    _form(ragged, 2, 7, 1)
    assert np.isnan(ragged["obs"].values[0, 4:]).all()
    np.testing.assert_array_equal(ragged["obs"].values[1, :, 0], np.arange(7.0))
    nct = from_numpy(x.transpose(0, 2, 1), layout="nct")
    np.testing.assert_array_equal(nct["obs"].values, x)


def test_numpy_bad_input_messages():
    with pytest.raises(DataError, match="ragged channels.*same channels"):
        from_numpy([np.ones((5, 2)), np.ones((6, 3))])
    with pytest.raises(DataError, match="series 1 cannot be read"):
        from_numpy([np.ones(3), [[1.0, 2.0], [3.0]]])
    x = np.ones((3, 4, 1))
    x[1] = np.nan
    with pytest.raises(DataError, match=r"entirely missing.*\[1\].*drop_empty=True"):
        from_numpy(x)
    assert from_numpy(x, drop_empty=True).sizes["series"] == 2
    with pytest.raises(DataError, match="2 labels for 3 series"):
        from_numpy(np.ones((3, 4)), labels=[0, 1])


def test_pandas_wide_and_long_agree():
    idx = pd.date_range("2020-01-01", periods=6, freq="D")
    wide = pd.DataFrame({"a": np.arange(6.0), "b": np.arange(6.0) * 2}, index=idx)
    w = from_pandas(wide)
    _form(w, 2, 6, 1)
    assert w.attrs["freq"] == "D" and w["series_id"].values.tolist() == ["a", "b"]
    long = wide.reset_index(names="timestamp").melt(id_vars="timestamp", var_name="item_id")
    long["kind"] = long["item_id"].map({"a": "x", "b": "y"})
    long = long.sample(frac=1.0, random_state=0)  # order must not matter
    lg = from_pandas(long, format="long", value_cols="value", label_col="kind")
    np.testing.assert_array_equal(lg["obs"].values, w["obs"].values)
    assert lg["label"].values.tolist() == [0, 1]
    assert str(lg["start"].values[0])[:10] == "2020-01-01"
    bad = long.copy()
    bad.loc[bad.index[0], "kind"] = "z"
    with pytest.raises(DataError, match="varies within series"):
        from_pandas(bad, format="long", value_cols="value", label_col="kind")
    with pytest.raises(DataError, match="lacks columns"):
        from_pandas(long, format="long", id_col="series")


def test_xarray_and_netcdf_round_trip(tmp_path):
    da = xr.DataArray(np.random.default_rng(0).normal(size=(4, 10, 2)),
                      dims=("item", "date", "var"))
    ds = from_xarray(da, series_dim="item", time_dim="date", channel_dim="var")
    _form(ds, 4, 10, 2)
    ds = ds.assign(label=("series", np.array([0, 1, 0, 1])))
    ds["label"].attrs["classes"] = ["no", "yes"]
    ds.attrs["season_length"] = 7
    path = save_netcdf(ds, tmp_path / "d.nc")
    back = load_dataset(str(path))
    np.testing.assert_array_equal(back["obs"].values, ds["obs"].values)
    assert list(back["label"].attrs["classes"]) == ["no", "yes"]
    assert back.attrs["season_length"] == 7
    with pytest.raises(DataError, match="does not exist"):
        load_netcdf(tmp_path / "missing.nc")


def test_gluonts_list_file_and_repository(tmp_path):
    from gluonts.dataset.common import ListDataset

    def entries():  # fresh dicts: ListDataset converts fields in place
        return [{"target": np.arange(10.0), "start": "2021-01-01", "item_id": "u"},
                {"target": np.arange(6.0) + 100, "start": "2021-02-01", "item_id": "v"}]

    ds = from_gluonts(ListDataset(entries(), freq="h"))
    _form(ds, 2, 10, 1)
    assert np.isnan(ds["obs"].values[1, 6:]).all() and ds.attrs["freq"] == "h"
    assert str(ds["start"].values[1])[:10] == "2021-02-01"
    multi = from_gluonts(ListDataset([{"target": np.ones((3, 8)), "start": "2021-01-01"}],
                                     freq="D", one_dim_target=False))
    _form(multi, 1, 8, 3)
    # FileDataset from a local JSON-lines file, through the registry's path handling
    path = tmp_path / "data.json"
    path.write_text("\n".join(json.dumps({"target": list(map(float, e["target"])),
                                          "start": e["start"]}) for e in entries()))
    fds = load_dataset(str(path), freq="h")
    np.testing.assert_array_equal(fds["obs"].values, ds["obs"].values)
    # the dataset repository: "constant" is generated locally, no download needed
    rep = load_dataset("gluonts/constant", path=str(tmp_path / "repo"), part="both")
    assert set(rep["split"].values) == {"train", "test"} and rep.attrs["freq"] == "h"
    assert rep.sizes["channel"] == 1 and rep.sizes["series"] == 20


@pytest.mark.parametrize("name,n,t,c,k", [("GunPoint", 200, 150, 1, 2),
                                          ("ArrowHead", 211, 251, 1, 3),
                                          ("ItalyPowerDemand", 1096, 24, 1, 2),
                                          ("BasicMotions", 80, 100, 6, 4),
                                          ("JapaneseVowels", 640, 29, 12, 9)])
def test_ucr_uea_through_aeon_keep_official_split(name, n, t, c, k):
    from aeon.datasets import load_classification

    ds = load_dataset(f"ucr/{name}")
    _form(ds, n, t, c)
    assert len(ds["label"].attrs["classes"]) == k
    x_test, y_test = load_classification(name, split="test")
    test = ds.isel(series=np.flatnonzero(ds["split"].values == "test"))
    assert test.sizes["series"] == len(y_test)
    first = np.asarray(x_test[0], dtype=np.float32).T  # aeon: (C, T)
    np.testing.assert_array_equal(test["obs"].values[0, : first.shape[0]], first)
    classes = np.array(ds["label"].attrs["classes"])
    assert (classes[test["label"].values] == y_test.astype(str)).all()


def test_statsmodels_and_airline_series():
    import statsmodels.api as sm

    co2 = load_dataset("statsmodels/co2")
    raw = sm.datasets.co2.load_pandas().data["co2"]
    _form(co2, 1, len(raw), 1)
    assert int(np.isnan(co2["obs"].values).sum()) == int(raw.isna().sum()) > 0
    assert co2.attrs["season_length"] == 52
    sun = load_dataset("statsmodels/sunspots")
    assert sun.sizes["time"] == 309 and sun.attrs["freq"] == "YS"
    air = load_dataset("statsmodels/airline")
    assert air.sizes["time"] == 144 and air.attrs["season_length"] == 12
    assert float(air["obs"][0, 0, 0]) == 112.0
    with pytest.raises(DataError, match="available"):
        load_dataset("statsmodels/nosuch")
