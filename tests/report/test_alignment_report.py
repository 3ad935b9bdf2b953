"""The alignment section pools runs of the same alignment over pretraining seeds."""

import numpy as np
from scipy import stats

from tslayers.report import alignment_markdown


def _summary(change: float) -> dict:
    row = {"target": True, "family": "forecasting", "change": change, "change_lo": change - 0.01,
           "change_hi": change + 0.01, "gap_closed": float("nan"), "best_kept": 1.0}
    return {"target": "forecasting", "layer": 2, "ablations": {
        "m/align-forecast/full": {"teacher": "layer 2", "scores": {"forecast/h1/last/r2": row}}},
        "beyond_truncation": {"share": float("nan"), "lo": float("nan"), "hi": float("nan")}}


def test_seeds_are_pooled_with_a_t_interval():
    md = alignment_markdown({"forecast-m-s0": _summary(0.1), "forecast-m-s1": _summary(0.3)})
    assert md.count("### forecast-m ") == 1 and "2 seeds" in md
    v = np.array([0.1, 0.3])
    half = stats.t.ppf(0.95, 1) * v.std(ddof=1) / np.sqrt(2)
    assert f"+0.2 [{0.2 - half:+.3g}, {0.2 + half:+.3g}]" in md
    assert "Gap closed beyond truncation: not defined" in md
    one = alignment_markdown({"forecast-m-s0": _summary(0.1)})
    assert "**+0.1 [+0.09, +0.11]**" in one  # one seed: its own paired interval, excludes 0
