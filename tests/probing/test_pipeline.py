"""The one probing pipeline end to end on tiny data: both feature sources, the task registry,
the Kalman optimum on the probe's own rows, controls, results files and clear errors."""

import numpy as np
import pytest
import torch
import xarray as xr
from torch import nn

from tslayers.data import make_dataset, make_lgssm
from tslayers.data.kalman import kalman_filter, kalman_forecast, system_matrices
from tslayers.model import EncoderConfig, TemporalEncoder
from tslayers.probing import (
    TASKS,
    ModuleSource,
    ProbeConfig,
    Problem,
    Task,
    View,
    merge_results,
    probe,
    probe_encoder,
    probe_model,
    read_results,
    register_task,
    write_results,
)
from tslayers.probing.features import Features, sample_windows
from tslayers.probing.pipeline import split_windows
from tslayers.probing.tasks import _token_rows


def _encoder(c=3, layers=2):
    torch.manual_seed(0)
    return TemporalEncoder(EncoderConfig(n_channels=c, patch_len=8, d_model=16, n_layers=layers,
                                         n_heads=2))


def _cfg(**kw):
    base = dict(context=64, max_windows=160, bootstrap=30, permutations=20, progress=False,
                horizons=[1, 4], lambdas=[1e-2, 1.0, 100.0, 1e4], controls=[])
    base.update(kw)
    return ProbeConfig(**base)


class GRUModel(nn.Module):
    def __init__(self, c=3, h=16):
        super().__init__()
        self.rnn = nn.GRU(c, h, batch_first=True)
        self.head = nn.Linear(h, c)

    def forward(self, x):
        return self.head(self.rnn(x)[0])


@pytest.fixture(scope="module")
def lgssm():
    return make_lgssm(n_series=48, length=96, seed=0)


@pytest.fixture(scope="module")
def lgssm_result(lgssm):
    cfg = _cfg(tasks=["forecast", "latent", "impute", "correspondence"],
               controls=["untrained", "raw-window", "permuted"], seeds=[0, 1])
    return probe_encoder(_encoder(), lgssm, cfg, model_name="enc")


def test_no_layer_beats_the_kalman_optimum(lgssm_result):
    ds = lgssm_result
    test = ds.sel(split="test")
    opt = test["optimum"].sel(model="enc")
    r2 = test["score"].sel(task="latent", metric="r2", model="enc")
    assert bool((r2.max("layer") <= opt.sel(task="latent", metric="r2")).all())
    for task in [t for t in ds["task"].values.tolist() if t.startswith("forecast/")]:
        mse = test["score"].sel(task=task, metric="mse", model="enc").min("layer")
        assert bool((mse >= opt.sel(task=task, metric="mse")).all()), task
    share = test["score"].sel(metric="share_of_optimum", model="enc")
    assert float(share.max()) <= 1.0
    # the bound is informative: linear probes reach a real share of the achievable improvement
    assert float(share.sel(task="latent").max()) > 0.3


def test_optimum_is_computed_on_exactly_the_probed_rows_with_missing_values():
    ds = make_lgssm(n_series=40, length=96, seed=3)
    rng = np.random.default_rng(0)
    obs = ds["obs"].values.copy()
    obs[rng.random(obs.shape) < 0.1] = np.nan
    ds["obs"] = (ds["obs"].dims, obs)
    cfg = _cfg(tasks=["forecast"], horizons=[1, 4], forecast_from=["last"])
    res = probe_encoder(_encoder(), ds, cfg, model_name="m")
    win = sample_windows(ds, 64, 4, None, 160, 0)
    rows = split_windows(ds, win, cfg, 0).test
    mats = system_matrices(ds, 0)
    filt = kalman_filter(win.x[rows].astype(np.float64), **mats)
    ok = np.isfinite(win.future[rows][:, [0, 3]]).all((1, 2))  # rows with every target
    assert 0 < ok.sum() < len(ok)  # missing targets did remove rows
    for h in (1, 4):
        pred = kalman_forecast(filt.mean[:, -1], mats["A"], mats["C"], [h])[h]
        target = win.future[rows, h - 1]
        expected = np.mean((pred[ok] - target[ok]) ** 2)
        got = float(res["optimum"].sel(model="m", task=f"forecast/h{h}/last", metric="mse",
                                       split="test", seed=0))
        assert got == pytest.approx(expected, rel=1e-6)


