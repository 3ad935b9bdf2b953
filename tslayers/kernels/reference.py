"""Math reference for attention: forms the full (N, N) matrix, so use it on small inputs only.

Everything else in ``tslayers.kernels`` is tested against this file. The conventions it fixes:

* ``key_lengths[b]`` keys are valid for sequence ``b`` (keys ``j >= key_lengths[b]`` are padding);
  queries beyond the length still attend to the valid keys, so no row is ever empty or NaN.
* ``causal`` lets query ``i`` see keys ``j <= i`` only (combined with the padding mask).
* Statistics, all float32 (B, H, N):
    - ``entropy[i]  = -sum_j p_ij log p_ij``  (nats, over allowed keys);
    - ``distance[i] =  sum_j p_ij |i - j|``    (token units, prefix tokens included);
    - ``prefix_mass[i] = sum_{j < num_prefix} p_ij`` (mass on register/CLS tokens);
    - ``received[j] = sum_{i < key_lengths[b]} p_ij`` (mass key ``j`` receives from valid queries).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass
class AttentionStats:
    """Per-query and per-key attention statistics, each ``(B, H, N)`` float32."""

    entropy: torch.Tensor
    distance: torch.Tensor
    prefix_mass: torch.Tensor
    received: torch.Tensor

    def detach(self) -> AttentionStats:
        return AttentionStats(*(t.detach() for t in self.as_tuple()))

    def as_tuple(self) -> tuple[torch.Tensor, ...]:
        return (self.entropy, self.distance, self.prefix_mass, self.received)


def allowed_mask(
    n_q: int, n_k: int, *, causal: bool, key_lengths: torch.Tensor | None, device=None
) -> torch.Tensor:
    """Boolean (B or 1, 1, N_q, N_k) mask of the keys each query may attend to."""
    j = torch.arange(n_k, device=device)
    allowed = torch.ones(n_q, n_k, dtype=torch.bool, device=device)
    if causal:
        i = torch.arange(n_q, device=device)
        allowed = j[None, :] <= i[:, None]
    allowed = allowed[None, None]
    if key_lengths is not None:
        valid = j[None, :] < key_lengths.to(device)[:, None]  # (B, N_k)
        allowed = allowed & valid[:, None, None, :]
        # a causal query before every valid key... cannot happen: key 0 is always valid.
    return allowed


def check_key_lengths(key_lengths: torch.Tensor | None, batch: int, n: int) -> None:
    """Shape, dtype and range ``[1, n]`` of ``key_lengths``, without a device->host sync: CPU
    lengths are checked here and now (``ValueError``); CUDA lengths by an asynchronous device
    assert, which fails the next synchronising call instead of stalling this one."""
    if key_lengths is None:
        return
    if key_lengths.shape != (batch,):
        raise ValueError(f"key_lengths must have shape ({batch},), got {tuple(key_lengths.shape)}")
    if key_lengths.dtype.is_floating_point or key_lengths.dtype.is_complex or (
        key_lengths.dtype == torch.bool
    ):
        raise TypeError(f"key_lengths must be integers, got {key_lengths.dtype}")
    in_range = ((key_lengths >= 1) & (key_lengths <= n)).all()
    if key_lengths.device.type == "cpu":
        if not bool(in_range):
            raise ValueError(f"key_lengths must lie in [1, {n}], got {key_lengths.tolist()}")
    else:
        torch._assert_async(in_range, f"key_lengths must lie in [1, {n}]")


def attention_reference(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    causal: bool,
    key_lengths: torch.Tensor | None = None,
    scale: float | None = None,
    num_prefix: int = 0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, AttentionStats]:
    """Exact attention in the input dtype's math: returns (out, probs, lse, stats).

    ``probs`` is (B, H, N, N); ``lse`` is the (B, H, N) log-sum-exp of the scaled scores.
    """
    b, _, n, d = q.shape
    check_key_lengths(key_lengths, b, k.shape[2])
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    scores = torch.einsum("bhid,bhjd->bhij", q, k) * scale
    allowed = allowed_mask(n, k.shape[2], causal=causal, key_lengths=key_lengths, device=q.device)
    scores = scores.masked_fill(~allowed, float("-inf"))
    lse = torch.logsumexp(scores, dim=-1)
    probs = torch.exp(scores - lse[..., None])
    out = torch.einsum("bhij,bhjd->bhid", probs, v)
    return out, probs, lse, stats_from_probs(probs, key_lengths=key_lengths, num_prefix=num_prefix)


def stats_from_probs(
    probs: torch.Tensor,
    *,
    key_lengths: torch.Tensor | None,
    num_prefix: int,
    query_offset: int = 0,
) -> AttentionStats:
    """Statistics from a (B, H, n_q, N_k) probability block whose first query is ``query_offset``.

    For a block of queries ``received`` is that block's contribution (sum the blocks).
    """
    p = probs.detach().float()
    n_q, n_k = p.shape[-2:]
    i = torch.arange(query_offset, query_offset + n_q, device=p.device)
    j = torch.arange(n_k, device=p.device)
    entropy = -(torch.special.xlogy(p, p)).sum(-1)
    distance = (p * (i[:, None] - j[None, :]).abs().float()).sum(-1)
    prefix_mass = p[..., :num_prefix].sum(-1)
    if key_lengths is None:
        received = p.sum(-2)
    else:
        valid_q = (i[None, :] < key_lengths.to(p.device)[:, None]).float()  # (B, n_q)
        received = torch.einsum("bhij,bi->bhj", p, valid_q)
    return AttentionStats(entropy, distance, prefix_mass, received)
