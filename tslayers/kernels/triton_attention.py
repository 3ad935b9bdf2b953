"""Fused flash attention in Triton: launchers, tuning plans and the autograd wrapper.

:func:`triton_attention` is what :func:`tslayers.kernels.attention` calls for ``backend="triton"``.
The kernels themselves, explained step by step, are in
:mod:`tslayers.kernels.triton_forward` and :mod:`tslayers.kernels.triton_backward`
(conventions and shared tile helpers in :mod:`tslayers.kernels.triton_tiles`); tuning plans and
the launcher in :mod:`tslayers.kernels.triton_tuning`:

1. forward: online softmax over key blocks (base-2 exponentials, the log2(e) folded into the
   scale), fp32 accumulation, causal block skipping with a separate masked diagonal stage; saves
   the log-sum-exp. With ``stats=True`` the same pass also carries the per-query statistics
   (entropy, mean distance, prefix mass); a second light pass per key block reuses the saved
   log-sum-exp for the mass each key receives;
2. backward (FlashAttention-2): ``delta = rowsum(dO * O)``, then one pass over key blocks that
   recomputes the probabilities once and produces dK, dV and -- through fp32 atomic adds -- dQ:
   five matrix products per tile pair. ``deterministic=True`` (or
   ``torch.use_deterministic_algorithms(True)``) instead computes dQ in a second pass with a
   fixed summation order (seven products, two recomputations): bitwise reproducible.

fp32 inputs use TF32 tensor-core dots (inputs rounded to a 10-bit mantissa, fp32 accumulation:
outputs and gradients within ~1e-3 relative of fp32 math), never the scalar fp32 path, which
spills and skips the tensor cores. (``attention(backend="auto")`` sends fp32 to SDPA instead
while PyTorch's matmul precision is "highest".) Only the Triton interpreter
(``TRITON_INTERPRET=1`` set before this module is imported; CPU tensors) computes the dots
exactly; it uses one small fixed tile.

Importable with only torch and triton (plus this package's ``kernels`` modules).
"""

from __future__ import annotations

import contextlib
import math

import torch
import triton

from . import triton_backward as bwd
from .reference import AttentionStats, check_key_lengths
from .triton_tuning import (  # noqa: F401 (re-exported: tests and benchmarks read them here)
    DEFAULT_SMEM_LIMIT,
    INTERPRETED,
    INTERPRETER_BLOCKS,
    LAUNCH_OPTIONS,
    MAX_HEAD_DIM,
    PLANS,
    Blocks,
    KernelSpec,
    Tile,
    _all_tiles,
    _launch,
    _pruner,
    dot_precision,
    kernel_specs,
    offered_tiles,
    smem_bytes,
    smem_limit,
)


# --------------------------------------------------------------------------------------------
# Input preparation
# --------------------------------------------------------------------------------------------
def _unit_stride(x: torch.Tensor) -> torch.Tensor:
    """The kernels index (B, H, N, D) through strides but need D contiguous."""
    return x if x.stride(-1) == 1 else x.contiguous()


def _check(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
           key_lengths: torch.Tensor | None) -> None:
    if q.dim() != 4 or k.shape != v.shape or q.shape[:2] != k.shape[:2] or q.shape[3] != k.shape[3]:
        raise ValueError(
            f"expected (B, H, N, D) q, k, v, got q{tuple(q.shape)} k{tuple(k.shape)} "
            f"v{tuple(v.shape)}"
        )
    if not (q.dtype == k.dtype == v.dtype) or q.dtype not in (
        torch.float32, torch.float16, torch.bfloat16
    ):
        raise TypeError(f"q, k, v must share one dtype of fp32/fp16/bf16, got "
                        f"{q.dtype}, {k.dtype}, {v.dtype}")
    if q.shape[-1] > MAX_HEAD_DIM:
        raise ValueError(f"head dim {q.shape[-1]} > {MAX_HEAD_DIM} is not supported")
    if not (q.device == k.device == v.device):
        raise ValueError(f"q, k, v are on different devices: {q.device}, {k.device}, {v.device}")
    if q.device.type != "cuda" and not INTERPRETED:
        raise RuntimeError(
            "the Triton attention kernels need CUDA tensors; for CPU tensors set TRITON_INTERPRET=1"
            " before importing tslayers.kernels.triton_attention (slow, for tests)"
        )
    check_key_lengths(key_lengths, q.shape[0], k.shape[2])


def _device(t: torch.Tensor):
    """Launch on the tensors' GPU, whatever the current device is."""
    return torch.cuda.device(t.device) if t.device.type == "cuda" else contextlib.nullcontext()


