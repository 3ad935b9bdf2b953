"""The one public attention function and its backend dispatch.

``attention(q, k, v, causal=..., key_lengths=..., stats=...)`` takes ``(B, H, N, D)`` tensors and
returns ``(B, H, N, D)``, plus :class:`AttentionStats` when ``stats=True``. Backends:

* ``"triton"`` – the fused kernels in :mod:`tslayers.kernels.triton_attention` (CUDA, or the Triton
  interpreter on CPU when ``TRITON_INTERPRET=1`` was set before import);
* ``"sdpa"``  – ``torch.nn.functional.scaled_dot_product_attention``; statistics are computed
  exactly from query blocks of the probability matrix, so memory stays bounded;
* ``"math"``  – :func:`attention_reference`, which forms the full matrix (tests, tiny diagnostics);
* ``"auto"``  – Triton on CUDA tensors when Triton is importable, otherwise SDPA. fp32 CUDA
  tensors go to Triton (TF32 tensor-core dots, ~1e-3 relative) only when PyTorch allows TF32
  matmuls (``torch.set_float32_matmul_precision("high")`` or ``"medium"``); under the default
  ``"highest"`` they go to SDPA, which keeps fp32 accuracy.
"""

from __future__ import annotations

import math
import os

import torch
import torch.nn.functional as F

from .reference import (
    AttentionStats,
    allowed_mask,
    attention_reference,
    check_key_lengths,
    stats_from_probs,
)

BACKENDS = ("auto", "sdpa", "math", "triton")
_STATS_BLOCK_ELEMENTS = 1 << 24  # probability elements materialised at once for SDPA stats


def _check_inputs(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise ValueError(
            f"attention expects (B, H, N, D) tensors, got q{tuple(q.shape)} k{tuple(k.shape)} "
            f"v{tuple(v.shape)}"
        )
    if q.shape[:2] != k.shape[:2] or k.shape != v.shape or q.shape[-1] != k.shape[-1]:
        raise ValueError(
            f"q, k, v shapes disagree: q{tuple(q.shape)} k{tuple(k.shape)} v{tuple(v.shape)}"
        )


def triton_available() -> bool:
    """True when the Triton backend can run here (CUDA, or the interpreter)."""
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1"


def resolve_backend(backend: str, device: torch.device, dtype: torch.dtype | None = None) -> str:
    """The backend that runs: ``auto`` resolved for tensors on ``device`` of ``dtype``."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown attention backend '{backend}'; choose one of {BACKENDS}")
    if backend == "auto":
        exact_fp32 = (dtype == torch.float32
                      and torch.get_float32_matmul_precision() == "highest")
        use_triton = device.type == "cuda" and not exact_fp32 and triton_available()
        return "triton" if use_triton else "sdpa"
    if backend == "triton" and device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
        raise RuntimeError(
            "the Triton attention backend needs CUDA tensors; to run it on the CPU set "
            "TRITON_INTERPRET=1 in the environment before importing tslayers (slow, for tests), "
            "or use backend='sdpa'"
        )
    return backend


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    causal: bool,
    key_lengths: torch.Tensor | None = None,
    stats: bool = False,
    num_prefix: int = 0,
    scale: float | None = None,
    backend: str = "auto",
) -> torch.Tensor | tuple[torch.Tensor, AttentionStats]:
    """Scaled dot-product attention over ``(B, H, N, D)`` with optional statistics.

    ``key_lengths`` (B,) int: keys at positions ``>= key_lengths[b]`` are padding.
    ``num_prefix``: leading register/CLS tokens whose received mass is reported as ``prefix_mass``.
    """
    _check_inputs(q, k, v)
    check_key_lengths(key_lengths, q.shape[0], k.shape[2])
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    chosen = resolve_backend(backend, q.device, q.dtype)
    kwargs = dict(causal=causal, key_lengths=key_lengths, scale=scale, num_prefix=num_prefix)
    if chosen == "math":
        out, _, _, st = attention_reference(q, k, v, **kwargs)
        return (out, st) if stats else out
    if chosen == "triton":
        from .triton_attention import triton_attention

        out, st = triton_attention(q, k, v, stats=stats, **kwargs)
        return (out, st) if stats else out
    out = _sdpa(q, k, v, causal=causal, key_lengths=key_lengths, scale=scale)
    if not stats:
        return out
    return out, blockwise_stats(q, k, **kwargs)


def _sdpa(q, k, v, *, causal: bool, key_lengths: torch.Tensor | None, scale: float):
    if key_lengths is None:
        return F.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=scale)
    n_q, n_k = q.shape[2], k.shape[2]
    if causal:
        mask = allowed_mask(n_q, n_k, causal=True, key_lengths=key_lengths, device=q.device)
    else:
        mask = (torch.arange(n_k, device=q.device) < key_lengths.to(q.device)[:, None])
        mask = mask[:, None, None, :]
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)


@torch.no_grad()
def blockwise_stats(
    q: torch.Tensor,
    k: torch.Tensor,
    *,
    causal: bool,
    key_lengths: torch.Tensor | None,
    scale: float,
    num_prefix: int,
) -> AttentionStats:
    """Exact statistics without holding the whole (N, N) matrix: query blocks of bounded size."""
    b, h, n, _ = q.shape
    n_k = k.shape[2]
    block = max(1, _STATS_BLOCK_ELEMENTS // max(1, b * h * n_k))
    parts = []
    received = torch.zeros(b, h, n_k, device=q.device, dtype=torch.float32)
    for start in range(0, n, block):
        qb = q[:, :, start : start + block].float()
        scores = torch.einsum("bhid,bhjd->bhij", qb, k.float()) * scale
        allowed = allowed_mask(n, n_k, causal=causal, key_lengths=key_lengths, device=q.device)
        scores = scores.masked_fill(~allowed[:, :, start : start + block], float("-inf"))
        probs = torch.softmax(scores, dim=-1)
        st = stats_from_probs(probs, key_lengths=key_lengths, num_prefix=num_prefix,
                              query_offset=start)
        parts.append(st)
        received += st.received
    return AttentionStats(
        entropy=torch.cat([p.entropy for p in parts], dim=-1),
        distance=torch.cat([p.distance for p in parts], dim=-1),
        prefix_mass=torch.cat([p.prefix_mass for p in parts], dim=-1),
        received=received,
    )
