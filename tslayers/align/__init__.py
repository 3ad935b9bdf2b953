"""Temporal alignment heads: move the useful intermediate features to the output, re-probe."""

from .heads import (
    DynamicsAligner,
    DynamicsLossConfig,
    ForecastAligner,
    ForecastHeadConfig,
    correspondence_loss,
    sharpened_similarity,
    spectral_descriptor,
)
from .run import AlignConfig, align, align_command, best_layer_from_results
from .summary import alignment_summary, gap_closed_beyond

__all__ = [
    "AlignConfig",
    "DynamicsAligner",
    "DynamicsLossConfig",
    "ForecastAligner",
    "ForecastHeadConfig",
    "align",
    "align_command",
    "alignment_summary",
    "best_layer_from_results",
    "correspondence_loss",
    "gap_closed_beyond",
    "sharpened_similarity",
    "spectral_descriptor",
]