def test_results_layout_controls_and_analysis(lgssm_result, tmp_path):
    ds = lgssm_result
    assert set(ds["model"].values) == {"enc", "enc/untrained", "enc/raw-window", "enc/permuted",
                                       "enc/untrained/permuted"}
    assert ds["score"].dims == ("model", "layer", "task", "metric", "seed", "split")
    assert ds["score_boot"].sizes["boot"] == 30
    for var in ("selected_layer", "gap", "gap_lo", "gap_hi", "vs_control", "pvalue"):
        assert var in ds
    hib = dict(zip(ds["metric"].values.tolist(), ds["higher_is_better"].values.tolist()))
    assert hib["mse"] == 0 and hib["r2"] == 1
    np.testing.assert_allclose(np.diag(ds["cka"].sel(model="enc").values), 1.0)
    assert np.isnan(ds["attn_entropy"].sel(model="enc", layer=0)).all()  # embeddings: none
    raw = ds["score"].sel(model="enc/raw-window")
    assert np.isfinite(raw.sel(layer=0)).any() and np.isnan(raw.sel(layer=[1, 2])).all()
    lo, hi, s = (ds[v].sel(model="enc", task="latent", metric="r2", split="test") for v in
                 ("score_lo", "score_hi", "score"))
    assert bool(((lo <= s) & (s <= hi)).all())
    back = read_results(write_results(ds, tmp_path / "r.nc"))
    xr.testing.assert_allclose(back["score"], ds["score"])
    np.testing.assert_array_equal(back["selected_layer"].values, ds["selected_layer"].values)


def test_merge_results_and_bad_files(lgssm_result, tmp_path):
    other = lgssm_result.sel(model=["enc"]).assign_coords(model=["after"])
    merged = merge_results([lgssm_result, other])
    np.testing.assert_array_equal(merged["score"].sel(model="after").values,
                                  lgssm_result["score"].sel(model="enc").values)
    seed9 = lgssm_result.assign_coords(seed=[8, 9])
    both = merge_results([lgssm_result, seed9])
    assert both.sizes["seed"] == 4
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
    win = sample_windows(lgssm, 32, 4, 16, 400, 0)
    for seed in range(3):
        sp = split_windows(lgssm, win, _cfg(), seed)
        sets = [set(win.series[m].tolist()) for m in (sp.train, sp.val, sp.test)]
        assert all(sets)
        assert not (sets[0] & sets[1]) and not (sets[0] & sets[2]) and not (sets[1] & sets[2])


def test_task_without_labels_and_too_few_series_fail_clearly(lgssm):
    with pytest.raises(ValueError, match="task 'anomaly' needs per-time"):
        probe_encoder(_encoder(), lgssm, _cfg(tasks=["anomaly"]), model_name="m")
    with pytest.raises(ValueError, match="task 'classify' needs .*two classes"):
        probe_encoder(_encoder(), lgssm, _cfg(tasks=["classify"]), model_name="m")
    with pytest.raises(ValueError, match="too few series"):
        probe_encoder(_encoder(), make_lgssm(n_series=2, length=96), _cfg(tasks=["latent"]),
                      model_name="m")


class _NaNSource:
    name, causal, instance_scaled, series_only = "broken", False, True, False

    def extract(self, x, fit_rows=None):
        tokens = np.ones((len(x), 4, 3), dtype=np.float32)
        tokens[5, 2, 0] = np.nan
        return Features(layers=[0, 1], names=["a", "b.out"],
                        tokens={0: np.ones_like(tokens), 1: tokens},
                        pooled={0: tokens[:, 0], 1: tokens.mean(1)},
                        token_end=np.array([15, 31, 47, 63]), token_len=16)


def test_non_finite_features_raise_naming_the_layer(lgssm):
    with pytest.raises(ValueError, match=r"layer 1 \(b.out\) produced non-finite activations"):
        probe(_NaNSource(), lgssm, _cfg(tasks=["latent"]))


def test_classification_permutation_null_and_controls():
    rng = np.random.default_rng(0)
    n, t = 60, 64
    label = np.arange(n) % 3
    phase = np.array([0.0, 2.1, 4.2])[label][:, None]  # the class is the phase of every patch
    obs = np.sin(2 * np.pi * np.arange(t) / 8 + phase)
    obs = (obs + 0.3 * rng.standard_normal((n, t)))[..., None]
    ds = make_dataset(obs, label=label)
    res = probe_encoder(_encoder(c=1), ds, _cfg(tasks=["classify"], seeds=[0, 1, 2],
                                                controls=["raw-window", "permuted", "mlp"]),
                        model_name="m")
    acc = res["score"].sel(task="classify", metric="accuracy", split="test")
    assert float(acc.sel(model="m").max("layer").mean()) > 0.9
    assert float(acc.sel(model="m/permuted").mean()) < 0.6  # chance is 1/3
    assert np.isfinite(acc.sel(model="m/mlp")).sum() == 3  # one selected layer per seed
    p = res["selected_pvalue"].sel(model="m", task="classify", metric="accuracy")
    assert float(p.max()) < 0.05


