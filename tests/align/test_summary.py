"""Last-layer changes, validation gaps and gap closed against hand computations."""

import numpy as np
import pytest

from tslayers.align.summary import alignment_summary, paired_change, validation_gap
from tslayers.probing.analysis import annotate
from tslayers.probing.config import ProbeConfig
from tslayers.probing.results import finalize, records_to_dataset

R = 50
rng = np.random.default_rng(0)
# per (model, task): val and test scores by layer 0..2, with replicates = score + shared noise
CURVES = {("m", "latent"): ([0.5, 0.9, 0.6], [0.4, 0.8, 0.5]),
          ("m/a", "latent"): ([0.5, 0.9, 0.8], [0.4, 0.8, 0.7]),
          ("m", "impute"): ([0.50, 0.51, 0.50], [0.3, 0.3, 0.3]),
          ("m/a", "impute"): ([0.50, 0.51, 0.52], [0.3, 0.3, 0.32])}
NOISE = {s: rng.normal(0, 0.05, (R, 3)) for s in ("val", "test")}  # shared draws: paired
NOISE_SMALL = {s: rng.normal(0, 0.002, (R, 3)) for s in ("val", "test")}


def _boot(task, split, scores):
    noise = NOISE_SMALL if task == "latent" else NOISE
    return np.asarray(scores)[None] + noise[split]


@pytest.fixture(scope="module")
def ds():
    records = []
    for (model, task), (val, test) in CURVES.items():
        for split, scores in (("val", val), ("test", test)):
            boot = _boot(task, split, scores)
            for layer in range(3):
                records.append(dict(model=model, layer=layer, task=task, metric="r2", seed=0,
                                    split=split, score=scores[layer], boot=boot[:, layer],
                                    pvalue=np.nan))
    cfg = ProbeConfig(bootstrap=R, tasks=["latent", "impute"])
    return annotate(finalize(records_to_dataset(records, [], cfg)), 0.9)


def test_paired_change_is_the_last_layer_difference_replicate_by_replicate(ds):
    change, lo, hi, reps = paired_change(ds, "m/a", "m", "latent", "r2")
    assert change == pytest.approx(0.7 - 0.5)
    # shared draws cancel: every replicate differs by exactly the point difference
    np.testing.assert_allclose(reps, 0.2, atol=1e-6)
    assert lo == pytest.approx(0.2, abs=1e-6) and hi == pytest.approx(0.2, abs=1e-6)


def test_validation_gap_repeats_the_selection_inside_each_replicate(ds):
    gap, lo, hi = validation_gap(ds, "m", "latent", "r2")
    assert gap == pytest.approx(0.9 - 0.6)
    boot = _boot("latent", "val", CURVES[("m", "latent")][0])
    expected = boot.max(1) - boot[:, 2]
    assert lo == pytest.approx(np.quantile(expected, 0.05), abs=1e-6)
    assert hi == pytest.approx(np.quantile(expected, 0.95), abs=1e-6)


def test_gap_closed_only_where_the_validation_gap_is_real(ds):
    rows = alignment_summary(ds, "m", "m/a", "dense")["scores"]
    real = rows["latent/r2"]
    assert real["val_gap_lo"] > 0
    assert real["gap_closed"] == pytest.approx(0.2 / (0.8 - 0.5))  # change / test gap
    noisy = rows["impute/r2"]
    assert noisy["val_gap_lo"] <= 0 and np.isnan(noisy["gap_closed"])
    assert noisy["change"] == pytest.approx(0.02)
