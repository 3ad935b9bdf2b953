"""The depth study end to end at depths 1 and 2: per-depth resumable studies, the merged
results with their depth coordinate, the depth report and its figure."""

import json

import numpy as np
import pytest
import torch
import yaml

from tslayers.cli import main
from tslayers.config import ConfigError, load_config
from tslayers.depth import DepthStudyConfig, depth_name, parse_depth_name, unstack_depth
from tslayers.probing import read_results

_TRAIN = {"max_steps": 6, "warmup_steps": 1, "val_check_interval": 3, "ckpt_every_n_steps": 3,
          "limit_val_batches": 2, "progress_bar": False}
_DATA = {"params": {"n_series": 48, "length": 96}, "context": 64, "batch_size": 16}


@pytest.fixture(scope="module")
def depth_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("depth")
    cfg = {
        "out": str(root / "run"),
        "depths": [1, 2],
        "study": {
            "seeds": [0],
            "data": {"name": "synthetic/mixture", **_DATA},
            "encoder": {"n_channels": 3, "patch_len": 8, "d_model": 16, "n_heads": 2},
            "objectives": [{"name": "forecast", "horizon": 8}, {"name": "contrastive"}],
            "train": _TRAIN,
            "probe": {"horizons": [1], "max_windows": 96, "bootstrap": 10, "permutations": 0,
                      "progress": False, "controls": ["untrained"]},
            "probe_data": [
                {"data": {"name": "synthetic/lgssm", **_DATA}, "tasks": ["forecast", "latent"]},
                {"data": {"name": "synthetic/mixture", **_DATA}, "tasks": ["classify"]},
            ],
        },
    }
    path = root / "depth.yaml"
    path.write_text(yaml.safe_dump({**cfg, "threads": 1}))
    before = torch.get_num_threads()
    assert main(["depth", str(path)]) == 0
    assert torch.get_num_threads() == before  # the run's thread count does not leak
    return root / "run", path


def test_results_gain_a_depth_coordinate(depth_run):
    run, _ = depth_run
    ds = read_results(run / "report" / "results.nc")
    models = ds["model"].values.tolist()
    assert {"forecast@L1", "forecast@L2", "contrastive@L1/untrained"} <= set(models)
    depth = dict(zip(models, ds["depth"].values.tolist()))
    assert depth["forecast@L1"] == 1 and depth["contrastive@L2/untrained"] == 2
    assert dict(zip(models, ds["objective"].values.tolist()))["forecast@L2"] == "forecast"
    # a depth-L model has scores at layers 0..L and none above: the last layer is L
    r2 = ds["score"].sel(task="latent", metric="r2", split="test").isel(seed=0)
    for name, d in (("forecast@L1", 1), ("forecast@L2", 2)):
        finite = ds["layer"].values[np.isfinite(r2.sel(model=name).values)]
        assert finite.tolist() == list(range(d + 1))
        assert float(ds["last_layer"].sel(model=name, task="latent", metric="r2")) == d
    # the depth dimension: model -> objective x control x depth
    wide = unstack_depth(ds)
    assert wide["depth"].values.tolist() == [1, 2]
    assert set(wide["control"].values.tolist()) == {"", "untrained"}
    gap = wide["gap"].sel(objective="forecast", control="", task="latent", metric="r2")
    assert set(gap.dims) == {"depth", "seed"}
    assert float(gap.sel(depth=2, seed=0)) == float(
        ds["gap"].sel(model="forecast@L2", task="latent", metric="r2", seed=0))


def test_each_depth_is_its_own_resumable_study(depth_run, capsys):
    run, path = depth_run
    for d in ("L01", "L02"):
        assert (run / d / "report" / "results.nc").is_file()
        assert (run / d / "pretrain" / "forecast-s0").is_dir()
    timing = json.loads((run / "timing.json").read_text())
    assert set(timing) == {f"L0{d}/{k}" for d in (1, 2) for k in ("pretrain", "probe", "report")
                           } | {"report"}
    assert all(v > 0 for v in timing.values())
    capsys.readouterr()
    assert main(["depth", str(path)]) == 0
    out = capsys.readouterr().out
    # per depth: 2 pretrain + 2 probe + 1 report stage; then the merged depth report
    assert out.count("up to date, skipped") == 2 * (2 + 2 + 1) + 1