def _lengths(key_lengths: torch.Tensor | None, q: torch.Tensor) -> torch.Tensor | None:
    if key_lengths is None:
        return None
    return key_lengths.to(device=q.device, dtype=torch.int32, non_blocking=True).contiguous()


def _common_meta(q: torch.Tensor, causal: bool, has_lengths: bool) -> dict:
    d = q.shape[-1]
    return dict(
        HEAD_DIM=d,
        BLOCK_D=max(16, triton.next_power_of_2(d)),
        CAUSAL=bool(causal),
        HAS_LENGTHS=has_lengths,
        DOT_PRECISION=dot_precision(q.dtype),
    )


# --------------------------------------------------------------------------------------------
# Forward and backward launchers (no autograd)
# --------------------------------------------------------------------------------------------
def flash_attention_forward(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    causal: bool,
    key_lengths: torch.Tensor | None = None,
    scale: float | None = None,
    num_prefix: int = 0,
    stats: bool = False,
    received: bool = True,
    blocks: Blocks = None,
) -> tuple[torch.Tensor, torch.Tensor, AttentionStats | None]:
    """Forward pass: ``(out (B, H, N, D), lse (B, H, N) fp32, stats or None)``.

    ``received=False`` skips the per-key pass (``stats.received`` is then NaN); the benchmark uses
    it to price the per-query statistics alone. ``blocks=(BLOCK_M, BLOCK_N)`` bypasses autotuning.
    """
    _check(q, k, v, key_lengths)
    q, k, v = _unit_stride(q), _unit_stride(k), _unit_stride(v)
    b, h, n_q, d = q.shape
    n_k = k.shape[2]
    scale = 1.0 / math.sqrt(d) if scale is None else float(scale)
    lengths = _lengths(key_lengths, q)
    f32 = dict(device=q.device, dtype=torch.float32)
    out = torch.empty(q.shape, device=q.device, dtype=q.dtype)
    lse = torch.empty((b, h, n_q), **f32)
    if stats:
        ent, dist, pref = (torch.empty((b, h, n_q), **f32) for _ in range(3))
    else:
        ent = dist = pref = lse  # never written: STATS=False compiles the stores away
    meta = _common_meta(q, causal, lengths is not None)
    n_bucket = triton.next_power_of_2(max(n_q, n_k))
    qk_scale = scale * math.log2(math.e)
    klen = lengths if lengths is not None else lse  # dummy pointer when HAS_LENGTHS=False
    with _device(q):
        _launch(
            "fwd_stats" if stats else "fwd",
            lambda bm, bn: (triton.cdiv(n_q, bm), b * h),
            (q, k, v, out, lse, ent, dist, pref, klen,
             *q.stride()[:3], *k.stride()[:3], *v.stride()[:3], *out.stride()[:3],
             h, n_q, n_k, n_bucket, qk_scale, int(num_prefix)),
            meta, blocks,
        )
        if not stats:
            return out, lse, None
        recv = torch.full((b, h, n_k), float("nan"), **f32)
        if received:
            _launch(
                "received",
                lambda bm, bn: (triton.cdiv(n_k, bn), b * h),
                (q, k, lse, recv, klen, *q.stride()[:3], *k.stride()[:3],
                 h, n_q, n_k, n_bucket, qk_scale),
                meta, blocks,
            )
    return out, lse, AttentionStats(entropy=ent, distance=dist, prefix_mass=pref, received=recv)


