"""Temporal alignment heads: move the useful intermediate features to the output, re-probe.

``config`` (AlignConfig) and ``heads`` load without Lightning; ``run`` (training, re-probing)
and ``summary`` load on first use.
"""

from tslayers._lazy import lazy_getattr

from .config import AlignConfig
from .heads import (
    DynamicsAligner,
    DynamicsLossConfig,
    ForecastAligner,
    ForecastHeadConfig,
    correspondence_loss,
    sharpened_similarity,
    spectral_descriptor,
)

_LAZY = {
    "align": "tslayers.align.run",
    "align_command": "tslayers.align.run",
    "best_layer_from_results": "tslayers.align.run",
    "alignment_summary": "tslayers.align.summary",
    "gap_closed_beyond": "tslayers.align.summary",
}
__getattr__ = lazy_getattr(__name__, _LAZY)

__all__ = [
    "AlignConfig",
    "DynamicsAligner",
    "DynamicsLossConfig",
    "ForecastAligner",
    "ForecastHeadConfig",
    "correspondence_loss",
    "sharpened_similarity",
    "spectral_descriptor",
    *_LAZY,
]