def test_forecast_lens_decodes_every_layer_with_the_models_head(lgssm):
    from tslayers.objectives import ObjectiveConfig, build_objective

    enc = _encoder()
    objective = build_objective(ObjectiveConfig(name="forecast", horizon=4), enc.config).eval()
    res = probe_encoder(enc, lgssm, _cfg(tasks=["latent"], bootstrap=0, permutations=0),
                        model_name="f", objective=objective)
    lens = res["score"].sel(model="f", task="lens/h4", metric="mse", seed=0, split="test")
    assert np.isfinite(lens).all() and lens.sizes["layer"] == 3
    win = sample_windows(lgssm, 64, 4, None, 160, 0)
    test = split_windows(lgssm, win, _cfg(), 0).test
    with torch.no_grad():
        pred = objective.predict(enc, torch.from_numpy(win.x[test])).numpy()
    expected = np.mean((pred[:, 3] - win.future[test, 3]) ** 2)
    assert float(lens.sel(layer=2)) == pytest.approx(expected, rel=1e-4)


# ------------------------------------------------------------------------------ registry
def test_every_registered_task_is_complete():
    from tslayers.probing.metrics import METRICS

    assert {"forecast", "classify", "latent", "impute", "anomaly", "regime",
            "correspondence", "lens"} <= set(TASKS)
    for task in TASKS.values():
        assert callable(task.build) and callable(task.needs) and task.family
        assert task.metrics and all(m in METRICS for m in task.metrics)
    with pytest.raises(ValueError, match="no registered direction"):
        register_task(Task("bad", "dense", ("speed",), lambda w: None, lambda c: []))


@pytest.fixture
def toy_task():
    """A new task family added from this file alone: decode the input value at each token's
    last step (channel 0), ridge per token."""

    def build(ctx):
        x, rows, series, blocks = _token_rows(ctx)
        target = ctx.win.x[:, ctx.feats.token_end, 0].reshape(-1, 1)
        ok = np.isfinite(target[:, 0])
        y = np.nan_to_num(target)
        return [Problem("regress", x, y, rows.restrict(ok), series, blocks,
                        {"toy": View(("r2", "mse"), y)})]

    register_task(Task("toy", "toy-family", ("r2", "mse"), lambda win: None, build,
                       dense=True))
    yield
    del TASKS["toy"]


def test_a_task_registered_in_a_test_runs_on_both_feature_sources(lgssm, toy_task):
    cfg = _cfg(tasks=["toy"], controls=["untrained"])
    enc_res = probe_encoder(_encoder(), lgssm, cfg, model_name="enc")
    torch.manual_seed(0)
    gru_res = probe_model(GRUModel(), lgssm, "rnn,head", cfg, name="gru")
    for res, name in ((enc_res, "enc"), (gru_res, "gru")):
        assert res["family"].sel(task="toy").item() == "toy-family"
        r2 = res["score"].sel(model=name, task="toy", metric="r2", split="test")
        assert np.isfinite(r2).any()
        assert f"{name}/untrained" in res["model"].values
    # the GRU's head reproduces its input channel well enough to be decodable per step
    assert gru_res["layer_name"].sel(model="gru").values.tolist()[:2] == ["rnn", "head"]


def test_module_source_errors_name_the_flag(lgssm):
    class OneChannel(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(1, 4)

        def forward(self, x):
            return self.lin(x)

    with pytest.raises(ValueError, match="matches no module"):
        ModuleSource(OneChannel(), "blocks.*")
    with pytest.raises(ValueError, match="channel count"):
        probe_model(OneChannel(), lgssm, "lin", _cfg(tasks=["latent"]))


def test_model_names_cannot_escape_the_output_folder(lgssm):
    for bad in ("../../x", "a/../b", "/abs", "a b"):
        with pytest.raises(ValueError, match="cannot name results and figure files"):
            probe_encoder(_encoder(), lgssm, _cfg(tasks=["latent"]), model_name=bad)
