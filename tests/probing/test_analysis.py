"""The measurement protocol against known answers: selection on validation only, paired gap
intervals, permutation p-values, and the strongest cheap controls."""

import numpy as np
import pytest
import torch
from scipy import stats

from tslayers.data import load_dataset, make_dataset, make_lgssm
from tslayers.model import EncoderConfig, TemporalEncoder
from tslayers.probing import ProbeConfig, annotate, layer_table, probe, probe_encoder
from tslayers.probing.features import Features
from tslayers.probing.metrics import permutation_pvalue
from tslayers.report import report_markdown


def _cfg(**kw):
    base = dict(context=64, max_windows=192, bootstrap=100, permutations=50, progress=False,
                controls=[], tasks=["latent"], lambdas=[1e-2, 1.0, 100.0])
    base.update(kw)
    return ProbeConfig(**base)


class PlantedSource:
    """Per-token features from the window itself (the dataset's latent state is its
    observation): ``signal[l]`` is the share of the state in layer ``l``, the rest is noise."""

    causal, instance_scaled, series_only = False, True, False

    def __init__(self, signal, name="planted", seed=0):
        self.signal, self.name, self.seed = signal, name, seed

    def extract(self, x, fit_rows=None):
        rng = np.random.default_rng(self.seed)
        end = np.arange(7, x.shape[1], 8)
        z = x[:, end]  # (W, P, C)
        tokens = {}
        for l, s in enumerate(self.signal):
            noise = rng.standard_normal((*z.shape[:2], 6))
            mix = np.concatenate([z, np.zeros((*z.shape[:2], 6 - z.shape[-1]))], -1)
            tokens[l] = (s * mix + (1 - s) * noise).astype(np.float32)
        return Features(layers=list(tokens), names=[f"L{l}" for l in tokens], tokens=tokens,
                        pooled={l: t.mean(1) for l, t in tokens.items()}, token_end=end,
                        token_len=8)


@pytest.fixture(scope="module")
def lgssm():
    """Series whose latent state is the observation itself (so a source can plant it)."""
    obs = make_lgssm(n_series=60, length=96, seed=1)["obs"].values[..., :2]
    return make_dataset(obs, latent=obs.copy())


def test_a_planted_intermediate_layer_is_selected_and_its_gap_is_real(lgssm):
    src = PlantedSource([0.2, 0.9, 0.3])
    res = probe(src, lgssm, _cfg())
    sel = dict(model="planted", task="latent", metric="r2", seed=0)
    assert int(res["selected_layer"].sel(sel)) == 1
    assert float(res["gap_lo"].sel(sel)) > 0  # the interval excludes 0
    assert float(res["selected_pvalue"].sel(sel)) < 0.05
    text, _ = report_markdown(res)
    assert "**+" in text  # a real gap is bold


def test_layers_with_equal_information_give_a_gap_interval_containing_zero(lgssm):
    src = PlantedSource([0.6, 0.6, 0.6])  # same share, fresh noise
    res = probe(src, lgssm, _cfg())
    sel = dict(model="planted", task="latent", metric="r2", seed=0)
    lo, hi = float(res["gap_lo"].sel(sel)), float(res["gap_hi"].sel(sel))
    assert lo <= 0 <= hi
    table = layer_table(res)
    text, _ = report_markdown(res)
    row = [line for line in text.splitlines() if line.startswith("| latent |")][0]
    assert "**" not in row, row
    assert len(table) == 1


def test_selection_never_reads_the_test_split(lgssm):
    src = PlantedSource([0.2, 0.9, 0.3])
    res = probe(src, lgssm, _cfg())
    poisoned = res.copy(deep=True)
    for var in ("score", "score_boot"):
        arr = poisoned[var].values
        test = list(poisoned["split"].values).index("test")
        idx = [slice(None)] * arr.ndim
        idx[poisoned[var].dims.index("split")] = test
        arr[tuple(idx)] = np.nan  # no test score reaches the selector
        poisoned[var] = (poisoned[var].dims, arr)
    again = annotate(poisoned)
    np.testing.assert_array_equal(again["selected_layer"].values, res["selected_layer"].values)


def test_permutation_pvalues_of_a_signal_and_of_noise():
    rng = np.random.default_rng(0)
    n, blocks = 240, np.repeat(np.arange(60), 4)
    y = rng.standard_normal((n, 1))
    assert permutation_pvalue("r2", y, y + 0.5 * rng.standard_normal((n, 1)), blocks, 200,
                              0) < 0.05
    pvals = [permutation_pvalue("r2", rng.standard_normal((n, 1)), rng.standard_normal((n, 1)),
                                blocks, 100, s) for s in range(40)]
    assert stats.kstest(pvals, "uniform").pvalue > 0.01  # uniform-ish under the null
    assert 0.3 < np.mean(pvals) < 0.7


def test_periodogram_control_separates_the_mixture():
    ds = load_dataset("synthetic/mixture", n_series=120, length=160, seed=2)
    torch.manual_seed(0)
    enc = TemporalEncoder(EncoderConfig(n_channels=3, patch_len=16, d_model=16, n_layers=1,
                                        n_heads=2))
    res = probe_encoder(enc, ds, _cfg(tasks=["classify"], context=128, controls=["periodogram"],
                                      permutations=0), model_name="m")
    acc = float(res["selected_score"].sel(model="m/periodogram", task="classify",
                                          metric="accuracy", seed=0))
    assert acc >= 0.9
    assert str(res["best_control"].sel(model="m", task="classify", metric="accuracy",
                                       seed=0).values) == "m/periodogram"


def test_an_interval_finer_than_the_replicates_uses_their_spread_not_their_range():
    """90% on 100 replicates: the percentiles. 99.9% on 100 replicates (each tail 0.05
    replicates): the percentiles would be min and max; the interval is mean +- z_0.9995 sd."""
    from scipy.stats import norm

    from tslayers.probing.metrics import interval

    reps = np.random.default_rng(0).normal(size=100)
    assert interval(reps, 0.9) == tuple(np.quantile(reps, [0.05, 0.95]))
    lo, hi = interval(reps, 0.999)
    half = norm.ppf(0.9995) * reps.std(ddof=1)
    assert (lo, hi) == pytest.approx((reps.mean() - half, reps.mean() + half))
    assert lo < reps.min() and hi > reps.max()
