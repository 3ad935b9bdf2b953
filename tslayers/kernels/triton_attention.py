"""Fused flash attention in Triton: launchers, tuning plans and the autograd wrapper.

:func:`triton_attention` is what :func:`tslayers.kernels.attention` calls for ``backend="triton"``.
The kernels themselves, explained step by step, are in
:mod:`tslayers.kernels.triton_attention_kernels`:

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

Tuning. Each kernel has a *plan*: per head-dim bucket (<= 64, <= 128, <= 256) the tiles
``(BLOCK_M, BLOCK_N, num_warps, num_stages)`` that compile for sm_90 without register spills
where one exists (``python -m tslayers.kernels.resources`` prints them with their shared memory,
registers and spills; ``tests/kernels/test_resources.py`` checks them). The autotuner, keyed on
(N rounded up to a power of two, head dim, causal, dtype, dot precision), only sees the tiles of
the plan that fit the sequence (64- and 32-row tiles for short N) and the device's shared memory
with the real element size; if none fits it raises with the numbers.

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
import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import triton
from triton.runtime.jit import JITFunction

from . import triton_attention_kernels as kern
from .reference import AttentionStats, check_key_lengths

# The kernels were decorated while TRITON_INTERPRET=1: they run on CPU tensors, one program at a
# time. (Triton decides this when a kernel is defined, not when it is called.)
INTERPRETED: bool = not isinstance(kern._attn_fwd, JITFunction)
# (BLOCK_M, BLOCK_N) used by every kernel under the interpreter (tests may pass ``blocks=``).
INTERPRETER_BLOCKS: tuple[int, int] = (32, 16)
MAX_HEAD_DIM = 256
# Shared memory one block may opt into on H100/H200; the device's own value is used on CUDA.
DEFAULT_SMEM_LIMIT = 232_448
# Compile options every launch sets explicitly: the online softmax relies on fused multiply-adds
# (``qk * scale - m``), and Triton's default for ``enable_fp_fusion`` is changing (3.10: off).
LAUNCH_OPTIONS = dict(enable_fp_fusion=True)

Blocks = tuple[int, int] | None
Tile = tuple[int, int, int, int]  # (BLOCK_M, BLOCK_N, num_warps, num_stages)


# --------------------------------------------------------------------------------------------
# Tuning plans
# --------------------------------------------------------------------------------------------
# BLOCK_M always counts queries and BLOCK_N keys. Every tile listed for D <= 64 and D <= 128
# compiles spill-free in bf16/fp16 for sm_90 with Triton 3.6 and 3.9 (see the module docstring).
# For D <= 256 every tile fits; the forward ones are spill-free, the larger backward ones spill
# a little and the autotuner weighs that against their fewer, larger tiles.
PLANS: dict[str, dict[int, list[Tile]]] = {
    # Q resident, K and V streamed
    "fwd": {
        64: [(128, 128, 8, 3), (128, 64, 8, 3), (64, 64, 4, 3), (64, 32, 4, 3), (32, 32, 4, 2)],
        128: [(128, 64, 8, 3), (64, 64, 4, 3), (64, 32, 4, 3), (32, 32, 4, 2)],
        256: [(128, 32, 8, 2), (64, 32, 8, 2), (32, 32, 4, 2)],
    },
    # the statistics carry extra row state: smaller tiles than the plain forward
    "fwd_stats": {
        64: [(128, 64, 8, 3), (64, 64, 4, 3), (64, 32, 4, 3), (32, 32, 4, 2)],
        128: [(128, 64, 8, 3), (64, 64, 8, 3), (64, 32, 4, 3), (32, 32, 4, 2)],
        256: [(128, 32, 8, 2), (64, 32, 8, 2), (32, 32, 8, 2)],
    },
    # K resident, Q streamed
    "received": {
        64: [(64, 128, 8, 3), (32, 128, 4, 3), (32, 64, 4, 3), (32, 32, 4, 2)],
        128: [(64, 128, 8, 3), (32, 128, 4, 3), (32, 64, 4, 3), (32, 32, 4, 2)],
        256: [(32, 128, 8, 2), (32, 64, 4, 2), (32, 32, 4, 2)],
    },
    # FlashAttention-2 backward: K, V resident, Q and dO streamed, dQ by atomics
    "bwd": {
        64: [(64, 128, 8, 3), (64, 64, 8, 2), (32, 64, 8, 3), (32, 32, 4, 2)],
        128: [(32, 128, 8, 3), (32, 64, 8, 3), (32, 32, 8, 2)],
        256: [(32, 64, 8, 2), (32, 32, 8, 2), (32, 32, 8, 1)],  # the last: fp32 inputs
    },
    # deterministic backward: the same dK/dV pass without dQ, then a dQ pass
    "bwd_kv": {
        64: [(32, 128, 8, 3), (64, 64, 4, 3), (32, 32, 4, 2)],
        128: [(32, 128, 8, 3), (32, 64, 8, 3), (32, 32, 8, 2)],
        256: [(32, 64, 8, 2), (32, 32, 8, 2), (32, 32, 8, 1)],
    },
    "bwd_dq": {  # Q and dO resident, K and V streamed
        64: [(128, 32, 4, 3), (64, 64, 4, 3), (32, 32, 4, 2)],
        128: [(128, 32, 8, 3), (64, 32, 4, 3), (32, 32, 4, 2)],
        256: [(128, 32, 8, 2), (32, 32, 4, 2)],
    },
}


def smem_bytes(kernel: str, tile: Tile, block_d: int, elem_size: int) -> int:
    """Shared memory a tile needs: the operand tiles Triton stages (``num_stages`` buffers for
    streamed ones), at the input's element size. Matches the sm_90 compiler exactly for the
    forward kernels; for the backward ones, which also stage transposed operands and the dS tile
    in ways that vary with the tile, it is an upper bound fitted to the compiler's numbers (the
    resource test checks that it stays one)."""
    bm, bn, _, stages = tile
    if kernel in ("fwd", "fwd_stats"):
        return elem_size * block_d * (bm + 2 * bn * stages)
    if kernel == "received":
        return elem_size * block_d * (bn + bm * stages)
    if kernel in ("bwd", "bwd_kv"):
        return elem_size * (block_d * (2 * bn + 2 * bm * stages + 2 * max(bm, bn)) + bm * bn)
    if kernel == "bwd_dq":
        return elem_size * block_d * (2 * bm + 2 * bn * stages)
    raise KeyError(kernel)


def _bucket(block_d: int) -> int:
    return 64 if block_d <= 64 else (128 if block_d <= 128 else 256)


def offered_tiles(
    kernel: str, block_d: int, elem_size: int, n_q: int, n_k: int, smem_limit: int
) -> list[Tile]:
    """The plan's tiles the autotuner may try for this problem.

    Tiles longer than the sequence (rounded up to a power of two) are dropped -- short sequences
    get the 64- and 32-row tiles -- and so are tiles under half the largest useful size (they
    only cost compile time on long sequences), and tiles that do not fit in shared memory.
    Raises ``ValueError`` with the numbers when nothing fits."""
    plan = PLANS[kernel][_bucket(block_d)]
    n_q2, n_k2 = triton.next_power_of_2(max(1, n_q)), triton.next_power_of_2(max(1, n_k))
    max_m = max(min(n_q2, t[0]) for t in plan)
    max_n = max(min(n_k2, t[1]) for t in plan)
    sized = [t for t in plan if max_m // 2 <= t[0] <= max(max_m, 32)
             and max_n // 2 <= t[1] <= max(max_n, 32)]
    sized = sized or plan
    fits = [t for t in sized if smem_bytes(kernel, t, block_d, elem_size) <= smem_limit]
    if not fits:
        fits = [t for t in plan if smem_bytes(kernel, t, block_d, elem_size) <= smem_limit]
    if not fits:
        need = min(smem_bytes(kernel, t, block_d, elem_size) for t in plan)
        raise ValueError(
            f"no {kernel} tile fits in shared memory for head dim {block_d} with "
            f"{elem_size}-byte elements: the smallest needs {need:,} B, the device offers "
            f"{smem_limit:,} B per block"
        )
    return fits


@functools.cache
def smem_limit(device_index: int | None) -> int:
    """Opt-in shared memory per block of a CUDA device (the H100/H200 value otherwise)."""
    if device_index is None or not torch.cuda.is_available():
        return DEFAULT_SMEM_LIMIT
    props = torch.cuda.get_device_properties(device_index)
    return int(getattr(props, "shared_memory_per_block_optin", DEFAULT_SMEM_LIMIT))


def _all_tiles(kernel: str) -> list[Tile]:
    return sorted({t for tiles in PLANS[kernel].values() for t in tiles}, reverse=True)


def _configs(kernel: str) -> list[triton.Config]:
    """Every tile of a kernel's plan as a config; one fixed config under the interpreter."""
    tiles = [(*INTERPRETER_BLOCKS, 4, 1)] if INTERPRETED else _all_tiles(kernel)
    return [
        triton.Config({"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=w, num_stages=s)
        for bm, bn, w, s in tiles
    ]


def _pruner(kernel: str) -> dict:
    """``prune_configs_by`` that keeps :func:`offered_tiles` of the problem at hand."""

    def prune(configs: list[triton.Config], named_args: dict, **kwargs) -> list[triton.Config]:
        args = {**named_args, **kwargs}
        q = args["Q"]
        device = q.device.index if q.device.type == "cuda" else None
        keep = set(offered_tiles(kernel, int(args["BLOCK_D"]), q.element_size(),
                                 int(args["N_Q"]), int(args["N_K"]), smem_limit(device)))
        return [c for c in configs
                if (c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"], c.num_warps, c.num_stages) in keep]

    return {"early_config_prune": prune}


# The key also gets the tensor dtypes (Triton adds them).
_KEY = ["N_BUCKET", "HEAD_DIM", "CAUSAL", "DOT_PRECISION"]


def _tuned(kernel: str, fn, **extra) -> Callable:
    return triton.autotune(configs=_configs(kernel), key=_KEY, prune_configs_by=_pruner(kernel),
                           **extra)(fn)


_TUNED = {
    "fwd": _tuned("fwd", kern._attn_fwd),
    "fwd_stats": _tuned("fwd_stats", kern._attn_fwd),
    "received": _tuned("received", kern._attn_received),
    # the autotuner runs the kernel several times: the atomic dQ buffer must restart at zero
    "bwd": _tuned("bwd", kern._attn_bwd_kv, reset_to_zero=["DQ_ACC"]),
    "bwd_kv": _tuned("bwd_kv", kern._attn_bwd_kv),
    "bwd_dq": _tuned("bwd_dq", kern._attn_bwd_dq),
}
_KERNELS = {"fwd": kern._attn_fwd, "fwd_stats": kern._attn_fwd, "received": kern._attn_received,
            "bwd": kern._attn_bwd_kv, "bwd_kv": kern._attn_bwd_kv, "bwd_dq": kern._attn_bwd_dq}
_FIXED_META = {"fwd": dict(STATS=False), "fwd_stats": dict(STATS=True),
               "bwd": dict(ATOMIC_DQ=True), "bwd_kv": dict(ATOMIC_DQ=False)}


@dataclass(frozen=True)
class KernelSpec:
    """One kernel + constexprs + tile, as the launchers would compile it (for resource checks)."""

    name: str
    fn: object
    constexprs: dict
    block_m: int
    block_n: int
    num_warps: int
    num_stages: int


def kernel_specs(head_dim: int, dtype: str, n: int, *, causal: bool = True,
                 every_config: bool = False) -> list[KernelSpec]:
    """The tiles the autotuner would try for an ``(N = n, D = head_dim)`` problem of ``dtype``
    ("bf16", "fp16", "fp32") on an H100/H200, per kernel; all plan tiles with ``every_config``."""
    elem = {"bf16": 2, "fp16": 2, "fp32": 4}[dtype]
    block_d = max(16, triton.next_power_of_2(head_dim))
    precision = dot_precision(torch.float32, interpreted=False)
    specs = []
    for name, fn in _KERNELS.items():
        tiles = (PLANS[name][_bucket(block_d)] if every_config
                 else offered_tiles(name, block_d, elem, n, n, DEFAULT_SMEM_LIMIT))
        consts = dict(HEAD_DIM=head_dim, BLOCK_D=block_d, CAUSAL=causal, HAS_LENGTHS=False,
                      DOT_PRECISION=precision, **_FIXED_META.get(name, {}))
        for bm, bn, w, s in tiles:
            specs.append(KernelSpec(name, fn, consts, bm, bn, w, s))
    return specs


def _launch(
    name: str,
    grid: Callable[[int, int], tuple[int, ...]],
    args: Sequence,
    meta: dict,
    blocks: Blocks,
) -> None:
    """Run kernel ``name`` autotuned on CUDA, or with fixed blocks when ``blocks`` is given or
    under the interpreter. ``grid(BLOCK_M, BLOCK_N)`` gives the launch grid."""
    meta = {**meta, **_FIXED_META.get(name, {}), **LAUNCH_OPTIONS}
    if blocks is None and not INTERPRETED:
        _TUNED[name][lambda m: grid(m["BLOCK_M"], m["BLOCK_N"])](*args, **meta)
        return
    bm, bn = blocks if blocks is not None else INTERPRETER_BLOCKS
    extra = {}
    if not INTERPRETED:
        extra = {"num_warps": 4 if bm * bn <= 64 * 64 else 8, "num_stages": 2}
        q = args[0]
        need = smem_bytes(name, (bm, bn, extra["num_warps"], 2), meta["BLOCK_D"],
                          q.element_size())
        limit = smem_limit(q.device.index)
        if need > limit:
            raise ValueError(f"blocks={blocks} need ~{need:,} B of shared memory for {name} at "
                             f"head dim {meta['HEAD_DIM']}; the device offers {limit:,} B")
    _KERNELS[name][grid(bm, bn)](*args, **meta, BLOCK_M=bm, BLOCK_N=bn, **extra)


# --------------------------------------------------------------------------------------------
# Input preparation
# --------------------------------------------------------------------------------------------
def _unit_stride(x: torch.Tensor) -> torch.Tensor:
    """The kernels index (B, H, N, D) through strides but need D contiguous."""
    return x if x.stride(-1) == 1 else x.contiguous()


def dot_precision(dtype: torch.dtype, interpreted: bool = INTERPRETED) -> str:
    """``input_precision`` of the kernels' dots: TF32 tensor cores (16-bit inputs are exact
    products either way). "ieee" only under the interpreter, which computes exactly anyway."""
    return "ieee" if interpreted else "tf32"


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
        kern._attn_bwd_preprocess[(triton.cdiv(n_q, pre_m), b * h)](
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
