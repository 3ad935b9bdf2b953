"""Attention: one public function, its statistics, and the backends behind it.

Importable with only torch, triton, einops and numpy (the GPU benchmark machine has nothing else).
"""

from .attention import BACKENDS, attention, blockwise_stats, resolve_backend, triton_available
from .reference import AttentionStats, attention_reference, stats_from_probs

__all__ = [
    "BACKENDS",
    "AttentionStats",
    "attention",
    "attention_reference",
    "blockwise_stats",
    "resolve_backend",
    "stats_from_probs",
    "triton_available",
]
