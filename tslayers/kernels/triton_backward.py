"""Backward kernels: ``_attn_bwd_preprocess`` (``delta``), ``_attn_bwd_kv`` (dK, dV; with
``ATOMIC_DQ`` also dQ by atomics: the FlashAttention-2 backward) and ``_attn_bwd_dq`` (the
fixed-order dQ pass of the deterministic backward).

Conventions (layout, masking, base-2 scores, int64 offsets) and the shared tile helpers are in
:mod:`tslayers.kernels.triton_tiles`; launchers and tuning in
:mod:`tslayers.kernels.triton_attention` and :mod:`tslayers.kernels.triton_tuning`.
"""

import triton
import triton.language as tl

from .triton_tiles import (
    LOG2E,
    _key_length,
    _key_range,
    _load_tile,
    _query_range,
    _store_tile,
    _tile_ptrs,
)


# --------------------------------------------------------------------------------------------
# Backward
# --------------------------------------------------------------------------------------------
@triton.jit
def _attn_bwd_preprocess(
    O, DO, DELTA,
    stride_ob, stride_oh, stride_on, stride_dob, stride_doh, stride_don,
    H, N_Q,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr,
):
    """``delta_i = sum_d O_id dO_id`` (= sum_j p_ij dP_ij), the softmax-backward row term."""
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    off_b = pid_bh // H
    off_h = pid_bh % H
    rows = tl.arange(0, BLOCK_M)
    offs_m = pid_m * BLOCK_M + rows
    offs_d = tl.arange(0, BLOCK_D)
    o = _load_tile(_tile_ptrs(O, off_b, off_h, stride_ob, stride_oh, stride_on, pid_m * BLOCK_M,
                              rows, offs_d), offs_m, N_Q, offs_d, HEAD_DIM, BLOCK_D, True)
    do = _load_tile(_tile_ptrs(DO, off_b, off_h, stride_dob, stride_doh, stride_don,
                               pid_m * BLOCK_M, rows, offs_d),
                    offs_m, N_Q, offs_d, HEAD_DIM, BLOCK_D, True)
    delta = tl.sum(o.to(tl.float32) * do.to(tl.float32), 1)
    tl.store(DELTA + pid_bh.to(tl.int64) * N_Q + offs_m, delta, mask=offs_m < N_Q)


