"""Forward kernels: ``_attn_fwd`` (online softmax; ``STATS`` adds the per-query statistics) and
``_attn_received`` (the mass each key receives, from the saved log-sum-exp).

Conventions (layout, masking, base-2 scores, int64 offsets) and the shared tile helpers are in
:mod:`tslayers.kernels.triton_tiles`; launchers and tuning in
:mod:`tslayers.kernels.triton_attention` and :mod:`tslayers.kernels.triton_tuning`.
"""

import triton
import triton.language as tl

from .triton_tiles import (
    LN2,
    LOG2E,
    MASKED_SCORE,
    _key_length,
    _key_range,
    _load_tile,
    _query_range,
    _store_tile,
    _tile_ptrs,
)


# --------------------------------------------------------------------------------------------
# Forward
# --------------------------------------------------------------------------------------------
@triton.jit
def _fwd_inner(
    acc, l_i, m_i, ent_i, dist_i, pref_i,
    q, k_ptrs, v_ptrs, stride_kn, stride_vn,
    lo, hi, offs_m, offs_n, offs_d, kv_len, qk_scale, num_prefix,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr,
    MASKED: tl.constexpr, CAUSAL: tl.constexpr, STATS: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    """Online softmax over key blocks ``[lo, hi)`` for one query block.

    Carried per row: ``m_i`` the running max of ``t`` (base-2 scores), ``l_i = sum exp2(t - m_i)``
    and ``acc = sum exp2(t - m_i) v``. With ``STATS`` also, rescaled the same way:
    ``ent_i = sum exp2(t - m_i) (t - m_i)`` (entropy), ``dist_i = sum exp2(t - m_i) j`` when causal
    else ``... |i - j|`` (distance) and ``pref_i`` (mass on keys ``< num_prefix``).
    """
    k_ptrs += tl.cast(lo, tl.int64) * stride_kn
    v_ptrs += tl.cast(lo, tl.int64) * stride_vn
    for start_n in range(lo, hi, BLOCK_N):
        cols = start_n + offs_n
        # -- scores of this key block: t = q k^T * scale * log2(e) ---------------------------
        k = _load_tile(k_ptrs, cols, kv_len, offs_d, HEAD_DIM, BLOCK_D, MASKED)
        qk = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION)
        if MASKED:  # boundary block: padding keys, keys past the ragged end, the causal diagonal
            allowed = cols[None, :] < kv_len
            if CAUSAL:
                allowed = allowed & (cols[None, :] <= offs_m[:, None])
            qk = tl.where(allowed, qk * qk_scale, MASKED_SCORE)
            m_new = tl.maximum(m_i, tl.max(qk, 1))
            qk = qk - m_new[:, None]
        else:  # max of the raw scores, then one fused multiply-add per element
            m_new = tl.maximum(m_i, tl.max(qk, 1) * qk_scale)
            qk = qk * qk_scale - m_new[:, None]
        # -- unnormalised probabilities and the factor that rescales the old sums -------------
        p = tl.math.exp2(qk)
        alpha = tl.math.exp2(m_i - m_new)
        if STATS:
            # sum p (t - m) under a new max m': alpha * (old + l * (m - m')) + this block's part
            ent_i = alpha * (ent_i + l_i * (m_i - m_new)) + tl.sum(p * qk, 1)
            # (int -> float conversions only on the row/column vectors: they are slow per score)
            cols_f = cols.to(tl.float32)
            if CAUSAL:  # j <= i everywhere, so sum p |i - j| = i l - sum p j: one FMA per score
                dist_i = dist_i * alpha + tl.sum(p * cols_f[None, :], 1)
            else:
                dij = tl.abs(offs_m.to(tl.float32)[:, None] - cols_f[None, :])
                dist_i = dist_i * alpha + tl.sum(p * dij, 1)
            pref_i = pref_i * alpha
            if start_n < num_prefix:  # register tokens sit in the first block(s) only
                pref_i += tl.sum(tl.where(cols[None, :] < num_prefix, p, 0.0), 1)
        # -- accumulate p v in fp32 ------------------------------------------------------------
        acc = acc * alpha[:, None]
        v = _load_tile(v_ptrs, cols, kv_len, offs_d, HEAD_DIM, BLOCK_D, MASKED)
        acc = tl.dot(p.to(v.dtype), v, acc, input_precision=DOT_PRECISION)
        l_i = l_i * alpha + tl.sum(p, 1)
        m_i = m_new
        k_ptrs += BLOCK_N * stride_kn
        v_ptrs += BLOCK_N * stride_vn
    return acc, l_i, m_i, ent_i, dist_i, pref_i


