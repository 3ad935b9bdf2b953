"""Alignment ablations in one results file, judged against truncation and the unaligned model."""

import json

import numpy as np
import pytest
import torch

from tslayers.align import AlignConfig, align
from tslayers.align.heads import DynamicsLossConfig, ForecastHeadConfig
from tslayers.data import DataConfig
from tslayers.model import EncoderConfig, TemporalEncoder
from tslayers.probing import ProbeConfig, ProbeSource, probe_sources, read_results, write_results
from tslayers.training import TrainConfig

DATA = DataConfig(name="synthetic/lgssm", params={"n_series": 24, "length": 96, "obs_dim": 1},
                  context=48, batch_size=16)
PROBE = ProbeConfig(tasks=["forecast", "latent"], horizons=[1, 8], max_windows=64, bootstrap=20,
                    controls=[], permutations=0, progress=False, diagnostics=False)
SOURCES = [ProbeSource(data=DATA, tasks=["forecast", "latent"])]


def _train(steps: int) -> TrainConfig:
    return TrainConfig(max_steps=steps, warmup_steps=1, val_check_interval=3,
                       ckpt_every_n_steps=3, limit_val_batches=1, progress_bar=False)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("ablations")
    torch.manual_seed(0)
    enc = TemporalEncoder(EncoderConfig(n_channels=1, patch_len=8, d_model=16, n_layers=2,
                                        n_heads=2))
    enc.save_pretrained(root / "enc")
    write_results(probe_sources(enc.eval(), SOURCES, PROBE, model_name="m"), root / "probe.nc")
    return root


def _forecast(root, steps: int, folder: str):
    cfg = AlignConfig(kind="forecast", checkpoint=str(root / "enc"), name="m",
                      results=str(root / "probe.nc"), reuse_before=True, data=DATA,
                      forecast=ForecastHeadConfig(horizon=8, quantiles=[0.1, 0.5, 0.9]),
                      stage1=_train(steps), stage2=_train(steps), probe=PROBE,
                      probe_data=SOURCES)
    out = align(cfg, root / folder)
    return read_results(out / "results.nc"), json.loads((out / "summary.json").read_text())


@pytest.fixture(scope="module")
def trained(setup):
    return _forecast(setup, 3, "trained")


def test_truncation_reproduces_the_selected_layer_exactly(setup, trained):
    ds, summary = trained
    k = summary["layer"]
    trunc = "m/align-forecast/truncate"
    assert int(ds["last_layer"].sel(model=trunc).max()) == k
    for var in ("score", "score_boot"):  # every layer up to the cut, every task, split, replicate
        a = ds[var].sel(model=trunc, layer=slice(0, k)).values
        b = ds[var].sel(model="m", layer=slice(0, k)).values
        assert np.array_equal(a, b, equal_nan=True), var
    # where the original selected layer k on validation, truncation's output *is* that score
    sel = ds["selected_layer"].sel(model="m").values == k
    last = ds["score"].sel(model=trunc, layer=k, split="test").values
    assert sel.any()
    np.testing.assert_array_equal(last[sel], ds["selected_score"].sel(model="m").values[sel])


def test_ablation_rows_exist_and_are_distinguishable(trained):
    ds, summary = trained
    names = [f"m/align-forecast/{a}" for a in ("truncate", "frozen-head", "full")]
    assert set(names) <= set(ds["model"].values.tolist())
    assert set(summary["ablations"]) == set(names)
    assert all(str(ds["align_teacher"].sel(model=n).values) == f"layer {summary['layer']}"
               for n in names)
    assert str(ds["align_teacher"].sel(model="m").values) == ""
    # stage 1 leaves the encoder frozen: its features are truncation's; stage 2 moves them
    test = ds["score"].sel(split="test")
    assert np.array_equal(test.sel(model=names[0]), test.sel(model=names[1]), equal_nan=True)
    assert not np.array_equal(test.sel(model=names[0]), test.sel(model=names[2]),
                              equal_nan=True)
    row = summary["ablations"][names[2]]["scores"]["forecast/h1/last/r2"]
    assert row["target"] and np.isfinite(row["vs_reference_lo"])


def test_decoders_are_scored_next_to_baselines(trained):
    fc = trained[1]["forecasts"]
    assert {"seasonal naive", "frozen-head decoder", "full decoder", "truncate + ridge"} <= set(fc)
    for name, row in fc.items():
        if name != "_meta":
            assert row["MASE_lo"] <= row["MASE"] <= row["MASE_hi"] and row["wQL"] > 0, name


def test_zero_step_head_gives_a_change_whose_interval_contains_zero(setup):
    ds, summary = _forecast(setup, 0, "untrained")
    scores = summary["ablations"]["m/align-forecast/full"]["scores"]
    for key, row in scores.items():
        assert row["vs_reference_lo"] <= 0 <= row["vs_reference_hi"], key
    cfg = AlignConfig(kind="dynamics", checkpoint=str(setup / "enc"), name="m", data=DATA,
                      dynamics=DynamicsLossConfig(teacher_layer=1, locality_teacher="spectral"),
                      results=str(setup / "probe.nc"), reuse_before=True, stage1=_train(0),
                      probe=PROBE, probe_data=SOURCES)
    summary = json.loads((align(cfg, setup / "dyn0") / "summary.json").read_text())
    assert set(summary["ablations"]) == {"m/align-dynamics/self",
                                         "m/align-dynamics/corr/spectral",
                                         "m/align-dynamics/both/spectral"}
    for ab in summary["ablations"].values():
        for key, row in ab["scores"].items():
            assert row["change_lo"] <= 0 <= row["change_hi"], key