@triton.jit
def _bwd_kv_inner(
    dk, dv, k, v, q_ptrs, do_ptrs, dq_ptrs, LSE_ROW, DELTA_ROW, stride_qn, stride_don,
    lo, hi, cols, offs_m, offs_d, kv_len, N_Q, qk_scale,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr,
    MASKED: tl.constexpr, CAUSAL: tl.constexpr, DOT_PRECISION: tl.constexpr,
    ATOMIC_DQ: tl.constexpr,
):
    """Accumulate dK, dV of one key block over query blocks ``[lo, hi)``, working with the
    transposed probabilities ``P^T`` (keys x queries) so that no transpose is stored.

    With ``ATOMIC_DQ`` (FlashAttention-2) each query block's share of dQ, ``dS K``, is also added
    to an fp32 buffer with atomics: five matrix products per tile pair and one pass in all,
    against seven and a second pass (``_attn_bwd_dq``) for the deterministic order."""
    q_ptrs += tl.cast(lo, tl.int64) * stride_qn
    do_ptrs += tl.cast(lo, tl.int64) * stride_don
    dq_ptrs += tl.cast(lo, tl.int64) * HEAD_DIM
    for start_m in range(lo, hi, BLOCK_M):
        rows = start_m + offs_m
        q = _load_tile(q_ptrs, rows, N_Q, offs_d, HEAD_DIM, BLOCK_D, MASKED)
        if MASKED:
            lse2 = tl.load(LSE_ROW + rows, mask=rows < N_Q, other=0.0) * LOG2E
        else:
            lse2 = tl.load(LSE_ROW + rows) * LOG2E
        # Recompute P^T = exp(S^T - lse) from the saved log-sum-exp.
        qkT = tl.dot(k, tl.trans(q), input_precision=DOT_PRECISION)
        pT = tl.math.exp2(qkT * qk_scale - lse2[None, :])
        if MASKED:
            allowed = (cols[:, None] < kv_len) & (rows[None, :] < N_Q)
            if CAUSAL:
                allowed = allowed & (cols[:, None] <= rows[None, :])
            pT = tl.where(allowed, pT, 0.0)
        do = _load_tile(do_ptrs, rows, N_Q, offs_d, HEAD_DIM, BLOCK_D, MASKED)
        # dV += P^T dO
        dv = tl.dot(pT.to(do.dtype), do, dv, input_precision=DOT_PRECISION)
        # dS^T = P^T * (dP^T - delta), dP^T = V dO^T;  dK += dS^T Q  (scale applied at the end)
        if MASKED:
            delta = tl.load(DELTA_ROW + rows, mask=rows < N_Q, other=0.0)
        else:
            delta = tl.load(DELTA_ROW + rows)
        dpT = tl.dot(v, tl.trans(do), input_precision=DOT_PRECISION)
        dsT = (pT * (dpT - delta[None, :])).to(q.dtype)
        dk = tl.dot(dsT, q, dk, input_precision=DOT_PRECISION)
        if ATOMIC_DQ:  # dQ_rows += dS K  (fp32; scaled by the launcher)
            dq = tl.dot(tl.trans(dsT), k, input_precision=DOT_PRECISION)
            if MASKED or BLOCK_D != HEAD_DIM:
                tl.atomic_add(dq_ptrs, dq, sem="relaxed",
                              mask=(rows[:, None] < N_Q) & (offs_d[None, :] < HEAD_DIM))
            else:
                tl.atomic_add(dq_ptrs, dq, sem="relaxed")
            dq_ptrs += BLOCK_M * HEAD_DIM
        q_ptrs += BLOCK_M * stride_qn
        do_ptrs += BLOCK_M * stride_don
    return dk, dv