@triton.jit(do_not_specialize=["N_BUCKET", "num_prefix"])
def _attn_fwd(
    Q, K, V, O, LSE, ENT, DIST, PREF, KEY_LENGTHS,
    stride_qb, stride_qh, stride_qn,
    stride_kb, stride_kh, stride_kn,
    stride_vb, stride_vh, stride_vn,
    stride_ob, stride_oh, stride_on,
    H, N_Q, N_K, N_BUCKET, qk_scale, num_prefix,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, CAUSAL: tl.constexpr, STATS: tl.constexpr,
    HAS_LENGTHS: tl.constexpr, DOT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """One program = one block of BLOCK_M queries of one (batch, head). ``N_BUCKET`` only keys
    the autotuner. Writes O, the natural-log LSE and, with ``STATS``, the per-query statistics."""
    pid_m = tl.program_id(0)
    if CAUSAL:  # the last query blocks have the most keys: launch them first
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
    q_ptrs = _tile_ptrs(Q, off_b, off_h, stride_qb, stride_qh, stride_qn, start_m, rows, offs_d)
    k_ptrs = _tile_ptrs(K, off_b, off_h, stride_kb, stride_kh, stride_kn, 0, offs_n, offs_d)
    v_ptrs = _tile_ptrs(V, off_b, off_h, stride_vb, stride_vh, stride_vn, 0, offs_n, offs_d)

    # The query block stays on chip for the whole loop.
    q = _load_tile(q_ptrs, offs_m, N_Q, offs_d, HEAD_DIM, BLOCK_D, True)
    m_i = tl.full([BLOCK_M], MASKED_SCORE, dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    ent_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    dist_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    pref_i = tl.zeros([BLOCK_M], dtype=tl.float32)

    # Stage 1: key blocks every row of this block may fully see -- no masks.
    # Stage 2: the causal diagonal and the ragged/padded end -- masked.
    full_end, kv_end = _key_range(start_m, kv_len, CAUSAL, BLOCK_M, BLOCK_N)
    acc, l_i, m_i, ent_i, dist_i, pref_i = _fwd_inner(
        acc, l_i, m_i, ent_i, dist_i, pref_i, q, k_ptrs, v_ptrs, stride_kn, stride_vn,
        0, full_end, offs_m, offs_n, offs_d, kv_len, qk_scale, num_prefix,
        HEAD_DIM, BLOCK_D, BLOCK_N, False, CAUSAL, STATS, DOT_PRECISION)
    acc, l_i, m_i, ent_i, dist_i, pref_i = _fwd_inner(
        acc, l_i, m_i, ent_i, dist_i, pref_i, q, k_ptrs, v_ptrs, stride_kn, stride_vn,
        full_end, kv_end, offs_m, offs_n, offs_d, kv_len, qk_scale, num_prefix,
        HEAD_DIM, BLOCK_D, BLOCK_N, True, CAUSAL, STATS, DOT_PRECISION)

    # Epilogue: normalise, store O and the log-sum-exp (natural log) for the backward.
    l_rcp = 1.0 / l_i
    row_ok = offs_m < N_Q
    row_idx = pid_bh.to(tl.int64) * N_Q + offs_m
    tl.store(LSE + row_idx, (m_i + tl.math.log2(l_i)) * LN2, mask=row_ok)
    o_ptrs = _tile_ptrs(O, off_b, off_h, stride_ob, stride_oh, stride_on, start_m, rows, offs_d)
    _store_tile(o_ptrs, (acc * l_rcp[:, None]).to(O.dtype.element_ty), offs_m, N_Q, offs_d,
                HEAD_DIM, BLOCK_D)
    if STATS:
        # entropy = lse - sum p s = ln2 * (log2 l - sum p~ (t - m) / l)
        ent = tl.maximum((tl.math.log2(l_i) - ent_i * l_rcp) * LN2, 0.0)
        if CAUSAL:
            dist = tl.maximum(offs_m.to(tl.float32) - dist_i * l_rcp, 0.0)
        else:
            dist = dist_i * l_rcp
        tl.store(ENT + row_idx, ent, mask=row_ok)
        tl.store(DIST + row_idx, dist, mask=row_ok)
        tl.store(PREF + row_idx, pref_i * l_rcp, mask=row_ok)


# --------------------------------------------------------------------------------------------
# Received mass: a second, light pass per key block that reuses the saved log-sum-exp
# --------------------------------------------------------------------------------------------
@triton.jit
def _received_inner(
    recv, k, q_ptrs, LSE_ROW, stride_qn, lo, hi, cols, offs_m, offs_d, q_hi, qk_scale,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr,
    MASKED: tl.constexpr, CAUSAL: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    q_ptrs += tl.cast(lo, tl.int64) * stride_qn
    for start_m in range(lo, hi, BLOCK_M):
        rows = start_m + offs_m
        q = _load_tile(q_ptrs, rows, q_hi, offs_d, HEAD_DIM, BLOCK_D, MASKED)
        if MASKED:  # +inf log-sum-exp makes rows past q_hi contribute exp2(-inf) = 0
            lse2 = tl.load(LSE_ROW + rows, mask=rows < q_hi, other=float("inf")) * LOG2E
        else:
            lse2 = tl.load(LSE_ROW + rows) * LOG2E
        # p^T for this (key block, query block): exactly the forward's normalised probabilities
        qkT = tl.dot(k, tl.trans(q), input_precision=DOT_PRECISION)
        pT = tl.math.exp2(qkT * qk_scale - lse2[None, :])
        if MASKED:
            if CAUSAL:  # padding keys are zeroed once, at the store
                pT = tl.where(cols[:, None] <= rows[None, :], pT, 0.0)
        recv += tl.sum(pT, 1)
        q_ptrs += BLOCK_M * stride_qn
    return recv


@triton.jit(do_not_specialize=["N_BUCKET"])
def _attn_received(
    Q, K, LSE, RECV, KEY_LENGTHS,
    stride_qb, stride_qh, stride_qn,
    stride_kb, stride_kh, stride_kn,
    H, N_Q, N_K, N_BUCKET, qk_scale,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, CAUSAL: tl.constexpr,
    HAS_LENGTHS: tl.constexpr, DOT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """``received[j] = sum_{i < q_hi} p_ij`` for a block of BLOCK_N keys, where ``q_hi`` is the
    number of valid queries (``key_lengths[b]`` with padding, else ``N_Q``)."""
    pid_n = tl.program_id(0)
    pid_bh = tl.program_id(1)
    off_b = pid_bh // H
    off_h = pid_bh % H
    kv_len = _key_length(KEY_LENGTHS, off_b, N_K, HAS_LENGTHS)
    if HAS_LENGTHS:
        q_hi = tl.minimum(N_Q, kv_len)
    else:
        q_hi = N_Q

    start_n = pid_n * BLOCK_N
    offs_n = tl.arange(0, BLOCK_N)
    cols = start_n + offs_n
    offs_m = tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    k_ptrs = _tile_ptrs(K, off_b, off_h, stride_kb, stride_kh, stride_kn, start_n, offs_n, offs_d)
    q_ptrs = _tile_ptrs(Q, off_b, off_h, stride_qb, stride_qh, stride_qn, 0, offs_m, offs_d)
    LSE_ROW = LSE + pid_bh.to(tl.int64) * N_Q
    k = _load_tile(k_ptrs, cols, kv_len, offs_d, HEAD_DIM, BLOCK_D, True)
    recv = tl.zeros([BLOCK_N], dtype=tl.float32)

    lo, a_hi, q_full, c_lo, q_ceil = _query_range(start_n, kv_len, q_hi, CAUSAL, BLOCK_M, BLOCK_N)
    recv = _received_inner(recv, k, q_ptrs, LSE_ROW, stride_qn, lo, a_hi, cols, offs_m, offs_d,
                           q_hi, qk_scale, HEAD_DIM, BLOCK_D, BLOCK_M, True, CAUSAL,
                           DOT_PRECISION)
    recv = _received_inner(recv, k, q_ptrs, LSE_ROW, stride_qn, a_hi, q_full, cols, offs_m,
                           offs_d, q_hi, qk_scale, HEAD_DIM, BLOCK_D, BLOCK_M, False, CAUSAL,
                           DOT_PRECISION)
    recv = _received_inner(recv, k, q_ptrs, LSE_ROW, stride_qn, c_lo, q_ceil, cols, offs_m,
                           offs_d, q_hi, qk_scale, HEAD_DIM, BLOCK_D, BLOCK_M, True, CAUSAL,
                           DOT_PRECISION)
    # Padding keys receive nothing (their probabilities were never part of any row).
    recv = tl.where(cols < kv_len, recv, 0.0)
    tl.store(RECV + pid_bh.to(tl.int64) * N_K + cols, recv, mask=cols < N_K)
