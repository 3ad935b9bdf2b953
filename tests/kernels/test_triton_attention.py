"""Triton flash attention vs the math reference, on CPU under the Triton interpreter.

Small shapes with small blocks (several blocks per sequence, ragged ends, causal diagonals),
fp32 and fp16 (bf16 arithmetic is not faithful in the interpreter).
"""

from __future__ import annotations

import math
import os

# tests/conftest.py sets this before any module imports triton; repeated here so the file also
# runs on its own. Triton decides at decoration time whether a @jit function is interpreted.
os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

triton = pytest.importorskip("triton", reason="triton is not installed")
from hypothesis import Phase, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from tslayers.kernels import attention, attention_reference  # noqa: E402
from tslayers.kernels import triton_attention as ta  # noqa: E402

TOL = {
    torch.float32: dict(out=1e-5, lse=1e-5, stat=1e-4, grad=2e-5, grad_rtol=1e-4),
    torch.float16: dict(out=2e-3, lse=1e-4, stat=1e-3, grad=1e-2, grad_rtol=1e-2),
}


def _qkv(b, h, n, d, dtype, seed, n_k=None):
    g = torch.Generator().manual_seed(seed)
    n_k = n if n_k is None else n_k
    q = torch.randn(b, h, n, d, generator=g).to(dtype)
    k = torch.randn(b, h, n_k, d, generator=g).to(dtype)
    v = torch.randn(b, h, n_k, d, generator=g).to(dtype)
    return q, k, v


def _reference(q, k, v, **kw):
    """Reference in float64 math on the (possibly fp16-rounded) inputs."""
    q, k, v = (t.double().detach().requires_grad_() for t in (q, k, v))
    out, _, lse, stats = attention_reference(q, k, v, **kw)
    return (q, k, v), out, lse, stats


def _close(got, want, atol, rtol=1e-3, what=""):
    assert torch.isfinite(got).all(), f"{what}: non-finite values"
    torch.testing.assert_close(got.double(), want.double(), atol=atol, rtol=rtol, msg=what)


def _check_forward(q, k, v, *, causal, key_lengths, num_prefix, blocks, scale=None):
    tol = TOL[q.dtype]
    kw = dict(causal=causal, key_lengths=key_lengths, num_prefix=num_prefix, scale=scale)
    out, lse, stats = ta.flash_attention_forward(q, k, v, stats=True, blocks=blocks, **kw)
    _, r_out, r_lse, r_stats = _reference(q, k, v, **kw)
    assert out.dtype == q.dtype and out.shape == q.shape
    _close(out, r_out, tol["out"], what="out")
    _close(lse, r_lse, tol["lse"], what="lse")
    for name, got, want in zip(
        ("entropy", "distance", "prefix_mass", "received"), stats.as_tuple(), r_stats.as_tuple()
    ):
        # distances are in token units (up to N): relative tolerance matters there
        _close(got, want, tol["stat"], rtol=1e-4, what=name)


def _check_backward(q, k, v, *, causal, key_lengths, blocks, seed=0, deterministic=None, tol=None):
    tol = tol or TOL[q.dtype]
    kw = dict(causal=causal, key_lengths=key_lengths)
    qg, kg, vg = (t.clone().requires_grad_() for t in (q, k, v))
    out, _ = ta.triton_attention(qg, kg, vg, blocks=blocks, deterministic=deterministic, **kw)
    grad_out = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed)).to(q.dtype)
    grad_out = grad_out.to(q.device)
    grads = torch.autograd.grad(out, (qg, kg, vg), grad_out)
    leaves, r_out, _, _ = _reference(q, k, v, **kw)
    r_grads = torch.autograd.grad(r_out, leaves, grad_out.double())
    for name, g, r in zip(("dq", "dk", "dv"), grads, r_grads):
        assert g.dtype == q.dtype
        _close(g, r, tol["grad"], rtol=tol["grad_rtol"], what=name)
    return grads


