"""Fused flash attention in Triton: launchers, autotuning and the autograd wrapper.

:func:`triton_attention` is what :func:`tslayers.kernels.attention` calls for ``backend="triton"``.
The kernels themselves, explained step by step, are in
:mod:`tslayers.kernels.triton_attention_kernels`:

1. forward: online softmax over key blocks (base-2 exponentials, the log2(e) folded into the
   scale), fp32 accumulation, causal block skipping with a separate masked diagonal stage; saves
   the log-sum-exp. With ``stats=True`` the same pass also carries the per-query statistics
   (entropy, mean distance, prefix mass); a second light pass per key block reuses the saved
   log-sum-exp for the mass each key receives;
2. backward: ``delta = rowsum(dO * O)``, then one kernel for dK/dV (key blocks resident, query
   blocks streamed) and one for dQ, both recomputing the probabilities from the log-sum-exp.

On CUDA every kernel is autotuned over a handful of configs keyed on (N rounded up to a power of
two, head dim, causal, dtype); the statistics kernel reuses the plain forward's tile. Under the
Triton interpreter (``TRITON_INTERPRET=1`` set before this module is imported; CPU tensors) one
small fixed block shape is used.

Importable with only torch and triton (plus this package's ``kernels`` modules).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import triton
from triton.runtime.jit import JITFunction

from . import triton_attention_kernels as kern
from .reference import AttentionStats

# The kernels were decorated while TRITON_INTERPRET=1: they run on CPU tensors, one program at a
# time. (Triton decides this when a kernel is defined, not when it is called.)
INTERPRETED: bool = not isinstance(kern._attn_fwd, JITFunction)
# (BLOCK_M, BLOCK_N) used by every kernel under the interpreter (tests may pass ``blocks=``).
INTERPRETER_BLOCKS: tuple[int, int] = (32, 16)
MAX_HEAD_DIM = 256

Blocks = tuple[int, int] | None


# --------------------------------------------------------------------------------------------
# Autotuning
# --------------------------------------------------------------------------------------------
def _configs(shapes: Sequence[tuple[int, int, int, int]]) -> list[triton.Config]:
    """(BLOCK_M, BLOCK_N, num_warps, num_stages) -> configs; one config under the interpreter."""
    if INTERPRETED:
        shapes = [(*INTERPRETER_BLOCKS, 4, 1)]
    return [
        triton.Config({"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=w, num_stages=s)
        for bm, bn, w, s in shapes
    ]


def _pruner(resident: str, n_resident: int, n_streamed: int) -> dict:
    """``prune_configs_by`` for a kernel keeping ``n_resident`` tiles of BLOCK_<resident> rows and
    streaming ``n_streamed`` tiles of the other block size through a ``num_stages`` pipeline.

    Drops tiles larger than the sequence and tile x pipeline depths that cannot fit in shared
    memory (they would only fail to compile, and compiling is the slow part of autotuning)."""

    def prune(configs: list[triton.Config], named_args: dict, **kwargs) -> list[triton.Config]:
        args = {**named_args, **kwargs}
        n_q = max(16, triton.next_power_of_2(int(args["N_Q"])))
        n_k = max(16, triton.next_power_of_2(int(args["N_K"])))
        block_d = int(args["BLOCK_D"])
        kept = []
        for c in configs:
            bm, bn = c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"]
            res, streamed = (bm, bn) if resident == "M" else (bn, bm)
            smem = 2 * block_d * (n_resident * res + n_streamed * streamed * c.num_stages)
            if bm <= n_q and bn <= n_k and smem <= _SMEM_BUDGET:
                kept.append(c)
        return kept or [min(configs, key=lambda c: c.kwargs["BLOCK_M"] * c.kwargs["BLOCK_N"])]

    return {"early_config_prune": prune}


_SMEM_BUDGET = 200 * 1024  # bytes of 16-bit tiles; Hopper offers ~227 KB per block
# The key also gets the tensor dtypes (Triton adds them). The statistics switch is *not* in the
# forward key: the stats kernel reuses the plain kernel's tile, which keeps the number of
# compilations (and the first call) small; its extra work is light elementwise math.
_KEY = ["N_BUCKET", "HEAD_DIM", "CAUSAL"]

# Forward: BLOCK_M queries resident, BLOCK_N keys streamed.
_attn_fwd_tuned = triton.autotune(
    configs=_configs([(128, 64, 8, 3), (128, 128, 8, 2), (128, 128, 8, 3), (128, 64, 4, 3)]),
    key=_KEY, prune_configs_by=_pruner("M", 1, 2),  # Q resident; K, V streamed
)(kern._attn_fwd)
# Received mass: BLOCK_N keys resident, BLOCK_M queries streamed.
_attn_received_tuned = triton.autotune(
    configs=_configs([(64, 128, 8, 3), (32, 128, 4, 3)]),
    key=_KEY, prune_configs_by=_pruner("N", 1, 1),  # K resident; Q streamed
)(kern._attn_received)
# dK/dV: BLOCK_N keys resident, BLOCK_M queries streamed.
_attn_bwd_dkdv_tuned = triton.autotune(
    configs=_configs([(32, 128, 4, 3), (64, 128, 8, 3), (64, 64, 4, 3)]),
    key=_KEY, prune_configs_by=_pruner("N", 2, 2),  # K, V resident; Q, dO streamed
)(kern._attn_bwd_dkdv)
# dQ: BLOCK_M queries resident, BLOCK_N keys streamed.
_attn_bwd_dq_tuned = triton.autotune(
    configs=_configs([(128, 32, 4, 3), (128, 64, 8, 3), (64, 64, 4, 3)]),
    key=_KEY, prune_configs_by=_pruner("M", 2, 2),  # Q, dO resident; K, V streamed
)(kern._attn_bwd_dq)


def _launch(
    kernel,
    tuned,
    grid: Callable[[int, int], tuple[int, ...]],
    args: Sequence,
    meta: dict,
    blocks: Blocks,
) -> None:
    """Run ``tuned`` (autotuned) on CUDA, or ``kernel`` with fixed blocks when ``blocks`` is given
    or under the interpreter. ``grid(BLOCK_M, BLOCK_N)`` gives the launch grid."""
    if blocks is None and not INTERPRETED:
        tuned[lambda m: grid(m["BLOCK_M"], m["BLOCK_N"])](*args, **meta)
        return
    bm, bn = blocks if blocks is not None else INTERPRETER_BLOCKS
    extra = {} if INTERPRETED else {"num_warps": 4 if bm * bn <= 64 * 64 else 8, "num_stages": 2}
    kernel[grid(bm, bn)](*args, **meta, BLOCK_M=bm, BLOCK_N=bn, **extra)


# --------------------------------------------------------------------------------------------
# Input preparation
# --------------------------------------------------------------------------------------------
def _unit_stride(x: torch.Tensor) -> torch.Tensor:
    """The kernels index (B, H, N, D) through strides but need D contiguous."""
    return x if x.stride(-1) == 1 else x.contiguous()


def _dot_precision(dtype: torch.dtype) -> str:
    if INTERPRETED:
        return "ieee"
    if dtype == torch.float32 and torch.get_float32_matmul_precision() == "highest":
        return "ieee"
    return "tf32"  # only affects fp32 inputs; fp16/bf16 dots are exact products anyway


def _check(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
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
    if q.device.type != "cuda" and not INTERPRETED:
        raise RuntimeError(
            "the Triton attention kernels need CUDA tensors; for CPU tensors set TRITON_INTERPRET=1"
            " before importing tslayers.kernels.triton_attention (slow, for tests)"
        )


def _lengths(key_lengths: torch.Tensor | None, q: torch.Tensor) -> torch.Tensor | None:
    if key_lengths is None:
        return None
    return key_lengths.to(device=q.device, dtype=torch.int32).contiguous()


def _common_meta(q: torch.Tensor, causal: bool, has_lengths: bool) -> dict:
    d = q.shape[-1]
    return dict(
        HEAD_DIM=d,
        BLOCK_D=max(16, triton.next_power_of_2(d)),
        CAUSAL=bool(causal),
        HAS_LENGTHS=has_lengths,
        DOT_PRECISION=_dot_precision(q.dtype),
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
    _check(q, k, v)
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
    _launch(
        kern._attn_fwd, _attn_fwd_tuned,
        lambda bm, bn: (triton.cdiv(n_q, bm), b * h),
        (q, k, v, out, lse, ent, dist, pref, klen,
         *q.stride()[:3], *k.stride()[:3], *v.stride()[:3], *out.stride()[:3],
         h, n_q, n_k, n_bucket, qk_scale, int(num_prefix)),
        dict(STATS=bool(stats), **meta), blocks,
    )
    if not stats:
        return out, lse, None
    recv = torch.full((b, h, n_k), float("nan"), **f32)
    if received:
        _launch(
            kern._attn_received, _attn_received_tuned,
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
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients ``(dq, dk, dv)`` from the saved output and log-sum-exp."""
    q, k, v, out, do = (_unit_stride(t) for t in (q, k, v, out, do))
    do = do.to(q.dtype)
    b, h, n_q, d = q.shape
    n_k = k.shape[2]
    scale = 1.0 / math.sqrt(d) if scale is None else float(scale)
    lengths = _lengths(key_lengths, q)
    meta = _common_meta(q, causal, lengths is not None)
    n_bucket = triton.next_power_of_2(max(n_q, n_k))
    qk_scale = scale * math.log2(math.e)
    klen = lengths if lengths is not None else lse

    # 1) delta_i = rowsum(dO_i * O_i)
    delta = torch.empty_like(lse)
    pre_m = 64
    kern._attn_bwd_preprocess[(triton.cdiv(n_q, pre_m), b * h)](
        out, do, delta, *out.stride()[:3], *do.stride()[:3], h, n_q,
        HEAD_DIM=d, BLOCK_D=meta["BLOCK_D"], BLOCK_M=pre_m,
    )
    dq = torch.empty(q.shape, device=q.device, dtype=q.dtype)
    dk = torch.empty(k.shape, device=q.device, dtype=k.dtype)
    dv = torch.empty(v.shape, device=q.device, dtype=v.dtype)
    strides = (*q.stride()[:3], *k.stride()[:3], *v.stride()[:3], *do.stride()[:3])
    # 2) dK, dV per key block
    _launch(
        kern._attn_bwd_dkdv, _attn_bwd_dkdv_tuned,
        lambda bm, bn: (triton.cdiv(n_k, bn), b * h),
        (q, k, v, do, lse, delta, dk, dv, klen, *strides, *dk.stride()[:3], *dv.stride()[:3],
         h, n_q, n_k, n_bucket, qk_scale, scale),
        meta, blocks,
    )
    # 3) dQ per query block
    _launch(
        kern._attn_bwd_dq, _attn_bwd_dq_tuned,
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
    def forward(ctx, q, k, v, key_lengths, causal, scale, num_prefix, stats, blocks):
        out, lse, st = flash_attention_forward(
            q, k, v, causal=causal, key_lengths=key_lengths, scale=scale,
            num_prefix=num_prefix, stats=stats, blocks=blocks,
        )
        ctx.save_for_backward(q, k, v, out, lse, key_lengths)
        ctx.causal, ctx.scale, ctx.blocks = causal, scale, blocks
        if st is None:
            return out
        ctx.mark_non_differentiable(*st.as_tuple())
        return (out, *st.as_tuple())

    @staticmethod
    def backward(ctx, do, *_stat_grads):
        q, k, v, out, lse, key_lengths = ctx.saved_tensors
        dq, dk, dv = flash_attention_backward(
            do, q, k, v, out, lse, causal=ctx.causal, key_lengths=key_lengths, scale=ctx.scale,
            blocks=ctx.blocks,
        )
        return dq, dk, dv, None, None, None, None, None, None


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
) -> tuple[torch.Tensor, AttentionStats | None]:
    """Flash attention over ``(B, H, N, D)``; returns ``(out, stats or None)``.

    ``out`` has q's dtype and is differentiable w.r.t. q, k, v. ``key_lengths`` (B,) int marks
    keys ``>= key_lengths[b]`` as padding; ``num_prefix`` leading keys count as prefix/register
    tokens. Statistics follow :func:`tslayers.kernels.reference.stats_from_probs` exactly.
    """
    _check(q, k, v)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    lengths = _lengths(key_lengths, q)
    res = FlashAttentionFunction.apply(
        q, k, v, lengths, bool(causal), scale, int(num_prefix), bool(stats), blocks
    )
    if not stats:
        return res, None
    out, *st = res
    return out, AttentionStats(*st)