def flash_attention_backward(
    do: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    out: torch.Tensor,
    lse: torch.Tensor,
    *,
    causal: bool,
    key_lengths: torch.Tensor | None = None,
    scale: float | None = None,
    blocks: Blocks = None,
    deterministic: bool | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients ``(dq, dk, dv)`` from the saved output and log-sum-exp.

    ``deterministic=None`` follows ``torch.are_deterministic_algorithms_enabled()``: False runs
    the FlashAttention-2 pass (dQ by fp32 atomics: summation order varies run to run), True the
    fixed-order two-pass backward."""
    _check(q, k, v, key_lengths)
    if out.shape != q.shape or do.shape != q.shape or lse.shape != q.shape[:3]:
        raise ValueError(f"out{tuple(out.shape)} / do{tuple(do.shape)} / lse{tuple(lse.shape)} "
                         f"do not match q{tuple(q.shape)}")
    if deterministic is None:
        deterministic = torch.are_deterministic_algorithms_enabled()
    q, k, v, out, do = (_unit_stride(t) for t in (q, k, v, out, do))
    do = do.to(q.dtype)
    lse = lse.contiguous()
    b, h, n_q, d = q.shape
    n_k = k.shape[2]
    scale = 1.0 / math.sqrt(d) if scale is None else float(scale)
    lengths = _lengths(key_lengths, q)
    meta = _common_meta(q, causal, lengths is not None)
    n_bucket = triton.next_power_of_2(max(n_q, n_k))
    qk_scale = scale * math.log2(math.e)
    klen = lengths if lengths is not None else lse

    with _device(q):
        # 1) delta_i = rowsum(dO_i * O_i)
        delta = torch.empty_like(lse)
        pre_m = 64
        bwd._attn_bwd_preprocess[(triton.cdiv(n_q, pre_m), b * h)](
            out, do, delta, *out.stride()[:3], *do.stride()[:3], h, n_q,
            HEAD_DIM=d, BLOCK_D=meta["BLOCK_D"], BLOCK_M=pre_m, **LAUNCH_OPTIONS,
        )
        dk = torch.empty(k.shape, device=q.device, dtype=k.dtype)
        dv = torch.empty(v.shape, device=q.device, dtype=v.dtype)
        # fp32 dQ accumulator for the atomic path (a dummy pointer for the deterministic one)
        dq_acc = (lse if deterministic else
                  torch.zeros((b, h, n_q, d), device=q.device, dtype=torch.float32))
        strides = (*q.stride()[:3], *k.stride()[:3], *v.stride()[:3], *do.stride()[:3])
        # 2) dK, dV per key block (+ dQ by atomics)
        _launch(
            "bwd_kv" if deterministic else "bwd",
            lambda bm, bn: (triton.cdiv(n_k, bn), b * h),
            (q, k, v, do, lse, delta, dk, dv, dq_acc, klen, *strides, *dk.stride()[:3],
             *dv.stride()[:3], h, n_q, n_k, n_bucket, qk_scale, scale),
            meta, blocks,
        )
        if not deterministic:
            dq = dq_acc.mul_(scale)
            return (dq if q.dtype == torch.float32 else dq.to(q.dtype)), dk, dv
        # 3) dQ per query block, fixed order
        dq = torch.empty(q.shape, device=q.device, dtype=q.dtype)
        _launch(
            "bwd_dq",
            lambda bm, bn: (triton.cdiv(n_q, bm), b * h),
            (q, k, v, do, lse, delta, dq, klen, *strides, *dq.stride()[:3],
             h, n_q, n_k, n_bucket, qk_scale, scale),
            meta, blocks,
        )
    return dq, dk, dv


# --------------------------------------------------------------------------------------------
# Autograd
# --------------------------------------------------------------------------------------------
class FlashAttentionFunction(torch.autograd.Function):
    """Differentiable w.r.t. q, k, v; the statistics are non-differentiable extra outputs."""

    @staticmethod
    def forward(ctx, q, k, v, key_lengths, causal, scale, num_prefix, stats, blocks,
                deterministic):
        out, lse, st = flash_attention_forward(
            q, k, v, causal=causal, key_lengths=key_lengths, scale=scale,
            num_prefix=num_prefix, stats=stats, blocks=blocks,
        )
        ctx.save_for_backward(q, k, v, out, lse, key_lengths)
        ctx.causal, ctx.scale, ctx.blocks = causal, scale, blocks
        ctx.deterministic = deterministic
        if st is None:
            return out
        ctx.mark_non_differentiable(*st.as_tuple())
        return (out, *st.as_tuple())

    @staticmethod
    def backward(ctx, do, *_stat_grads):
        q, k, v, out, lse, key_lengths = ctx.saved_tensors
        dq, dk, dv = flash_attention_backward(
            do, q, k, v, out, lse, causal=ctx.causal, key_lengths=key_lengths, scale=ctx.scale,
            blocks=ctx.blocks, deterministic=ctx.deterministic,
        )
        return dq, dk, dv, None, None, None, None, None, None, None


def triton_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    stats: bool = False,
    causal: bool,
    key_lengths: torch.Tensor | None = None,
    scale: float | None = None,
    num_prefix: int = 0,
    blocks: Blocks = None,
    deterministic: bool | None = None,
) -> tuple[torch.Tensor, AttentionStats | None]:
    """Flash attention over ``(B, H, N, D)``; returns ``(out, stats or None)``.

    ``out`` has q's dtype and is differentiable w.r.t. q, k, v. ``key_lengths`` (B,) int marks
    keys ``>= key_lengths[b]`` as padding; ``num_prefix`` leading keys count as prefix/register
    tokens. Statistics follow :func:`tslayers.kernels.reference.stats_from_probs` exactly.
    ``deterministic``: see :func:`flash_attention_backward`.
    """
    _check(q, k, v, key_lengths)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    lengths = _lengths(key_lengths, q)
    res = FlashAttentionFunction.apply(
        q, k, v, lengths, bool(causal), scale, int(num_prefix), bool(stats), blocks, deterministic
    )
    if not stats:
        return res, None
    out, *st = res
    return out, AttentionStats(*st)