CASES = [  # (B, H, N, D, key_lengths) -- N never a multiple of the blocks
    (2, 2, 45, 16, None),
    (3, 1, 61, 32, [61, 1, 30]),  # includes a sequence whose only valid key is the first
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("causal", [False, True], ids=["bidir", "causal"])
@pytest.mark.parametrize("case", CASES, ids=["plain", "padded"])
def test_forward_and_stats_match_reference(case, causal, dtype):
    b, h, n, d, lengths = case
    q, k, v = _qkv(b, h, n, d, dtype, seed=1)
    kl = None if lengths is None else torch.tensor(lengths)
    _check_forward(q, k, v, causal=causal, key_lengths=kl, num_prefix=2, blocks=(32, 16))


@pytest.mark.parametrize("deterministic", [False, True], ids=["fa2", "deterministic"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("causal", [False, True], ids=["bidir", "causal"])
@pytest.mark.parametrize("case", CASES, ids=["plain", "padded"])
def test_backward_matches_autograd(case, causal, dtype, deterministic):
    """Both backwards: FlashAttention-2 (atomic dQ, the default) and the two-pass one."""
    b, h, n, d, lengths = case
    q, k, v = _qkv(b, h, n, d, dtype, seed=2)
    kl = None if lengths is None else torch.tensor(lengths)
    _check_backward(q, k, v, causal=causal, key_lengths=kl, blocks=(32, 16),
                    deterministic=deterministic)


@pytest.mark.parametrize("blocks", [(16, 32), (32, 32), (16, 16)])
def test_other_block_shapes(blocks):
    """BLOCK_M < BLOCK_N (several key blocks on one diagonal) and square blocks."""
    q, k, v = _qkv(2, 1, 70, 16, torch.float32, seed=3)
    kl = torch.tensor([70, 33])
    _check_forward(q, k, v, causal=True, key_lengths=kl, num_prefix=20, blocks=blocks)
    _check_backward(q, k, v, causal=True, key_lengths=kl, blocks=blocks)
    _check_backward(q, k, v, causal=True, key_lengths=kl, blocks=blocks, deterministic=True)


def test_only_first_key_valid_gives_no_nan():
    q, k, v = _qkv(2, 2, 40, 16, torch.float32, seed=4)
    kl = torch.tensor([1, 1])
    for causal in (False, True):
        out, lse, stats = ta.flash_attention_forward(
            q, k, v, causal=causal, key_lengths=kl, stats=True, num_prefix=1
        )
        torch.testing.assert_close(out, v[:, :, :1].expand_as(out))  # every row copies key 0
        assert torch.isfinite(lse).all()
        torch.testing.assert_close(stats.entropy, torch.zeros_like(stats.entropy))
        torch.testing.assert_close(stats.prefix_mass, torch.ones_like(stats.prefix_mass))
        torch.testing.assert_close(stats.received[..., 0], torch.ones_like(lse[..., 0]))
        dq, dk, dv = _check_backward(q, k, v, causal=causal, key_lengths=kl, blocks=None)
        assert (dk[:, :, 1:] == 0).all() and (dv[:, :, 1:] == 0).all()


def test_nan_padding_does_not_leak():
    """Keys and values past the length may hold garbage (NaN): masked blocks never load them."""
    q, k, v = _qkv(2, 1, 50, 16, torch.float32, seed=5)
    kl = torch.tensor([50, 21])
    k_bad, v_bad = k.clone(), v.clone()
    k_bad[1, :, 21:] = float("nan")
    v_bad[1, :, 21:] = float("nan")
    for causal in (False, True):
        clean = ta.flash_attention_forward(q, k, v, causal=causal, key_lengths=kl, stats=True)
        dirty = ta.flash_attention_forward(q, k_bad, v_bad, causal=causal, key_lengths=kl,
                                           stats=True)
        torch.testing.assert_close(dirty[0], clean[0])
        for a, b in zip(dirty[2].as_tuple(), clean[2].as_tuple()):
            torch.testing.assert_close(a, b)
        qg, kg, vg = (t.clone().requires_grad_() for t in (q, k_bad, v_bad))
        out, _ = ta.triton_attention(qg, kg, vg, causal=causal, key_lengths=kl)
        out.sum().backward()
        assert torch.isfinite(qg.grad).all()
        assert torch.isfinite(kg.grad[:, :, :21]).all() and torch.isfinite(vg.grad[:, :, :21]).all()


def test_head_dim_not_power_of_two_and_custom_scale():
    q, k, v = _qkv(1, 2, 37, 24, torch.float32, seed=6)
    kl = torch.tensor([29])
    _check_forward(q, k, v, causal=False, key_lengths=kl, num_prefix=1, blocks=None, scale=0.3)
    _check_backward(q, k, v, causal=True, key_lengths=kl, blocks=None)


def test_fewer_queries_than_keys():
    q, _, _ = _qkv(2, 1, 20, 16, torch.float32, seed=7)
    _, k, v = _qkv(2, 1, 45, 16, torch.float32, seed=8)
    kl = torch.tensor([45, 12])
    for causal in (False, True):
        _check_forward(q, k, v, causal=causal, key_lengths=kl, num_prefix=3, blocks=None)
        _check_backward(q, k, v, causal=causal, key_lengths=kl, blocks=None)


def test_non_contiguous_inputs():
    """(B, N, H, D) activations viewed as (B, H, N, D), the layout a model produces."""
    x = torch.randn(2, 33, 3, 3, 16)  # (B, N, qkv, H, D)
    q, k, v = (x[:, :, i].transpose(1, 2) for i in range(3))
    assert not q.is_contiguous()
    _check_forward(q, k, v, causal=True, key_lengths=None, num_prefix=0, blocks=None)
    _check_backward(q, k, v, causal=False, key_lengths=None, blocks=None)


@pytest.mark.parametrize("n", [1, 16, 17])
def test_tiny_and_exact_block_lengths(n):
    q, k, v = _qkv(1, 2, n, 16, torch.float32, seed=11)
    for causal in (False, True):
        _check_forward(q, k, v, causal=causal, key_lengths=None, num_prefix=1, blocks=(16, 16))
        _check_backward(q, k, v, causal=causal, key_lengths=None, blocks=(16, 16))


def test_dispatch_triton_backend_equals_math():
    q, k, v = _qkv(2, 2, 30, 16, torch.float32, seed=9)
    kw = dict(causal=True, key_lengths=torch.tensor([30, 7]), stats=True, num_prefix=1)
    out_t, st_t = attention(q, k, v, backend="triton", **kw)
    out_m, st_m = attention(q, k, v, backend="math", **kw)
    torch.testing.assert_close(out_t, out_m, atol=1e-5, rtol=1e-4)
    for a, b in zip(st_t.as_tuple(), st_m.as_tuple()):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    out = attention(q, k, v, backend="triton", causal=False)
    assert isinstance(out, torch.Tensor)
    assert ta.triton_attention(q, k, v, causal=False)[1] is None


def test_statistics_are_not_differentiable_and_grad_flows():
    q, k, v = (t.requires_grad_() for t in _qkv(1, 1, 20, 16, torch.float32, seed=10))
    out, st = ta.triton_attention(q, k, v, causal=True, stats=True)
    assert out.requires_grad and not any(t.requires_grad for t in st.as_tuple())
    (out.square().sum() + 0 * st.entropy.sum()).backward()
    assert q.grad is not None and k.grad is not None and v.grad is not None


# no shrinking phase: each example is slow in the interpreter, a raw failing example is enough
@settings(max_examples=12, deadline=None, derandomize=True,
          phases=(Phase.explicit, Phase.generate))
@given(
    b=st.integers(1, 2),
    h=st.integers(1, 2),
    n=st.integers(1, 72),
    d=st.sampled_from([16, 32]),
    causal=st.booleans(),
    num_prefix=st.integers(0, 4),
    data=st.data(),
)
def test_property_random_shapes(b, h, n, d, causal, num_prefix, data):
    lengths = data.draw(st.one_of(st.none(), st.lists(st.integers(1, n), min_size=b, max_size=b)))
    kl = None if lengths is None else torch.tensor(lengths)
    q, k, v = _qkv(b, h, n, d, torch.float32, seed=n)
    q = q * math.sqrt(d) / 2  # sharper softmax than N(0, 1) scores
    _check_forward(q, k, v, causal=causal, key_lengths=kl, num_prefix=num_prefix, blocks=(32, 16))
    _check_backward(q, k, v, causal=causal, key_lengths=kl, blocks=(32, 16))


def test_encoder_trains_identically_with_triton_and_sdpa():
    """A few AdamW steps of a tiny encoder: same losses and gradients on both backends."""
    from tslayers.model import EncoderConfig, TemporalEncoder

    cfg = dict(n_channels=1, patch_len=8, d_model=32, n_layers=2, n_heads=2, causal=True,
               n_registers=1)
    x = torch.randn(2, 56, 1, generator=torch.Generator().manual_seed(0))
    runs = {}
    for backend in ("sdpa", "triton"):
        torch.manual_seed(0)
        enc = TemporalEncoder(EncoderConfig(**cfg, attn_backend=backend))
        opt = torch.optim.AdamW(enc.parameters(), lr=1e-2)
        losses, grads = [], []
        for _ in range(3):
            opt.zero_grad()
            loss = (enc(x).tokens[:, 1:-1] - enc(x).tokens[:, 2:].detach()).pow(2).mean()
            loss.backward()
            losses.append(loss.item())
            grads.append(enc.blocks[0].attn.qkv.weight.grad.clone())
            opt.step()
        runs[backend] = losses, grads
    torch.testing.assert_close(runs["triton"][0], runs["sdpa"][0], rtol=1e-4, atol=1e-6)
    assert runs["sdpa"][0][-1] < runs["sdpa"][0][0]
    for g_t, g_s in zip(runs["triton"][1], runs["sdpa"][1]):
        torch.testing.assert_close(g_t, g_s, rtol=1e-3, atol=1e-5)


# --------------------------------------------------------------------------------------------
# Backward selection, input validation, precision and tuning plans
# --------------------------------------------------------------------------------------------
def _launched(monkeypatch) -> list[str]:
    names: list[str] = []
    real = ta._launch
    monkeypatch.setattr(ta, "_launch", lambda name, *a, **kw: (names.append(name),
                                                                 real(name, *a, **kw)))
    return names


def test_backward_follows_torch_deterministic_flag(monkeypatch):
    """FlashAttention-2 (one pass, atomic dQ) by default; the fixed-order two-pass backward when
    PyTorch is asked for deterministic algorithms -- and both give the same gradients."""
    q, k, v = _qkv(1, 2, 40, 16, torch.float32, seed=12)
    names = _launched(monkeypatch)
    grads = {}
    for flag in (False, True):
        names.clear()
        before = torch.are_deterministic_algorithms_enabled()
        torch.use_deterministic_algorithms(flag)
        try:
            qg, kg, vg = (t.clone().requires_grad_() for t in (q, k, v))
            out, _ = ta.triton_attention(qg, kg, vg, causal=True)
            grads[flag] = torch.autograd.grad(out.square().sum(), (qg, kg, vg))
        finally:
            torch.use_deterministic_algorithms(before)
        assert names[1:] == (["bwd_kv", "bwd_dq"] if flag else ["bwd"])
    for a, b in zip(grads[False], grads[True]):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("lengths, error", [([0, 5], ValueError), ([5, 21], ValueError),
                                            ([5], ValueError), ([2.0, 3.0], TypeError)])
def test_every_entry_point_validates_key_lengths(lengths, error):
    """Length 0 would give NaN rows and a length past N would read the next sequence."""
    q, k, v = _qkv(2, 1, 20, 16, torch.float32, seed=13)
    kl = torch.tensor(lengths)
    out, lse, _ = ta.flash_attention_forward(q, k, v, causal=False)
    calls = [
        lambda: ta.triton_attention(q, k, v, causal=False, key_lengths=kl),
        lambda: ta.flash_attention_forward(q, k, v, causal=False, key_lengths=kl),
        lambda: ta.flash_attention_backward(out, q, k, v, out, lse, causal=False, key_lengths=kl),
        lambda: attention(q, k, v, causal=False, key_lengths=kl, backend="triton"),
    ]
    for call in calls:
        with pytest.raises(error, match="key_lengths"):
            call()


def test_fp32_uses_tensor_core_dots_and_auto_keeps_exact_fp32_on_sdpa():
    from tslayers.kernels import resolve_backend

    assert ta.dot_precision(torch.float32, interpreted=False) == "tf32"
    assert ta.dot_precision(torch.bfloat16, interpreted=False) == "tf32"
    cuda = torch.device("cuda")
    before = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("highest")
        assert resolve_backend("auto", cuda, torch.float32) == "sdpa"
        assert resolve_backend("auto", cuda, torch.bfloat16) == "triton"
        torch.set_float32_matmul_precision("high")
        assert resolve_backend("auto", cuda, torch.float32) == "triton"
    finally:
        torch.set_float32_matmul_precision(before)
    assert resolve_backend("auto", torch.device("cpu"), torch.bfloat16) == "sdpa"


def test_fp32_tf32_parity_with_tf32_tolerance():
    """fp32 through TF32 dots (10-bit mantissa) agrees with float64 math to ~1e-3. The
    interpreter computes exactly; with TRITON_INTERPRET=0 on a GPU this checks the real TF32."""
    device = "cpu" if ta.INTERPRETED else "cuda"
    q, k, v = (t.to(device) for t in _qkv(2, 2, 70, 32, torch.float32, seed=14))
    kl = torch.tensor([70, 41], device=device)
    tf32 = dict(out=5e-3, lse=5e-3, stat=5e-3, grad=2e-2, grad_rtol=2e-2)
    out, lse, _ = ta.flash_attention_forward(q, k, v, causal=True, key_lengths=kl)
    _, r_out, r_lse, _ = _reference(q, k, v, causal=True, key_lengths=kl)
    _close(out, r_out, tf32["out"], rtol=1e-2, what="out")
    _close(lse, r_lse, tf32["lse"], rtol=1e-2, what="lse")
    _check_backward(q, k, v, causal=True, key_lengths=kl, blocks=None, tol=tf32)


@pytest.mark.parametrize("kernel", sorted(ta.PLANS))
def test_offered_tiles_fit_shared_memory_and_short_sequences(kernel):
    for d in (16, 24, 64, 96, 128, 200, 256):
        block_d = max(16, triton.next_power_of_2(d))
        for elem in (2, 4):
            for n in (1, 17, 32, 64, 100, 4096):
                tiles = ta.offered_tiles(kernel, block_d, elem, n, n, ta.DEFAULT_SMEM_LIMIT)
                assert tiles, (kernel, d, elem, n)
                for t in tiles:
                    assert ta.smem_bytes(kernel, t, block_d, elem) <= ta.DEFAULT_SMEM_LIMIT
                    # short sequences: no tile longer than N (rounded up, 32 at least)
                    assert t[0] <= max(32, triton.next_power_of_2(n)), (kernel, d, n, t)
                    assert t[1] <= max(32, triton.next_power_of_2(n)), (kernel, d, n, t)
    # the project's typical N <= 64 gets 64- and 32-row tiles only
    assert {t[0] for t in ta.offered_tiles(kernel, 64, 2, 64, 64, ta.DEFAULT_SMEM_LIMIT)} <= {
        32, 64}


def test_no_fitting_tile_is_an_error_with_the_numbers():
    with pytest.raises(ValueError, match=r"head dim 256 .* needs [\d,]+ B.* offers 40,000 B"):
        ta.offered_tiles("fwd", 256, 2, 4096, 4096, 40_000)


def test_pruner_offers_only_fitting_planned_tiles():
    configs = [triton.Config({"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=w, num_stages=s)
               for bm, bn, w, s in ta._all_tiles("fwd")]
    q = torch.empty(1, 1, 1, 256, dtype=torch.float32)
    kept = ta._pruner("fwd")["early_config_prune"](
        configs, dict(Q=q, BLOCK_D=256, N_Q=4096, N_K=4096))
    got = [(c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"], c.num_warps, c.num_stages) for c in kept]
    assert got and set(got) <= set(ta.PLANS["fwd"][256])
    assert all(ta.smem_bytes("fwd", t, 256, 4) <= ta.DEFAULT_SMEM_LIMIT for t in got)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_no_host_sync_with_key_lengths_on_the_gpu():
    """Key lengths living on the GPU are validated without a device->host copy."""
    q, k, v = (t.cuda() for t in _qkv(2, 2, 64, 32, torch.float32, seed=15))
    kl = torch.tensor([64, 9], device="cuda")
    backends = ["sdpa", "math"] + ([] if ta.INTERPRETED else ["triton"])
    for backend in backends:  # warm up: autotuning synchronises, on purpose
        attention(q, k, v, causal=True, key_lengths=kl, stats=True, backend=backend)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for backend in backends:
            attention(q, k, v, causal=True, key_lengths=kl, stats=True, backend=backend)
    finally:
        torch.cuda.set_sync_debug_mode("default")
