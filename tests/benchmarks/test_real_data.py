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


def test_seed_intervals_cover_seed_variance():
    rng = np.random.default_rng(2)
    base = rng.integers(0, 2, (1, 200))
    # three seeds that disagree by a constant shift: the per-unit bootstrap of the seed
    # average cannot see it, the t-interval across seeds can
    a = np.clip(base + (rng.random((3, 200)) < np.array([[0.0], [0.3], [0.6]])), 0, 1)
    b = np.repeat(base, 3, 0)
    ci, w = common.seed_mean_ci({"a": a, "b": b}, np.arange(200), 300, 0)
    (est, lo, hi), per_seed = common.seed_diff_ci(a, b, w)
    assert est == pytest.approx(np.mean(per_seed)) == pytest.approx(ci["a"][0] - ci["b"][0])
    t_lo, t_hi = common.seed_t_interval(per_seed)
    _, b_lo, b_hi = common.paired_diff_ci(a.mean(0), b.mean(0), w)
    assert lo == min(t_lo, b_lo) and hi == max(t_hi, b_hi) and lo < 0 < hi
    assert t_hi - t_lo > b_hi - b_lo  # the seed spread dominates here
    # one seed: the plain paired bootstrap
    one, _ = common.seed_diff_ci(a[:1], b[:1], w)
    assert one == common.paired_diff_ci(a[0], b[0], w)


def _tiny_config(tmp_path: Path) -> Path:
    cfg = yaml.safe_load(real_data.DEFAULT_CONFIG.read_text())
    cfg["quick"] = {
        "seeds": [0],
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
    # two seeds on one set: seed 0 from the cache, seed 1 trained; seed-mean rows, per-seed
    # differences, and the same cache files for seed 0
    multi = tmp_path / "multi.md"
    real_data.main([*argv[:4], "GunPoint", "--out", str(multi), "--work", str(work),
                    "--seeds", "0,1"])
    text2 = multi.read_text()
    row = next(l for l in text2.splitlines() if l.startswith("| classification | GunPoint"))
    cells = row.strip("| ").split(" | ")
    per_seed = [float(v) for v in cells[6].split(" / ")]
    est, lo, hi = (float(v) for v in re.findall(r"-?\d+\.\d+", cells[5])[:3])
    assert len(per_seed) == 2 and est == pytest.approx(np.mean(per_seed), abs=1e-3)
    t_lo, t_hi = common.seed_t_interval(per_seed)
    # at least as wide as the seed spread (per-seed cells are rounded to 3 digits)
    assert lo <= t_lo + 0.01 and hi >= t_hi - 0.01
    assert lo - 1e-9 <= est <= hi + 1e-9
    assert "per seed (0 / 1)" in text2 and "2 training seed(s)" in text2
    assert len(list((work / "quick" / "cache").glob("classification-GunPoint-*.json"))) == 2


def test_readme_shows_the_real_data_table_of_the_results_file():
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]

    def table(path: Path) -> str:
        text = path.read_text()
        start, end = "<!-- real-data-table:start -->", "<!-- real-data-table:end -->"
        return text[text.index(start) : text.index(end)]

    assert table(root / "README.md") == table(root / "benchmarks" / "results" / "real_data.md")
