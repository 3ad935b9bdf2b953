"""Splits, windows, the registry and the data module."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml

from tslayers.config import ConfigError, from_dict, load_config
from tslayers.data import (
    DataConfig,
    DataError,
    SeriesDataModule,
    WindowDataset,
    collate_windows,
    from_numpy,
    load_dataset,
    make_switching_ar,
    register_dataset,
    split_series,
    split_time,
)


def test_split_series_is_disjoint_complete_and_stratified():
    ds = load_dataset("synthetic/mixture", n_series=120, length=32)
    tr, va, te = split_series(ds, 0.2, 0.2, seed=3)
    ids = [set(p["series"].values.tolist()) for p in (tr, va, te)]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    assert set.union(*ids) == set(range(120))
    assert (va.sizes["series"], te.sizes["series"]) == (24, 24)
    for part in (tr, va, te):  # every class in every split
        assert len(np.unique(part["label"].values)) == 6
    again = split_series(ds, 0.2, 0.2, seed=3)
    assert np.array_equal(again[1]["series"].values, va["series"].values)
    other = split_series(ds, 0.2, 0.2, seed=4)
    assert not np.array_equal(other[1]["series"].values, va["series"].values)


def test_split_series_respects_official_split():
    ds = load_dataset("ucr/GunPoint")
    tr, va, te = split_series(ds, val_fraction=0.2, test_fraction=0.5)
    assert (te["split"].values == "test").all() and te.sizes["series"] == 150
    assert (tr["split"].values == "train").all() and (va["split"].values == "train").all()
    assert va.sizes["series"] == 10 and tr.sizes["series"] == 40
    assert not set(tr["series"].values) & set(va["series"].values)
    with pytest.raises(DataError, match="split_time"):
        split_series(load_dataset("statsmodels/nile"))


def test_split_time_leaves_a_gap_and_no_shared_steps():
    ds = load_dataset("statsmodels/co2")
    tr, va, te = split_time(ds, 0.1, 0.2, gap=13)
    t = [p["time"].values for p in (tr, va, te)]
    assert t[0].max() + 13 < t[1].min() and t[1].max() + 13 < t[2].min()
    assert t[1].min() - t[0].max() == 14 and t[2].min() - t[1].max() == 14
    assert sum(len(x) for x in t) + 26 == ds.sizes["time"]
    # windows of each split stay inside it
    for part in (tr, va, te):
        w = WindowDataset(part, context=26, horizon=13, stride=5)
        starts = np.array([int(w[i]["start"]) for i in range(len(w))])
        assert starts.min() >= part["time"].values.min()
        assert starts.max() + 39 <= part["time"].values.max() + 1
    with pytest.raises(DataError, match="too short"):
        split_time(ds.isel(time=slice(0, 20)), 0.3, 0.3, gap=10)


def test_window_items_are_the_right_slices():
    ds = make_switching_ar(6, 100, seed=0)
    obs = ds["obs"].values
    ds["obs"].values[2, 40:] = np.nan  # a ragged series: 40 steps long
    w = WindowDataset(ds, context=16, horizon=4, stride=7)
    per_series = np.bincount(w.index[:, 0], minlength=6)
    assert per_series.tolist() == [12, 12, 3, 12, 12, 12]  # starts 0,7..77; ragged: 0,7,14
    item = w[13]
    s, t0 = int(item["series"]), int(item["start"])
    np.testing.assert_array_equal(item["x"].numpy(), obs[s, t0:t0 + 16])
    np.testing.assert_array_equal(item["future"].numpy(), obs[s, t0 + 16:t0 + 20])
    np.testing.assert_array_equal(item["latent"].numpy(), ds["latent"].values[s, t0:t0 + 16])
    np.testing.assert_array_equal(item["time_label"].numpy(),
                                  ds["time_label"].values[s, t0:t0 + 16])
    assert item["x"].dtype == torch.float32 and item["label"].dtype == torch.int64
    batch = collate_windows([w[i] for i in range(5)])
    assert batch["x"].shape == (5, 16, 3) and batch["future"].shape == (5, 4, 3)
    assert batch["series"].shape == (5,) and batch["time_label"].shape == (5, 16)


def test_missing_windows_dropped_and_short_series_error():
    x = np.random.default_rng(0).normal(size=(2, 40))
    x[0, :20] = np.nan  # first window of series 0 entirely missing
    x[1, 25] = np.nan  # a missing value inside a window is kept as NaN
    ds = from_numpy(x)
    w = WindowDataset(ds, context=10)
    assert [tuple(r) for r in w.index] == [(0, 20), (0, 30), (1, 0), (1, 10), (1, 20), (1, 30)]
    assert torch.isnan(w[4]["x"]).sum() == 1
    with pytest.raises(DataError, match=r"lengths 40\.\.40.*24 \+ 20 = 44.*at most 40"):
        WindowDataset(ds, context=24, horizon=20)
    with pytest.raises(DataError, match="no 'label'.*needs series labels"):
        WindowDataset(ds, context=10, require_label=True)


def test_max_windows_per_series():
    ds = load_dataset("synthetic/lgssm", n_series=5, length=200)
    w = WindowDataset(ds, context=10, stride=5, max_windows_per_series=3, seed=1)
    assert np.bincount(w.index[:, 0]).tolist() == [3] * 5
    assert len(np.unique(w.index[:, 1])) > 3  # a random subset, not always the first three


def test_registry_names_errors_and_custom_datasets():
    with pytest.raises(DataError, match=r"unknown dataset 'synthetic/lgsm'.*Did you mean.*"
                                        r"synthetic/lgssm.*Known names"):
        load_dataset("synthetic/lgsm")
    with pytest.raises(DataError, match=r"unknown parameters \['n_seriess'\].*'n_series'"):
        load_dataset("synthetic/lgssm", n_seriess=3)

    @register_dataset("test/ramp")
    def ramp(n: int = 3) -> object:
        return from_numpy(np.arange(n * 8.0).reshape(n, 8))

    assert load_dataset("test/ramp", n=4).sizes["series"] == 4
    ds = load_dataset("synthetic/lgssm", n_series=8, length=16, seed=5)
    assert ds.attrs["seed"] == 5 and ds.sizes["series"] == 8


def test_datamodule_from_yaml_config(tmp_path):
    path = tmp_path / "data.yaml"
    path.write_text(yaml.safe_dump({"name": "synthetic/mixture",
                                    "params": {"n_series": 60, "length": 64},
                                    "context": 32, "horizon": 8, "batch_size": 16,
                                    "require_label": True}))
    cfg = load_config(DataConfig, path)
    dm = SeriesDataModule(cfg)
    batch = next(iter(dm.train_dataloader()))
    assert batch["x"].shape == (16, 32, 3) and batch["future"].shape == (16, 8, 3)
    assert dm.n_channels == 3 and dm.n_classes == 6 and dm.split_mode == "series"
    ids = [set(d["series"].values.tolist()) for d in (dm.train_ds, dm.val_ds, dm.test_ds)]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    seen = torch.cat([b["series"] for b in dm.val_dataloader()])
    assert set(seen.tolist()) == ids[1]
    with pytest.raises(ConfigError, match="contxt"):
        from_dict(DataConfig, {"contxt": 3})
    lg = SeriesDataModule(DataConfig(name="synthetic/lgssm", params={"n_series": 20,
                                                                     "length": 32},
                                     context=16, require_label=False))
    with pytest.raises(DataError, match="has no 'label' but require_label"):
        SeriesDataModule(DataConfig(name="statsmodels/nile", context=8,
                                    require_label=True)).setup()
    assert lg.n_channels == 3


def test_datamodule_single_series_splits_by_time():
    dm = SeriesDataModule(DataConfig(name="statsmodels/sunspots", context=22, horizon=11,
                                     stride=11, batch_size=8))
    dm.setup()
    assert dm.split_mode == "time" and dm.season_length == 11
    assert dm.train_ds["time"].values.max() + 11 < dm.val_ds["time"].values.min()
    assert len(next(iter(dm.test_dataloader()))["x"]) > 0


def test_mostly_too_short_series_warn_with_the_shortest_length():
    import warnings

    import numpy as np

    from tslayers.data import WindowDataset, from_numpy

    series = [np.arange(n, dtype=np.float32)[:, None] for n in (10, 12, 14, 40)]
    ds = from_numpy(series)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        win = WindowDataset(ds, context=20)
    assert len(win) == 2  # only the 40-step series fits, twice
    assert any("3 of 4 series" in str(w.message) and "shortest series: 10" in str(w.message)
               for w in caught)
