"""PyTorch attention paths against the math reference and hand-computed statistics."""

import importlib
import math

import pytest
import torch

from tslayers.kernels import attention, attention_reference


def _qkv(b=2, h=2, n=9, d=8, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, h, n, d, generator=g, dtype=dtype) for _ in range(3)]


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("lengths", [None, [9, 1], [4, 7]])
def test_sdpa_equals_reference(causal, lengths):
    q, k, v = _qkv()
    kl = None if lengths is None else torch.tensor(lengths)
    out = attention(q, k, v, causal=causal, key_lengths=kl, backend="sdpa")
    ref, probs, _, _ = attention_reference(q, k, v, causal=causal, key_lengths=kl)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    assert torch.isfinite(out).all()
    if lengths is not None and lengths[1] == 1:
        # the only valid key is the first: every query of that sequence copies v[0]
        torch.testing.assert_close(out[1], v[1, :, :1].expand_as(out[1]), atol=1e-6, rtol=0)
    # rows of the reference matrix are distributions over allowed keys only
    torch.testing.assert_close(probs.sum(-1), torch.ones_like(probs[..., 0]))


def _stats_by_hand(q, k, causal, lengths, num_prefix):
    """Loop-level statistics computed from explicit softmax, independent of the library."""
    b, h, n, d = q.shape
    ent = torch.zeros(b, h, n)
    dist = torch.zeros(b, h, n)
    pre = torch.zeros(b, h, n)
    rec = torch.zeros(b, h, n)
    for bi in range(b):
        length = n if lengths is None else lengths[bi]
        for hi in range(h):
            for i in range(n):
                keys = [j for j in range(length) if (not causal or j <= i)]
                s = torch.tensor([float(q[bi, hi, i] @ k[bi, hi, j]) / math.sqrt(d) for j in keys])
                p = torch.softmax(s, 0)
                ent[bi, hi, i] = -(p * p.log()).sum()
                dist[bi, hi, i] = sum(float(pj) * abs(i - j) for pj, j in zip(p, keys))
                pre[bi, hi, i] = sum(float(pj) for pj, j in zip(p, keys) if j < num_prefix)
                if i < length:
                    for pj, j in zip(p, keys):
                        rec[bi, hi, j] += float(pj)
    return ent, dist, pre, rec


@pytest.mark.parametrize("backend", ["sdpa", "math"])
@pytest.mark.parametrize("causal", [False, True])
def test_stats_equal_hand_computation(backend, causal):
    q, k, v = _qkv(b=2, h=1, n=6, d=4, seed=3)
    lengths = [6, 3]
    _, st = attention(q, k, v, causal=causal, key_lengths=torch.tensor(lengths), stats=True,
                      num_prefix=2, backend=backend)
    for got, want in zip(st.as_tuple(), _stats_by_hand(q, k, causal, lengths, 2)):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_stats_blockwise_matches_single_block(monkeypatch):
    att = importlib.import_module("tslayers.kernels.attention")  # module, not the function

    q, k, v = _qkv(n=13)
    _, full = attention(q, k, v, causal=True, stats=True, num_prefix=1, backend="sdpa")
    monkeypatch.setattr(att, "_STATS_BLOCK_ELEMENTS", 2 * 2 * 13 * 3)  # 3-query blocks
    _, blocked = attention(q, k, v, causal=True, stats=True, num_prefix=1, backend="sdpa")
    for a, b in zip(full.as_tuple(), blocked.as_tuple()):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("backend", ["sdpa", "math"])
@pytest.mark.parametrize("causal", [False, True])
def test_gradcheck(backend, causal):
    q, k, v = (t.double().requires_grad_() for t in _qkv(b=1, h=1, n=5, d=3))
    kl = torch.tensor([4])

    def f(q, k, v):
        return attention(q, k, v, causal=causal, key_lengths=kl, backend=backend)

    assert torch.autograd.gradcheck(f, (q, k, v))


def test_bad_inputs_are_named():
    q, k, v = _qkv()
    with pytest.raises(ValueError, match="B, H, N, D"):
        attention(q[0], k, v, causal=False)
    with pytest.raises(ValueError, match="key_lengths"):
        attention(q, k, v, causal=False, key_lengths=torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="unknown attention backend"):
        attention(q, k, v, causal=False, backend="cuda")
