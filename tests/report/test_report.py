"""Rendering: the summary shows selected layers, controls and intervals; figures; commands."""

import argparse

import pytest
import torch
import xarray as xr

from tslayers.data import make_lgssm
from tslayers.model import EncoderConfig, TemporalEncoder
from tslayers.probing import ProbeConfig, probe_encoder, write_results
from tslayers.report import render_report, report_command


@pytest.fixture(scope="module")
def results():
    torch.manual_seed(0)
    enc = TemporalEncoder(EncoderConfig(n_channels=3, patch_len=8, d_model=16, n_layers=2,
                                        n_heads=2))
    cfg = ProbeConfig(tasks=["latent", "forecast"], horizons=[1], forecast_from=["last"],
                      context=64, max_windows=128, bootstrap=20, permutations=10,
                      controls=["untrained", "raw-window"], progress=False)
    return probe_encoder(enc, make_lgssm(n_series=36, length=80), cfg, model_name="m")


def test_render_report_and_command(results, tmp_path):
    path = write_results(results, tmp_path / "results.nc")
    md = render_report(path, tmp_path / "rep")
    text = md.read_text()
    assert "## Summary" in text and "| latent | r2 ↑ | m | L" in text
    row = [line for line in text.splitlines() if line.startswith("| latent | r2 ↑ | m |")][0]
    assert "[" in row and ("untrained" in row or "raw-window" in row)  # interval and control
    ceiling = float(results["optimum"].sel(model="m", task="latent", metric="r2",
                                           split="test").mean())
    assert f"{ceiling:.3g}" in row
    for png in ("heatmap_m.png", "layer_curves.png", "cka.png", "diagnostics.png"):
        assert (tmp_path / "rep" / png).stat().st_size > 1000
    assert report_command(argparse.Namespace(results=str(path), out=None)) == 0
    assert (tmp_path / "report.md").exists()  # beside the results, not in a nested folder
    assert (tmp_path / "report.md").read_text() == text.replace("(rep/", "(")


def test_report_rejects_non_results(tmp_path):
    junk = tmp_path / "junk.nc"
    xr.Dataset({"x": ("a", [1.0])}).to_netcdf(junk, engine="h5netcdf")
    with pytest.raises(ValueError, match="not a tslayers results file"):
        render_report(junk, tmp_path / "out")
