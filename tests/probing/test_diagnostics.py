"""CKA, effective rank, token-norm outliers and attention summaries vs direct formulas."""

import numpy as np
import pytest
import torch
from scipy.stats import ortho_group

from tslayers.kernels import attention_reference
from tslayers.probing import (
    AttentionSummary,
    MinibatchCKA,
    effective_rank,
    linear_cka,
    mean_token_sim,
    minibatch_cka,
    norm_outlier_frac,
)


def _gram_cka(x, y):
    """Biased linear CKA through n x n Gram matrices: HSIC = tr(K H L H)."""
    n = len(x)
    h = np.eye(n) - 1.0 / n
    k, l = x @ x.T, y @ y.T
    hsic = lambda a, b: np.trace(a @ h @ b @ h)  # noqa: E731
    return hsic(k, l) / np.sqrt(hsic(k, k) * hsic(l, l))


def _unbiased_hsic_loops(k, l):
    """Song et al. (2012) unbiased HSIC written with explicit sums."""
    n = len(k)
    kt, lt = k.copy(), l.copy()
    np.fill_diagonal(kt, 0)
    np.fill_diagonal(lt, 0)
    term1 = sum(kt[i, j] * lt[j, i] for i in range(n) for j in range(n))
    term2 = kt.sum() * lt.sum() / ((n - 1) * (n - 2))
    term3 = 2 * sum(kt[i].sum() * lt[i].sum() for i in range(n)) / (n - 2)
    return (term1 + term2 - term3) / (n * (n - 3))


@pytest.fixture
def feats():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((60, 8))
    y = np.tanh(x @ rng.standard_normal((8, 5))) + 0.3 * rng.standard_normal((60, 5))
    return x, y


def test_linear_cka_equals_gram_computation(feats):
    x, y = feats
    assert linear_cka(x, y) == pytest.approx(_gram_cka(x, y), rel=1e-10)
    assert linear_cka(x, x) == pytest.approx(1.0)


def test_cka_invariances(feats):
    x, y = feats
    q = ortho_group.rvs(8, random_state=1)
    base = linear_cka(x, y)
    assert linear_cka(x @ q, y) == pytest.approx(base, rel=1e-10)
    assert linear_cka(7.5 * x, y) == pytest.approx(base, rel=1e-10)
    # the minibatch (unbiased) estimator has the same invariances
    mb = lambda a, b: minibatch_cka({0: a, 1: b}, batch_size=20)[0, 1]  # noqa: E731
    assert mb(x @ q, 0.1 * y) == pytest.approx(mb(x, y), rel=1e-9)
    assert mb(x, x) == pytest.approx(1.0)


def test_minibatch_cka_equals_direct_unbiased_estimator(feats):
    x, y = feats
    x, y = x[:25], y[:25]
    kx, ky = x @ x.T, y @ y.T
    direct = _unbiased_hsic_loops(kx, ky) / np.sqrt(
        _unbiased_hsic_loops(kx, kx) * _unbiased_hsic_loops(ky, ky))
    m = minibatch_cka({"a": x, "b": y}, batch_size=25)
    assert m[0, 1] == pytest.approx(direct, rel=1e-9)
    assert m[1, 0] == pytest.approx(direct, rel=1e-9)
    # two batches: HSIC terms are summed before normalising
    acc = MinibatchCKA()
    acc.update({"a": x[:12], "b": y[:12]})
    acc.update({"a": x[12:], "b": y[12:]})
    h = lambda a, b: _unbiased_hsic_loops(a @ a.T, b @ b.T)  # noqa: E731
    xy = h(x[:12], y[:12]) + h(x[12:], y[12:])
    xx = h(x[:12], x[:12]) + h(x[12:], x[12:])
    yy = h(y[:12], y[:12]) + h(y[12:], y[12:])
    assert acc.result()[0, 1] == pytest.approx(xy / np.sqrt(xx * yy), rel=1e-9)


def test_minibatch_cka_approaches_full_cka_on_large_data():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((4000, 6))
    y = x[:, :3] @ rng.standard_normal((3, 4)) + rng.standard_normal((4000, 4))
    assert minibatch_cka({0: x, 1: y}, batch_size=500)[0, 1] == pytest.approx(
        linear_cka(x, y), abs=0.03)


def test_effective_rank_and_token_stats():
    rng = np.random.default_rng(3)
    q = ortho_group.rvs(10, random_state=0)
    x = rng.standard_normal((500, 10))
    u, _, vt = np.linalg.svd(x, full_matrices=False)
    spectrum = np.array([5, 5, 5, 5] + [0] * 6, dtype=float)
    emb = u @ np.diag(spectrum) @ vt @ q
    assert effective_rank(emb) == pytest.approx(4.0, rel=1e-4)  # 4 equal singular values
    tokens = rng.standard_normal((20, 10, 8))
    tokens[:, 0] *= 50  # one "global" token per sequence
    assert norm_outlier_frac(tokens, factor=3.0) == pytest.approx(0.1)
    same = np.repeat(rng.standard_normal((5, 1, 8)), 6, axis=1)
    assert mean_token_sim(same) == pytest.approx(1.0)


def test_attention_summary_from_reference_probabilities():
    torch.manual_seed(0)
    b, h, n, d = 3, 2, 9, 4
    q, k, v = (torch.randn(b, h, n, d) for _ in range(3))
    k[:, :, 0] *= 0  # key 0 gets the same score everywhere
    _, probs, _, stats = attention_reference(q, k, v, causal=False, num_prefix=1)
    s = AttentionSummary()
    s.update({1: stats})
    out = s.result()[1]
    ent = -(probs * probs.log()).sum(-1).mean((0, 2))
    np.testing.assert_allclose(out["attn_entropy"], ent.numpy(), rtol=1e-5)
    np.testing.assert_allclose(out["attn_prefix_mass"], probs[..., 0].mean((0, 2)).numpy(),
                               rtol=1e-5)
    received_max = (probs.sum(-2).amax(-1) / n).mean(0)
    np.testing.assert_allclose(out["attn_received_max"], received_max.numpy(), rtol=1e-5)
