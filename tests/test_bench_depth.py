"""benchmarks/bench_depth.py: the extrapolation from measured depths to a whole config."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from tslayers.config import from_dict
from tslayers.depth import DepthStudyConfig

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_depth.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_depth", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _rows(step2, step4):
    return [{"depth": 2, "step": {"forecast": step2}, "overhead": 1.0, "fixed": 1.0, "probe": 2.0},
            {"depth": 4, "step": {"forecast": step4}, "overhead": 1.0, "fixed": 1.0, "probe": 4.0}]


def test_estimate_sums_linear_costs_over_the_config(bench):
    train = {"max_steps": 10, "val_check_interval": 10, "limit_val_batches": 3}
    study = {"seeds": [0], "objectives": [{"name": "forecast"}], "train": train}
    config = from_dict(DepthStudyConfig, {"depths": [2, 4, 6], "study": study})
    est = bench.estimate(config, _rows(0.01, 0.02))
    # 2 validations x 3 batches at a third of a step = 2 steps; step and probe grow linearly
    steps = 10 + 2
    pretrain = sum(1.0 + s * steps for s in (0.01, 0.02, 0.03))
    assert est["pretrain"] == pytest.approx(pretrain / 60)
    assert est["probe"] == pytest.approx((2 + 4 + 6) / 60)
    assert est["report"] == pytest.approx(3 * bench.REPORT_S / 60)
    assert est["total"] == pytest.approx(est["pretrain"] + est["probe"] + est["report"])
    three = from_dict(DepthStudyConfig, {"depths": [2, 4, 6], "study": {**study,
                                                                        "seeds": [0, 1, 2]}})
    assert bench.estimate(three, _rows(0.01, 0.02))["probe"] == pytest.approx(3 * est["probe"])