@triton.jit(do_not_specialize=["N_BUCKET"])
def _attn_bwd_kv(
    Q, K, V, DO, LSE, DELTA, DK, DV, DQ_ACC, KEY_LENGTHS,
    stride_qb, stride_qh, stride_qn,
    stride_kb, stride_kh, stride_kn,
    stride_vb, stride_vh, stride_vn,
    stride_dob, stride_doh, stride_don,
    stride_dkb, stride_dkh, stride_dkn,
    stride_dvb, stride_dvh, stride_dvn,
    H, N_Q, N_K, N_BUCKET, qk_scale, sm_scale,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, CAUSAL: tl.constexpr,
    HAS_LENGTHS: tl.constexpr, DOT_PRECISION: tl.constexpr, ATOMIC_DQ: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """One program = one block of BLOCK_N keys: K, V stay on chip while query blocks stream by.
    Padding keys (and keys nobody sees) get exact zeros. With ``ATOMIC_DQ``, also adds the
    unscaled dQ into ``DQ_ACC``, a zeroed contiguous fp32 ``(B, H, N_Q, HEAD_DIM)`` buffer."""
    pid_n = tl.program_id(0)
    pid_bh = tl.program_id(1)
    off_b = pid_bh // H
    off_h = pid_bh % H
    kv_len = _key_length(KEY_LENGTHS, off_b, N_K, HAS_LENGTHS)

    start_n = pid_n * BLOCK_N
    offs_n = tl.arange(0, BLOCK_N)
    cols = start_n + offs_n
    offs_m = tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    q_ptrs = _tile_ptrs(Q, off_b, off_h, stride_qb, stride_qh, stride_qn, 0, offs_m, offs_d)
    do_ptrs = _tile_ptrs(DO, off_b, off_h, stride_dob, stride_doh, stride_don, 0, offs_m, offs_d)
    dq_ptrs = (DQ_ACC + pid_bh.to(tl.int64) * N_Q * HEAD_DIM
               + offs_m[:, None] * HEAD_DIM + offs_d[None, :])
    k = _load_tile(_tile_ptrs(K, off_b, off_h, stride_kb, stride_kh, stride_kn, start_n, offs_n,
                              offs_d), cols, kv_len, offs_d, HEAD_DIM, BLOCK_D, True)
    v = _load_tile(_tile_ptrs(V, off_b, off_h, stride_vb, stride_vh, stride_vn, start_n, offs_n,
                              offs_d), cols, kv_len, offs_d, HEAD_DIM, BLOCK_D, True)
    LSE_ROW = LSE + pid_bh.to(tl.int64) * N_Q
    DELTA_ROW = DELTA + pid_bh.to(tl.int64) * N_Q
    dk = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)

    # masked diagonal / padded-key stage, unmasked bulk, masked ragged last query block
    lo, a_hi, q_full, c_lo, q_ceil = _query_range(start_n, kv_len, N_Q, CAUSAL, BLOCK_M, BLOCK_N)
    dk, dv = _bwd_kv_inner(dk, dv, k, v, q_ptrs, do_ptrs, dq_ptrs, LSE_ROW, DELTA_ROW, stride_qn,
                           stride_don, lo, a_hi, cols, offs_m, offs_d, kv_len, N_Q, qk_scale,
                           HEAD_DIM, BLOCK_D, BLOCK_M, True, CAUSAL, DOT_PRECISION, ATOMIC_DQ)
    dk, dv = _bwd_kv_inner(dk, dv, k, v, q_ptrs, do_ptrs, dq_ptrs, LSE_ROW, DELTA_ROW, stride_qn,
                           stride_don, a_hi, q_full, cols, offs_m, offs_d, kv_len, N_Q,
                           qk_scale, HEAD_DIM, BLOCK_D, BLOCK_M, False, CAUSAL, DOT_PRECISION,
                           ATOMIC_DQ)
    dk, dv = _bwd_kv_inner(dk, dv, k, v, q_ptrs, do_ptrs, dq_ptrs, LSE_ROW, DELTA_ROW, stride_qn,
                           stride_don, c_lo, q_ceil, cols, offs_m, offs_d, kv_len, N_Q,
                           qk_scale, HEAD_DIM, BLOCK_D, BLOCK_M, True, CAUSAL, DOT_PRECISION,
                           ATOMIC_DQ)

    dk_ptrs = _tile_ptrs(DK, off_b, off_h, stride_dkb, stride_dkh, stride_dkn, start_n, offs_n,
                         offs_d)
    dv_ptrs = _tile_ptrs(DV, off_b, off_h, stride_dvb, stride_dvh, stride_dvn, start_n, offs_n,
                         offs_d)
    _store_tile(dk_ptrs, (dk * sm_scale).to(DK.dtype.element_ty), cols, N_K, offs_d, HEAD_DIM,
                BLOCK_D)
    _store_tile(dv_ptrs, dv.to(DV.dtype.element_ty), cols, N_K, offs_d, HEAD_DIM, BLOCK_D)


@triton.jit
def _bwd_dq_inner(
    dq, q, do, lse2, delta, k_ptrs, v_ptrs, stride_kn, stride_vn,
    lo, hi, offs_m, offs_n, offs_d, kv_len, qk_scale,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr,
    MASKED: tl.constexpr, CAUSAL: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    """Accumulate dQ of one query block over key blocks ``[lo, hi)``."""
    k_ptrs += tl.cast(lo, tl.int64) * stride_kn
    v_ptrs += tl.cast(lo, tl.int64) * stride_vn
    for start_n in range(lo, hi, BLOCK_N):
        cols = start_n + offs_n
        k = _load_tile(k_ptrs, cols, kv_len, offs_d, HEAD_DIM, BLOCK_D, MASKED)
        v = _load_tile(v_ptrs, cols, kv_len, offs_d, HEAD_DIM, BLOCK_D, MASKED)
        qk = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION)
        p = tl.math.exp2(qk * qk_scale - lse2[:, None])
        if MASKED:
            allowed = cols[None, :] < kv_len
            if CAUSAL:
                allowed = allowed & (cols[None, :] <= offs_m[:, None])
            p = tl.where(allowed, p, 0.0)
        # dS = P * (dO V^T - delta);  dQ += dS K  (scale applied at the end)
        dp = tl.dot(do, tl.trans(v), input_precision=DOT_PRECISION)
        ds = p * (dp - delta[:, None])
        dq = tl.dot(ds.to(k.dtype), k, dq, input_precision=DOT_PRECISION)
        k_ptrs += BLOCK_N * stride_kn
        v_ptrs += BLOCK_N * stride_vn
    return dq


