"""Triton kernels for fused (flash) attention with optional in-pass statistics.

Only ``triton`` is imported here; the launchers, the autograd wrapper and the tuning configs live
in :mod:`tslayers.kernels.triton_attention`. Conventions (shared with ``reference.py``):

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
