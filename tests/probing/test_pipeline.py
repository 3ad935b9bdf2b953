"""probe_encoder end to end on tiny data: optimum bound, splits, errors, results files."""

import numpy as np
import pytest
import torch
import xarray as xr

from tslayers.data import make_dataset, make_lgssm
from tslayers.model import EncoderConfig, TemporalEncoder
from tslayers.probing import (
    ProbeConfig,
    merge_results,
    probe_encoder,
    read_results,
    split_windows,
    write_results,
)
from tslayers.probing.features import sample_windows


def _encoder(c=3, layers=2):
    torch.manual_seed(0)
    return TemporalEncoder(EncoderConfig(n_channels=c, patch_len=8, d_model=16, n_layers=layers,
                                         n_heads=2))


def _cfg(**kw):
    base = dict(context=64, max_windows=160, bootstrap=20, progress=False, horizons=[1, 4],
                lambdas=[1e-2, 1.0, 100.0, 1e4])
    base.update(kw)
    return ProbeConfig(**base)


@pytest.fixture(scope="module")
def lgssm():
    return make_lgssm(n_series=48, length=96, seed=0)


@pytest.fixture(scope="module")
def lgssm_result(lgssm):
    cfg = _cfg(tasks=["forecast", "latent", "impute", "correspondence"],
               controls=["untrained", "raw-patches"], seeds=[0, 1])
    return probe_encoder(_encoder(), lgssm, cfg, model_name="enc")


def test_no_layer_beats_the_kalman_optimum(lgssm_result):
    ds = lgssm_result
    opt = ds["optimum_by_seed"]  # each seed has its own test series
    r2 = ds["score"].sel(task="latent", metric="r2")
    assert np.isfinite(r2).any()
    assert bool((r2.max(["model", "layer"]) <= opt.sel(task="latent", metric="r2")).all())
    for task in [t for t in ds["task"].values.tolist() if t.startswith("forecast/")]:
        mse = ds["score"].sel(task=task, metric="mse").min(["model", "layer"])
        assert bool((mse >= opt.sel(task=task, metric="mse")).all()), task
    frac = ds["score"].sel(metric="fraction_of_optimum")
    assert float(frac.max()) <= 1.0
    # the bound is tight enough to be informative: linear probes reach a large share of it
    assert float(frac.sel(task="latent").max()) > 0.6
    assert float(frac.sel(task="forecast/h1/last").max()) > 0.6


def test_results_layout_and_directions(lgssm_result, tmp_path):
    ds = lgssm_result
    assert set(ds["model"].values) == {"enc", "enc/untrained", "enc/raw-patches"}
    assert ds["score"].dims == ("model", "layer", "task", "metric", "seed")
    hib = dict(zip(ds["metric"].values.tolist(), ds["higher_is_better"].values.tolist()))
    assert hib["mse"] == 0 and hib["r2"] == 1
    assert ds["cka"].sel(model="enc").shape == (3, 3)
    np.testing.assert_allclose(np.diag(ds["cka"].sel(model="enc").values), 1.0)
    assert ds["attn_entropy"].sel(model="enc").dims == ("layer", "head")
    assert np.isnan(ds["attn_entropy"].sel(model="enc", layer=0)).all()  # embeddings: none
    assert np.isfinite(ds["attn_entropy"].sel(model="enc", layer=1)).all()
    # raw patches only exist at layer 0
    raw = ds["score"].sel(model="enc/raw-patches")
    assert np.isfinite(raw.sel(layer=0)).any() and np.isnan(raw.sel(layer=[1, 2])).all()
    lo, hi, s = (ds[v].sel(model="enc", task="latent", metric="r2") for v in
                 ("score_lo", "score_hi", "score"))
    assert bool(((lo <= s) & (s <= hi)).all())
    path = write_results(ds, tmp_path / "r.nc")
    back = read_results(path)
    xr.testing.assert_allclose(back["score"], ds["score"])
    assert "probe" in back.attrs["config"]


