"""The report folder: summary first, the same markdown wherever it is regenerated (alignment
included), an HTML twin with the figures inline, and the command writing where it is told."""

import argparse
import json
import re

import pytest
import xarray as xr

from tslayers.probing import write_results
from tslayers.report import render_report, report_command

ALIGNMENT = {"forecast-align-s0": {"target": "forecast", "layer": 1, "scores": {
    "forecast/h1/last/r2": {"target": True, "last_before": 0.30, "last_after": 0.42,
                            "change": 0.12, "change_lo": 0.05, "change_hi": 0.20,
                            "gap_before": 0.10, "gap_lo": 0.04, "gap_hi": 0.16,
                            "gap_closed": 1.2, "gap_closed_lo": 0.5, "gap_closed_hi": 2.0,
                            "best_kept": 1.05},
    "latent/r2": {"target": False, "last_before": 0.61, "last_after": 0.60,
                  "change": -0.01, "change_lo": -0.03, "change_hi": 0.01,
                  "gap_before": 0.001, "gap_lo": -0.01, "gap_hi": 0.01,
                  "gap_closed": float("nan"), "gap_closed_lo": float("nan"),
                  "gap_closed_hi": float("nan"), "best_kept": 0.98}}}}


@pytest.fixture(scope="module")
def study_report(results, tmp_path_factory):
    """A report folder as a study writes it: results.nc and alignment.json, then the report
    rendered from the in-memory results."""
    d = tmp_path_factory.mktemp("study") / "report"
    d.mkdir()
    write_results(results, d / "results.nc")
    (d / "alignment.json").write_text(json.dumps(ALIGNMENT, indent=2))
    return render_report(results, d)


def test_summary_comes_first_with_selected_layer_interval_control_and_ceiling(results,
                                                                               study_report):
    text = study_report.read_text()
    order = [text.index(h) for h in ("## Summary", "## Figures", "## Label-free diagnostics",
                                     "## Details", "## Alignment")]
    assert order == sorted(order)
    rows = [x for x in text.splitlines() if x.startswith("| latent | r2 ↑ | contrastive |")]
    assert len(rows) == 1
    ceiling = float(results["optimum"].sel(model="contrastive", task="latent", metric="r2",
                                           split="test").mean())
    assert re.search(r"L\d: [-0-9.]+ \[[-0-9.]+, [-0-9.]+\]", rows[0])  # score [interval]
    assert f"{ceiling:.3g}" in rows[0] and ("(untrained)" in rows[0] or "(raw-window)" in rows[0])
    summary = text[text.index("## Summary"):text.index("## Figures")]
    assert "permuted" not in summary and "contrastive/" not in summary  # base models only
    assert "%" not in summary.replace("[90%]", "")


def test_the_command_regenerates_the_same_markdown_anywhere(study_report, tmp_path):
    folder = study_report.parent
    again = tmp_path / "elsewhere"
    assert report_command(argparse.Namespace(results=str(folder / "results.nc"),
                                             out=str(again))) == 0
    assert (again / "report.md").read_text() == study_report.read_text()
    assert (again / "alignment.json").read_text() == (folder / "alignment.json").read_text()
    assert report_command(argparse.Namespace(results=str(folder / "results.nc"), out=None)) == 0
    assert not (folder / "report").exists()  # beside the results, never nested
    assert (folder / "report.md").read_text() == study_report.read_text()


def test_html_is_one_self_contained_file(study_report):
    html = study_report.with_suffix(".html").read_text()
    pngs = sorted(p.stem for p in study_report.parent.glob("*.png"))
    assert html.count('src="data:image/png;base64,') == len(pngs) >= 4
    assert not re.search(r'src="(?!data:)', html) and "<link" not in html
    assert "<h2>Summary</h2>" in html and "<table>" in html and "<strong>" in html
    assert "**" not in html and "<style>" in html


def test_report_rejects_non_results(tmp_path):
    junk = tmp_path / "junk.nc"
    xr.Dataset({"x": ("a", [1.0])}).to_netcdf(junk, engine="h5netcdf")
    with pytest.raises(ValueError, match="not a tslayers results file"):
        render_report(junk, tmp_path / "out")


