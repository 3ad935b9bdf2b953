"""Tuning plans, the autotuner wiring and the kernel launcher of the Triton attention.

Each kernel has a *plan*: per head-dim bucket (<= 64, <= 128, <= 256) the tiles
``(BLOCK_M, BLOCK_N, num_warps, num_stages)`` that compile for sm_90 without register spills
where one exists (``python -m tslayers.kernels.resources`` prints them with their shared memory,
registers and spills; ``tests/kernels/test_resources.py`` checks them). The autotuner, keyed on
(N rounded up to a power of two, head dim, causal, dtype, dot precision), only sees the tiles of
the plan that fit the sequence (64- and 32-row tiles for short N) and the device's shared memory
with the real element size; if none fits it raises with the numbers.

Importable with only torch and triton.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import triton
from triton.runtime.jit import JITFunction

from . import triton_backward as bwd
from . import triton_forward as fwd

# The kernels were decorated while TRITON_INTERPRET=1: they run on CPU tensors, one program at a
# time. (Triton decides this when a kernel is defined, not when it is called.)
INTERPRETED: bool = not isinstance(fwd._attn_fwd, JITFunction)
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


def dot_precision(dtype: torch.dtype, interpreted: bool = INTERPRETED) -> str:
    """``input_precision`` of the kernels' dots: TF32 tensor cores (16-bit inputs are exact
    products either way). "ieee" only under the interpreter, which computes exactly anyway."""
    return "ieee" if interpreted else "tf32"


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
    "fwd": _tuned("fwd", fwd._attn_fwd),
    "fwd_stats": _tuned("fwd_stats", fwd._attn_fwd),
    "received": _tuned("received", fwd._attn_received),
    # the autotuner runs the kernel several times: the atomic dQ buffer must restart at zero
    "bwd": _tuned("bwd", bwd._attn_bwd_kv, reset_to_zero=["DQ_ACC"]),
    "bwd_kv": _tuned("bwd_kv", bwd._attn_bwd_kv),
    "bwd_dq": _tuned("bwd_dq", bwd._attn_bwd_dq),
}
_KERNELS = {"fwd": fwd._attn_fwd, "fwd_stats": fwd._attn_fwd, "received": fwd._attn_received,
            "bwd": bwd._attn_bwd_kv, "bwd_kv": bwd._attn_bwd_kv, "bwd_dq": bwd._attn_bwd_dq}
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
