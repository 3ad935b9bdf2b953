"""Decoder forecasts scored with GluonTS, checked against a hand-computed MASE."""

import numpy as np
import torch

from tslayers.align.forecasts import at_quantiles, mase_difference, score_forecasts


def _persistence(x: torch.Tensor) -> np.ndarray:
    """The last observed value repeated: seasonal naive with season 1."""
    return x[:, -1:, :].repeat(1, 6, 1).numpy()[..., None]


def test_persistence_matches_gluonts_seasonal_naive_and_hand_mase():
    rng = np.random.default_rng(0)
    obs = np.cumsum(rng.normal(size=(5, 60, 2)), axis=1)
    scores = score_forecasts({"persistence": _persistence}, obs, context=20, horizon=6,
                             windows=2, freq="D", n_boot=50)
    assert scores["_meta"]["season"] == 1
    assert np.isclose(scores["persistence"]["MASE"], scores["seasonal naive"]["MASE"])
    # by hand: per (series, channel, window) mean |error| over the in-sample naive error
    ratios = []
    for s in range(5):
        for c in range(2):
            for w in range(2):
                end = 60 - (2 - w) * 6
                hist, future = obs[s, :end, c], obs[s, end : end + 6, c]
                ratios.append(np.abs(future - hist[-1]).mean() / np.abs(np.diff(hist)).mean())
    assert np.isclose(scores["persistence"]["MASE"], np.mean(ratios))
    d, lo, hi = mase_difference(scores, "persistence", "seasonal naive")
    assert abs(d) < 1e-9 and lo <= 0 <= hi


def test_quantiles_are_interpolated_to_the_scoring_levels():
    pred = np.array([[0.0, 1.0, 2.0]])  # levels 0.1, 0.5, 0.9
    out = at_quantiles(pred, [0.1, 0.5, 0.9])
    np.testing.assert_allclose(out[0], [0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0])
