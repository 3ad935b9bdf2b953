"""benchmarks/real_data.py: its helpers, and one tiny end-to-end run (marked slow)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "real_data.py"


@pytest.fixture(scope="module")
def rd():
    spec = importlib.util.spec_from_file_location("real_data_bench", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_config_quick_merge(rd):
    full = rd.load_bench_config(rd.DEFAULT_CONFIG, quick=False)
    quick = rd.load_bench_config(rd.DEFAULT_CONFIG, quick=True)
    assert "quick" not in full
    assert quick["forecasting"]["steps"] < full["forecasting"]["steps"]
    fc = full["forecasting"]
    assert fc["contrastive_steps"] + fc["align_stage1"] + fc["align_stage2"] == fc["steps"]
    assert quick["forecasting"]["per_series"] == fc["per_series"]  # deep merge keeps the rest


def test_fixed_length_resamples_ragged_series(rd):
    obs = np.full((2, 5, 1), np.nan, dtype=np.float32)
    obs[0, :, 0] = np.arange(5)
    obs[1, :3, 0] = [0.0, 1.0, 2.0]
    out = rd.fixed_length(obs)
    np.testing.assert_allclose(out[0, :, 0], np.arange(5))
    np.testing.assert_allclose(out[1, :, 0], [0.0, 0.5, 1.0, 1.5, 2.0])


def test_probe_layers_finds_the_informative_layer(rd):
    rng = np.random.default_rng(0)
    y_tr, y_te = rng.integers(0, 2, 60), rng.integers(0, 2, 200)

    def feats(y):
        noise = rng.normal(size=(3, len(y), 4))
        noise[1, :, 0] += 4.0 * (2 * y - 1)  # only layer 1 carries the label
        return noise

    res = rd.probe_layers(feats(y_tr), y_tr, feats(y_te), y_te, 2, [0.1, 1.0], 5, 0)
    assert res["chosen"] == 1 and res["oracle"] == 1
    assert res["test"][1] > 0.95 and res["test"][0] < 0.7


@pytest.mark.slow
def test_end_to_end_quick(rd, tmp_path):
    out = tmp_path / "real.md"
    rd.main(["--quick", "--datasets", "ItalyPowerDemand", "--series", "airline",
             "--out", str(out), "--workdir", str(tmp_path / "work")])
    text = out.read_text()
    assert "## (a) UCR/UEA classification" in text and "| ItalyPowerDemand | contrastive |" in text
    assert "## (b) Forecasting" in text and "| airline | GluonTS PatchTST |" in text
    assert "tslayers forecast-aligned" in text
    assert str(tmp_path) not in text  # no absolute machine paths in the report