@triton.jit(do_not_specialize=["N_BUCKET"])
def _attn_bwd_dq(
    Q, K, V, DO, LSE, DELTA, DQ, KEY_LENGTHS,
    stride_qb, stride_qh, stride_qn,
    stride_kb, stride_kh, stride_kn,
    stride_vb, stride_vh, stride_vn,
    stride_dob, stride_doh, stride_don,
    stride_dqb, stride_dqh, stride_dqn,
    H, N_Q, N_K, N_BUCKET, qk_scale, sm_scale,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, CAUSAL: tl.constexpr,
    HAS_LENGTHS: tl.constexpr, DOT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """Deterministic dQ: one program = one block of BLOCK_M queries, same key stages as the
    forward (used with ``_attn_bwd_kv(ATOMIC_DQ=False)``)."""
    pid_m = tl.program_id(0)
    if CAUSAL:
        pid_m = tl.num_programs(0) - 1 - pid_m
    pid_bh = tl.program_id(1)
    off_b = pid_bh // H
    off_h = pid_bh % H
    kv_len = _key_length(KEY_LENGTHS, off_b, N_K, HAS_LENGTHS)

    start_m = pid_m * BLOCK_M
    rows = tl.arange(0, BLOCK_M)
    offs_m = start_m + rows
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    q = _load_tile(_tile_ptrs(Q, off_b, off_h, stride_qb, stride_qh, stride_qn, start_m, rows,
                              offs_d), offs_m, N_Q, offs_d, HEAD_DIM, BLOCK_D, True)
    do = _load_tile(_tile_ptrs(DO, off_b, off_h, stride_dob, stride_doh, stride_don, start_m,
                               rows, offs_d), offs_m, N_Q, offs_d, HEAD_DIM, BLOCK_D, True)
    row_idx = pid_bh.to(tl.int64) * N_Q + offs_m
    lse2 = tl.load(LSE + row_idx, mask=offs_m < N_Q, other=0.0) * LOG2E
    delta = tl.load(DELTA + row_idx, mask=offs_m < N_Q, other=0.0)
    k_ptrs = _tile_ptrs(K, off_b, off_h, stride_kb, stride_kh, stride_kn, 0, offs_n, offs_d)
    v_ptrs = _tile_ptrs(V, off_b, off_h, stride_vb, stride_vh, stride_vn, 0, offs_n, offs_d)
    dq = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)

    full_end, kv_end = _key_range(start_m, kv_len, CAUSAL, BLOCK_M, BLOCK_N)
    dq = _bwd_dq_inner(dq, q, do, lse2, delta, k_ptrs, v_ptrs, stride_kn, stride_vn,
                       0, full_end, offs_m, offs_n, offs_d, kv_len, qk_scale,
                       HEAD_DIM, BLOCK_D, BLOCK_N, False, CAUSAL, DOT_PRECISION)
    dq = _bwd_dq_inner(dq, q, do, lse2, delta, k_ptrs, v_ptrs, stride_kn, stride_vn,
                       full_end, kv_end, offs_m, offs_n, offs_d, kv_len, qk_scale,
                       HEAD_DIM, BLOCK_D, BLOCK_N, True, CAUSAL, DOT_PRECISION)
    dq_ptrs = _tile_ptrs(DQ, off_b, off_h, stride_dqb, stride_dqh, stride_dqn, start_m, rows,
                         offs_d)
    _store_tile(dq_ptrs, (dq * sm_scale).to(DQ.dtype.element_ty), offs_m, N_Q, offs_d, HEAD_DIM,
                BLOCK_D)
