"""Triton kernels for fused (flash) attention: conventions and the tile helpers every kernel
shares (loading, storing and addressing tiles; the key and query ranges a block visits).

Only ``triton`` is imported here. The kernels are in :mod:`tslayers.kernels.triton_forward` and
:mod:`tslayers.kernels.triton_backward`, the tuning plans and launcher in
:mod:`tslayers.kernels.triton_tuning`, the autograd wrapper in
:mod:`tslayers.kernels.triton_attention`. Conventions (shared with ``reference.py``):

* tensors are ``(B, H, N, D)`` with a unit stride on ``D``; one program handles one row block of
  one ``(batch, head)`` pair, selected by ``program_id(1) = b * H + h``;
* ``kv_len = key_lengths[b]`` keys are valid (the rest is padding, never loaded in masked blocks,
  so NaN padding cannot leak); ``CAUSAL`` lets query ``i`` see keys ``j <= i``; key 0 is always
  visible, so no row is ever empty;
* scores are kept in base 2: ``t = (q . k) * scale * log2(e)``, so ``exp`` becomes the cheaper
  ``exp2``; the saved log-sum-exp ``LSE`` is in natural units (like the reference).
* addresses: the (batch, head, first row) part of an offset is int64 (``N * stride`` can pass
  2**31 on long sequences of wide models); only offsets within one tile stay int32.

Kernels: ``_attn_fwd`` (forward, ``STATS`` adds the per-query statistics), ``_attn_received``
(mass each key receives), ``_attn_bwd_preprocess`` (``delta``), ``_attn_bwd_kv`` (dK, dV; with
``ATOMIC_DQ`` also dQ by atomics: the FlashAttention-2 backward) and ``_attn_bwd_dq`` (the
fixed-order dQ pass of the deterministic backward).

Every kernel walks its loop in *stages*: blocks that need no mask at all (the bulk) run a loop
specialised with ``MASKED=False``; only boundary blocks (the causal diagonal, padding, a ragged
last block) pay for the masks. The statistics are a ``STATS`` constexpr switch, so the plain
kernel compiles without a single extra instruction.
"""

import triton
import triton.language as tl

LOG2E = tl.constexpr(1.4426950408889634)
LN2 = tl.constexpr(0.6931471805599453)
# Finite "minus infinity" for masked scores: exp2 of it is exactly 0, and 0 * it is 0, not NaN.
MASKED_SCORE = tl.constexpr(-1.0e30)


@triton.jit
def _load_tile(
    ptrs,
    rows,
    n_rows,
    offs_d,
    HEAD_DIM: tl.constexpr,
    BLOCK_D: tl.constexpr,
    MASK_ROWS: tl.constexpr,
):
    """Load a ``(len(rows), BLOCK_D)`` tile, zero-filling rows ``>= n_rows`` when ``MASK_ROWS``
    and the columns ``>= HEAD_DIM`` when the head dim is not a power of two."""
    if MASK_ROWS:
        if BLOCK_D == HEAD_DIM:
            x = tl.load(ptrs, mask=rows[:, None] < n_rows, other=0.0)
        else:
            x = tl.load(ptrs, mask=(rows[:, None] < n_rows) & (offs_d[None, :] < HEAD_DIM),
                        other=0.0)
    else:
        if BLOCK_D == HEAD_DIM:
            x = tl.load(ptrs)
        else:
            x = tl.load(ptrs, mask=offs_d[None, :] < HEAD_DIM, other=0.0)
    return x


@triton.jit
def _store_tile(
    ptrs, x, rows, n_rows, offs_d, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr
):
    if BLOCK_D == HEAD_DIM:
        tl.store(ptrs, x, mask=rows[:, None] < n_rows)
    else:
        tl.store(ptrs, x, mask=(rows[:, None] < n_rows) & (offs_d[None, :] < HEAD_DIM))


@triton.jit
def _key_length(KEY_LENGTHS, off_b, N_K, HAS_LENGTHS: tl.constexpr):
    """Valid keys of sequence ``off_b``, clamped to ``[1, N_K]``: the launchers validate the
    lengths, the clamp only guarantees that a bad one can never read outside this sequence."""
    if HAS_LENGTHS:
        kv_len = tl.minimum(tl.maximum(tl.load(KEY_LENGTHS + off_b), 1), N_K)
    else:
        kv_len = N_K
    return kv_len


@triton.jit
def _tile_ptrs(BASE, off_b, off_h, stride_b, stride_h, stride_n, start, offs, offs_d):
    """Pointers to rows ``start + offs`` of one (batch, head) of a ``(B, H, N, D)`` tensor.

    The scalar part (batch, head, first row) is computed in int64: ``N * stride_n`` can exceed
    2**31 for long sequences of a wide model; the per-row part ``offs`` (< one tile) stays int32.
    """
    base = (off_b.to(tl.int64) * stride_b + off_h.to(tl.int64) * stride_h
            + tl.cast(start, tl.int64) * stride_n)
    return BASE + base + offs[:, None] * stride_n + offs_d[None, :]


@triton.jit
def _key_range(start_m, kv_len, CAUSAL: tl.constexpr, BLOCK_M: tl.constexpr,
               BLOCK_N: tl.constexpr):
    """Key blocks seen by the query block starting at ``start_m``: ``[0, full_end)`` needs no mask
    (every key is valid and, if causal, ``j <= start_m``), ``[full_end, kv_end)`` does."""
    if CAUSAL:
        kv_end = tl.minimum(kv_len, start_m + BLOCK_M)
        full_end = tl.minimum(kv_len, start_m + 1) // BLOCK_N * BLOCK_N
    else:
        kv_end = kv_len
        full_end = kv_len // BLOCK_N * BLOCK_N
    return full_end, kv_end


@triton.jit
def _query_range(start_n, kv_len, q_hi, CAUSAL: tl.constexpr, BLOCK_M: tl.constexpr,
                 BLOCK_N: tl.constexpr):
    """Query blocks that see the key block starting at ``start_n`` (queries ``< q_hi``), split as
    masked ``[lo, a_hi)``, unmasked ``[a_hi, q_full)`` and masked ``[c_lo, q_ceil)``."""
    q_ceil = tl.cdiv(q_hi, BLOCK_M) * BLOCK_M
    q_full = q_hi // BLOCK_M * BLOCK_M
    if CAUSAL:
        lo = start_n // BLOCK_M * BLOCK_M  # earlier queries cannot see these keys
        diag_end = tl.cdiv(start_n + BLOCK_N - 1, BLOCK_M) * BLOCK_M  # then every row sees all
    else:
        lo = start_n * 0
        diag_end = start_n * 0
    # A key block that holds padding masks every query block; one past the length has no work.
    diag_end = tl.where(start_n + BLOCK_N > kv_len, q_ceil, diag_end)
    lo = tl.where(start_n >= kv_len, q_ceil, tl.minimum(lo, q_ceil))
    a_hi = tl.minimum(tl.maximum(diag_end, lo), q_ceil)
    c_lo = tl.maximum(a_hi, q_full)
    return lo, a_hi, q_full, c_lo, q_ceil
