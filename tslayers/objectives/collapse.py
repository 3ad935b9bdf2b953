"""Representation-collapse diagnostics."""

from __future__ import annotations

import torch


def effective_rank(embeddings: torch.Tensor, eps: float = 1e-12) -> float:
    """RankMe (Garrido et al., 2023): exp of the entropy of the normalised singular values.

    embeddings (N, D) -> a number in [1, min(N, D)]: 1 when every row is the same direction
    (collapse), min(N, D) when the spectrum is flat. Rows are not centred, as in RankMe.
    """
    if embeddings.dim() != 2 or min(embeddings.shape) == 0:
        raise ValueError(f"effective_rank expects a non-empty (N, D) matrix, got "
                         f"{tuple(embeddings.shape)}")
    s = torch.linalg.svdvals(embeddings.detach().double())
    if s.sum() <= eps:
        return 1.0
    p = s / s.sum() + eps
    return float(torch.exp(-(p * p.log()).sum()))
