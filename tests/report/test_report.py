"""best_vs_last on hand-made results with known answers; rendering; the commands."""

import argparse

import numpy as np
import pytest
import xarray as xr

from tslayers.probing.results import finalize, scores_to_dataset, write_results
from tslayers.report import best_vs_last, render_report, report_command


def _results(n_seeds=2):
    """Scores whose best layer and gap are known: r2 peaks at layer 2, mse bottoms at layer 1."""
    r2 = [0.1, 0.5, 0.9, 0.6]
    mse = [2.0, 0.5, 1.0, 1.5]
    recs = []
    for seed in range(n_seeds):
        for layer in range(4):
            for metric, v in (("r2", r2[layer]), ("mse", mse[layer])):
                recs.append(dict(model="m", layer=layer, task="latent", metric=metric, seed=seed,
                                 score=v + 0.01 * seed, lo=v - 0.1, hi=v + 0.1))
        recs.append(dict(model="m/raw-patches", layer=0, task="latent", metric="r2", seed=seed,
                         score=0.3, lo=0.2, hi=0.4))
    ds = scores_to_dataset(recs)
    ds["cka"] = (("model", "layer", "layer2"),
                 np.broadcast_to(np.eye(4), (2, 4, 4)).copy())
    ds = ds.assign_coords(layer2=ds["layer"].values)
    ds["attn_entropy"] = (("model", "layer", "head"), np.random.default_rng(0).random((2, 4, 2)))
    return finalize(ds, config_yaml="probe: {}\n")


def test_best_vs_last_uses_metric_direction():
    df = best_vs_last(_results()).set_index(["model", "metric"])
    r2, mse = df.loc[("m", "r2")], df.loc[("m", "mse")]
    assert (r2.best_layer, r2.last_layer) == (2, 3)
    assert r2.best == pytest.approx(0.905) and r2.gap == pytest.approx(0.3)
    assert (mse.best_layer, mse.last_layer) == (1, 3)
    assert mse.gap == pytest.approx(1.0)  # lower is better: last 1.5 vs best 0.5
    assert r2.best_std == pytest.approx(np.std([0.9, 0.91], ddof=0))
    raw = df.loc[("m/raw-patches", "r2")]
    assert raw.best_layer == raw.last_layer == 0 and raw.gap == 0
    assert r2.family == "dense"


def test_render_report_and_command(tmp_path):
    path = write_results(_results(), tmp_path / "results.nc")
    md = render_report(path, tmp_path / "rep")
    text = md.read_text()
    assert "## dense" in text and "| m | latent | r2 ↑ | 2 |" in text
    for png in ("heatmap_m.png", "layer_curves.png", "cka.png", "diagnostics.png"):
        assert (tmp_path / "rep" / png).stat().st_size > 1000
    assert report_command(argparse.Namespace(results=str(path), out=None)) == 0
    assert (tmp_path / "report" / "report.md").exists()


def test_report_rejects_non_results(tmp_path):
    junk = tmp_path / "junk.nc"
    xr.Dataset({"x": ("a", [1.0])}).to_netcdf(junk, engine="h5netcdf")
    with pytest.raises(ValueError, match="not a tslayers results file"):
        render_report(junk, tmp_path / "out")
