"""Formatting rules of the report's text: differences bold only when their interval excludes
0, no shares of quantities within noise, and a ceiling that looks wrong is explained."""

import pandas as pd

from tslayers.report.markdown import ceiling_notes, diff, figures_markdown, share


def test_a_difference_is_bold_only_when_its_interval_excludes_zero():
    assert diff(0.05, 0.01, 0.09) == "**+0.050 [+0.010, +0.090]**"
    assert diff(-0.05, -0.09, -0.01).startswith("**-0.050")
    assert diff(0.05, -0.01, 0.09) == "+0.050 [-0.010, +0.090]"
    assert diff(0.0, 0.0, 0.0, "0 (same layer)") == "0 (same layer)"
    assert diff(float("nan"), 0.0, 1.0) == "–"


def test_differences_print_on_the_scale_of_their_scores_never_in_e_notation():
    assert diff(-4.01e-05, -0.000833, 0.00205, scale=0.15) == "0 [-0.001, +0.002]"
    assert diff(4e-4, 1e-4, 7e-4, scale=0.5) == "**+0.0004 [+0.0001, +0.0007]**"  # never [0, 0]
    assert diff(2e-5, 1e-5, 3e-5, scale=0.004) == "**+0.00002 [+0.00001, +0.00003]**"
    assert "e-" not in diff(-4.01e-05, -0.000833, 0.00205, scale=1e-3)


def test_a_share_of_a_quantity_within_noise_is_not_a_percentage():
    assert share(0.143, 0.1, 0.05, 0.15) == "143%"
    assert share(0.143, 0.001, -0.01, 0.012) == "within noise"
    assert share(float("nan"), 0.1, 0.05, 0.15) == "within noise"


def _row(**kw):
    base = dict(task="forecast/h32/last", model="m", metric="r2", higher_is_better=True,
                score=0.5, score_lo=0.4, score_hi=0.6, ceiling=0.7, floor=float("nan"))
    return {**base, **kw}


def test_a_ceiling_without_skill_or_below_the_probe_is_explained():
    table = pd.DataFrame([_row(ceiling=-0.154, score=-0.15),
                          _row(ceiling=-0.154, score=-0.2, model="other"),  # said once
                          _row(task="latent", score=0.72, score_lo=0.65, score_hi=0.78),
                          _row(task="h1", score=0.9, score_lo=0.85, score_hi=0.95),
                          _row(task="fine"),
                          _row(task="h8", score=0.07, score_lo=0.0, score_hi=0.1, ceiling=0.075,
                               floor=0.107)])
    notes = ceiling_notes(table)
    assert len(notes) == 4
    assert "h8: the best control (0.107) scores above the optimum (0.075)" in notes[3]
    assert "no predictable signal" in notes[0] and "-0.154" in notes[0]
    assert "latent" in notes[1] and "within noise" in notes[1]
    assert "h1" in notes[2] and "check the task" in notes[2]


def test_every_figure_is_linked_and_each_kind_captioned_once():
    text = figures_markdown(["heatmap_a", "heatmap_b", "layer_curves"])
    assert "![heatmap_a](heatmap_a.png)" in text and "![heatmap_b](heatmap_b.png)" in text
    assert text.count("*Test score per layer and task") == 1
    assert text.count("*Test score against layer") == 1


def test_findings_list_only_the_claims_the_intervals_support():
    import xarray as xr

    from tslayers.report.markdown import findings

    nan = float("nan")
    rows = [dict(model="a", task="latent", metric="r2", selected_layer=2, score=0.6,
                 gap=0.05, gap_lo=0.01, gap_hi=0.09, vs_control=-0.057, vs_control_lo=-0.19,
                 vs_control_hi=-0.007, best_control="a/untrained"),
            dict(model="b", task="latent", metric="r2", selected_layer=1, score=0.6,
                 gap=0.05, gap_lo=-0.01, gap_hi=0.09, vs_control=nan, vs_control_lo=nan,
                 vs_control_hi=nan, best_control="")]
    lines = findings(pd.DataFrame(rows), xr.Dataset())
    assert lines[:2] == ["a, latent: L2 beats the last layer by 0.050 [0.010, 0.090]",
                         "a, latent: trails its best control (untrained) by 0.057 [0.007, 0.190]"]
    assert "3 comparisons" in lines[2] and "about 0.3 of them" in lines[2]
    assert "beyond noise" in findings(pd.DataFrame(rows[1:]), xr.Dataset())[0]


def test_the_family_wise_mark_needs_the_wider_bonferroni_interval(results, external):
    """A dagger marks exactly the claims whose interval at level 1 - 0.1/n (n comparisons in
    the table) still excludes 0; those intervals contain the per-comparison 90% ones."""
    import numpy as np

    from tslayers.probing.analysis import annotate, layer_table
    from tslayers.report.markdown import _familywise, findings

    for ds, models in ((results, ["contrastive", "forecast"]), (external, ["gru"])):
        table = layer_table(ds, models)
        n, keep = _familywise(table, ds)
        assert n == np.isfinite(table["gap_lo"]).sum() + np.isfinite(table["vs_control_lo"]).sum()
        wide = layer_table(annotate(ds, 1 - 0.1 / n), models)
        for col in ("gap", "vs_control"):
            ok = np.isfinite(table[f"{col}_lo"])
            assert (wide[f"{col}_lo"][ok] <= table[f"{col}_lo"][ok] + 1e-12).all()
            assert (wide[f"{col}_hi"][ok] >= table[f"{col}_hi"][ok] - 1e-12).all()
        lines = findings(table, ds, most=100)
        assert sum(line.endswith(" †") for line in lines) == len(keep)
    assert len(keep) == 1 and lines[0].endswith(" †")  # the GRU's rnn beats its head clearly
    assert lines[-1].startswith("The table makes 2 comparisons") and "1 of 1" in lines[-1]
