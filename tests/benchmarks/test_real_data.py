"""benchmarks/real_data.py: its helpers, and a tiny --quick run on one dataset per kind."""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks import real_data  # noqa: E402
from benchmarks.real import anomaly, classification, common, report  # noqa: E402


def test_fixed_length_resamples_ragged_series():
    obs = np.full((2, 5, 1), np.nan, dtype=np.float32)
    obs[0, :, 0] = np.arange(5)
    obs[1, :3, 0] = [0.0, 1.0, 2.0]
    out = classification.fixed_length(obs)
    np.testing.assert_allclose(out[0, :, 0], np.arange(5))
    np.testing.assert_allclose(out[1, :, 0], [0.0, 0.5, 1.0, 1.5, 2.0])


def test_probe_layers_finds_the_informative_layer():
    rng = np.random.default_rng(0)
    y_tr, y_te = rng.integers(0, 2, 60), rng.integers(0, 2, 200)

    def feats(y):
        noise = rng.normal(size=(3, len(y), 4))
        noise[1, :, 0] += 4.0 * (2 * y - 1)  # only layer 1 carries the label
        return noise

    res = classification.probe_layers(feats(y_tr), y_tr, feats(y_te), y_te, 2, [0.1, 1.0], 5, 0)
    assert res["chosen"] == 1
    assert res["test"][1] > 0.95 and res["test"][0] < 0.7
    assert np.mean(res["correct"]) == pytest.approx(res["test"][1])


def test_point_adjusted_f1_credits_a_whole_segment():
    y = np.zeros(20, int)
    y[5:10] = 1
    hit_one = np.zeros(20, bool)
    hit_one[7] = True
    assert anomaly.segments(y) == [(5, 10)]
    assert anomaly.pa_f1(y, hit_one) == 1.0  # one flagged point detects the whole segment
    miss = np.zeros(20, bool)
    miss[15] = True
    assert anomaly.pa_f1(y, miss) == 0.0


def test_intervals_bracket_the_estimate_and_pair_the_draws():
    rng = np.random.default_rng(1)
    a, b = rng.integers(0, 2, 100), rng.integers(0, 2, 100)
    ci, w = common.weighted_mean_ci({"a": a, "b": b}, np.arange(100), 300, 0)
    for est, lo, hi in ci.values():
        assert lo <= est <= hi
    est, lo, hi = common.paired_diff_ci(a, a, w)
    assert est == lo == hi == 0.0  # a method against itself: zero under every draw


def _tiny_config(tmp_path: Path) -> Path:
    cfg = yaml.safe_load(real_data.DEFAULT_CONFIG.read_text())
    cfg["quick"] = {
        "n_boot": 100,
        "classification": {"datasets": ["GunPoint"], "objectives": ["contrastive"], "steps": 20,
                           "probe": {"Cs": [1.0], "folds": 2}, "minirocket_kernels": 840},
        "anomaly": {"datasets": ["KDD-TSAD_135"], "steps": 20, "mask_passes": 2},
        "forecasting": {"datasets": ["airline"], "steps": 20, "contrastive_steps": 10,
                        "align_stage1": 5, "align_stage2": 5, "num_batches_per_epoch": 10},
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_quick_run_one_dataset_per_kind(tmp_path):
    out, work = tmp_path / "real.md", tmp_path / "work"
    argv = ["--quick", "--config", str(_tiny_config(tmp_path)), "--datasets",
            "GunPoint,KDD-TSAD_135,airline", "--out", str(out), "--work", str(work)]
    real_data.main(argv)
    text = out.read_text()
    table = text.split(report.START)[1].split(report.END)[0]
    rows = [line for line in table.splitlines() if line.startswith("| ")][1:]
    assert [r.split(" | ")[1] for r in rows] == ["GunPoint", "KDD-TSAD_135", "airline"]
    for name in ("MiniRocket", "1-NN DTW", "untrained twin", "raw-window", "IsolationForest",
                 "seasonal-naive residual", "seasonal naive", "DeepAR", "PatchTST",
                 "tslayers forecast-aligned", "Layerwise forecasting probe"):
        assert name in text, name
    # every interval brackets its point estimate
    triples = re.findall(r"(-?\d+\.\d+) \[(-?\d+\.\d+), (-?\d+\.\d+)\]", text)
    assert len(triples) > 20
    for est, lo, hi in triples:
        assert float(lo) - 1e-9 <= float(est) <= float(hi) + 1e-9, (est, lo, hi)
    # a known-easy reference: MiniRocket on GunPoint
    cls = next((work / "quick" / "cache").glob("classification-GunPoint-*.json"))
    assert np.mean(json.loads(cls.read_text())["baselines"]["MiniRocket"]["correct"]) > 0.8
    assert str(tmp_path) not in text  # no absolute machine paths in the report
    # resumable: a second run reads every dataset from the cache
    t0 = time.perf_counter()
    real_data.main(argv)
    assert time.perf_counter() - t0 < 10
    assert out.read_text().split("## Summary")[1] == text.split("## Summary")[1]


def test_readme_shows_the_real_data_table_of_the_results_file():
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]

    def table(path: Path) -> str:
        text = path.read_text()
        start, end = "<!-- real-data-table:start -->", "<!-- real-data-table:end -->"
        return text[text.index(start) : text.index(end)]

    assert table(root / "README.md") == table(root / "benchmarks" / "results" / "real_data.md")