def test_merge_results_and_bad_files(lgssm_result, tmp_path):
    other = lgssm_result.sel(model=["enc"]).assign_coords(model=["after"])
    merged = merge_results([lgssm_result, other])
    assert merged.sizes["model"] == 4
    np.testing.assert_array_equal(merged["score"].sel(model="after").values,
                                  lgssm_result["score"].sel(model="enc").values)
    # the same model from another run (another seed) stacks along seed; diagnostics average
    seed9 = lgssm_result.assign_coords(seed=[8, 9])
    seed9["cka"] = seed9["cka"] * 0.5
    both = merge_results([lgssm_result, seed9])
    assert both.sizes["seed"] == 4 and both.sizes["model"] == 3
    np.testing.assert_allclose(both["cka"].values, 0.75 * lgssm_result["cka"].values)
    clash = lgssm_result.copy(deep=True)
    clash["score"] = clash["score"] + 1
    with pytest.raises(ValueError, match="same model and seed"):
        merge_results([lgssm_result, clash])
    junk = tmp_path / "junk.nc"
    xr.Dataset({"x": ("a", [1.0])}).to_netcdf(junk, engine="h5netcdf")
    with pytest.raises(ValueError, match="not a tslayers results file"):
        read_results(junk)
    with pytest.raises(FileNotFoundError):
        read_results(tmp_path / "missing.nc")


def test_splits_never_share_a_series(lgssm):
    cfg = _cfg()
    win = sample_windows(lgssm, 32, 4, 16, 400, 0)
    for seed in range(3):
        sp = split_windows(lgssm, win, cfg, seed)
        sets = [set(win.series[m].tolist()) for m in (sp.train, sp.val, sp.test)]
        assert all(sets)
        assert not (sets[0] & sets[1]) and not (sets[0] & sets[2]) and not (sets[1] & sets[2])
        assert (sp.train | sp.val | sp.test).all()


def test_task_without_labels_fails_clearly(lgssm):
    with pytest.raises(ValueError, match="task 'anomaly' needs per-time"):
        probe_encoder(_encoder(), lgssm, _cfg(tasks=["anomaly"]), model_name="m")
    with pytest.raises(ValueError, match="task 'classify' needs .*two classes"):
        probe_encoder(_encoder(), lgssm, _cfg(tasks=["classify"]), model_name="m")


def test_too_few_series_fails_clearly():
    ds = make_lgssm(n_series=2, length=96, seed=0)
    with pytest.raises(ValueError, match="too few series"):
        probe_encoder(_encoder(), ds, _cfg(tasks=["latent"]), model_name="m")


def test_classification_and_permutation_null():
    rng = np.random.default_rng(0)
    n, t = 60, 64
    label = np.arange(n) % 3
    phase = np.array([0.0, 2.1, 4.2])[label][:, None]  # period = patch length: the class is
    obs = np.sin(2 * np.pi * np.arange(t) / 8 + phase)  # the shape of every patch
    obs = (obs + 0.3 * rng.standard_normal((n, t)))[..., None]
    ds = make_dataset(obs, label=label)
    res = probe_encoder(_encoder(c=1), ds, _cfg(context=64, tasks=["classify"],
                                                controls=["raw-patches", "permuted"],
                                                seeds=[0, 1, 2]), model_name="m")
    acc = res["score"].sel(task="classify", metric="accuracy")
    assert float(acc.sel(model="m").max("layer").mean()) > 0.9
    null = float(acc.sel(model="m/permuted").mean())
    assert null < 0.6  # chance is 1/3; a permuted probe cannot learn the classes


def test_forecast_lens_decodes_every_layer_with_the_models_head(lgssm):
    from tslayers.objectives import ObjectiveConfig, build_objective

    enc = _encoder()
    objective = build_objective(ObjectiveConfig(name="forecast", horizon=4), enc.config).eval()
    res = probe_encoder(enc, lgssm, _cfg(tasks=["latent"], controls=[], horizons=[1, 4],
                                          bootstrap=0), model_name="f", objective=objective)
    lens = res["score"].sel(model="f", task="lens/h4", metric="mse", seed=0)
    assert np.isfinite(lens).all() and lens.sizes["layer"] == 3
    # the last layer's lens is exactly the objective's own prediction on the test windows
    from tslayers.probing.features import sample_windows

    win = sample_windows(lgssm, 64, 4, None, 160, 0)
    test = split_windows(lgssm, win, _cfg(), 0).test
    with torch.no_grad():
        pred = objective.predict(enc, torch.from_numpy(win.x[test])).numpy()
    expected = np.mean((pred[:, 3] - win.future[test, 3]) ** 2)
    assert float(lens.sel(layer=2)) == pytest.approx(expected, rel=1e-4)