def test_depth_report_table_and_figure(depth_run):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.image as mpimg
    import matplotlib.pyplot as plt

    from tslayers.report.depth import draw_depth, family_depth_table

    run, _ = depth_run
    report = run / "report"
    md = (report / "depth.md").read_text()
    assert "| objective | L=1 | L=2 |" in md and "untrained" in md
    assert md.count("### ") >= 3  # one table per family, then every task
    png = report / "depth.png"
    assert png.stat().st_size > 10_000
    height, width = mpimg.imread(png).shape[:2]
    assert width > 600 and height > 300

    ds = read_results(report / "results.nc")
    table = family_depth_table(ds)
    assert set(table["depth"]) == {1, 2}
    assert set(table["objective"]) == {"forecast", "contrastive", "untrained"}
    assert set(table["family"]) >= {"dense", "classification", "forecasting"}
    assert ((table["rel_layer"] >= 0) & (table["rel_layer"] <= 1)).all()
    fig = draw_depth(table)
    try:
        gap_axes, rel_axes = fig.axes[0::2], fig.axes[1::2]
        assert len(gap_axes) == table["family"].nunique()
        for ax in fig.axes:
            assert ax.get_xlabel() == "depth L (blocks)"
            assert [int(t) for t in ax.get_xticks()] == [1, 2]
        assert all(ax.get_ylabel().startswith("gap") for ax in gap_axes)
        assert all(ax.get_ylabel() == "selected layer / L" for ax in rel_axes)
        # one line per objective and the control (plus the zero line) in every gap panel
        labels = {ln.get_label() for ln in gap_axes[0].get_lines()}
        assert {"forecast", "contrastive", "untrained"} <= labels
        assert len(gap_axes[0].collections) == 3  # an interval band per line
    finally:
        plt.close(fig)


def test_depth_names_round_trip():
    assert depth_name("forecast", 12) == "forecast@L12"
    assert depth_name("jepa/untrained", 4) == "jepa@L4/untrained"
    assert parse_depth_name("jepa@L4/untrained") == ("jepa", 4, "/untrained")
    assert parse_depth_name("forecast") is None


def test_config_rejects_alignment_and_bad_depths(tmp_path):
    path = tmp_path / "d.yaml"
    path.write_text(yaml.safe_dump({"depths": [2, 2]}))
    with pytest.raises(ValueError, match="distinct"):
        load_config(DepthStudyConfig, path)
    path.write_text(yaml.safe_dump({"study": {"align": [{"kind": "forecast"}]}}))
    with pytest.raises(ValueError, match="align must be empty"):
        load_config(DepthStudyConfig, path)
    path.write_text(yaml.safe_dump({"depth": [2]}))
    with pytest.raises(ConfigError, match="Did you mean 'depths'"):
        load_config(DepthStudyConfig, path)


def _family_rows(gaps, objective="forecast", family="dense"):
    """Rows of a family table: gaps = {depth: (gap, lo, hi)}."""
    return [dict(family=family, objective=objective, depth=d, gap=g, gap_lo=lo, gap_hi=hi,
                 rel_layer=0.5, n_tasks=1, n_seeds=3) for d, (g, lo, hi) in gaps.items()]


def test_depth_answer_reads_the_intervals():
    import pandas as pd

    from tslayers.report.depth import depth_answer

    flat = {2: (0.0, -0.01, 0.01), 16: (0.01, -0.01, 0.03)}
    twin = _family_rows({2: (0.0, -0.01, 0.01), 16: (0.0, -0.01, 0.01)}, "untrained")
    none = pd.DataFrame(_family_rows(flat) + twin)
    assert depth_answer(none) == "No depth shows a gap whose interval excludes 0."

    grows = pd.DataFrame(_family_rows({2: (0.01, -0.01, 0.02), 16: (0.08, 0.05, 0.11)}) + twin)
    assert depth_answer(grows) == ("The gap grows with depth for forecast on dense: 0.010 at "
                                   "L=2 to 0.080 at L=16 [0.050, 0.110].")
    # the same gap in the untrained twin: depth alone explains it, so no growth is claimed
    twin_gap = _family_rows({2: (0.0, -0.01, 0.01), 16: (0.09, 0.06, 0.12)}, "untrained")
    explained = depth_answer(pd.DataFrame(_family_rows({2: (0.01, -0.01, 0.02),
                                                        16: (0.08, 0.05, 0.11)}) + twin_gap))
    assert explained.startswith("Some gaps exclude 0 (forecast on dense at L=16")
    # a significant gap only at the shallow end does not grow either
    shrinks = pd.DataFrame(_family_rows({2: (0.08, 0.05, 0.11), 16: (0.0, -0.01, 0.01)}) + twin)
    assert "none grows with depth" in depth_answer(shrinks)


def test_seed_interval_never_narrower_than_the_bootstrap():
    from tslayers.report.depth import _interval

    # two seeds that agree exactly: the t-interval has width 0, the bootstrap does not
    mean, lo, hi = _interval(np.array([0.005, 0.005]), np.array([-0.01, -0.02]),
                             np.array([0.02, 0.03]), 0.9)
    assert mean == pytest.approx(0.005) and lo == pytest.approx(-0.015)
    assert hi == pytest.approx(0.025)
    # seeds that disagree: the t-interval is the wider one
    mean, lo, hi = _interval(np.array([0.0, 0.1, 0.2]), np.full(3, 0.09), np.full(3, 0.11), 0.9)
    assert lo < 0.0 and hi > 0.2
