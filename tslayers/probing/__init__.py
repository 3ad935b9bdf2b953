"""Depthwise probing: taps on any ``nn.Module``, streaming all-layer probes, task families,
label-free diagnostics, and the results Dataset.

Entry points: :func:`probe_encoder` (one encoder -> results), :class:`LayerTaps` (any model),
:class:`RidgeProbe` / :class:`LogisticProbe` / :func:`knn_propagate`, :func:`linear_cka` /
:func:`minibatch_cka`, :func:`write_results` / :func:`read_results` / :func:`merge_results`.
"""

from .config import CONTROLS, TASKS, ProbeConfig, ProbeRunConfig
from .diagnostics import (
    AttentionSummary,
    MinibatchCKA,
    effective_rank,
    linear_cka,
    mean_token_sim,
    minibatch_cka,
    norm_outlier_frac,
)
from .metrics import HIGHER_IS_BETTER, bootstrap_ci
from .pipeline import ProbeSource, probe_encoder, probe_sources, split_windows
from .probes import LogisticProbe, RidgeProbe, knn_propagate
from .results import merge_results, read_results, write_results
from .taps import FeatureWriter, LayerTaps, first_tensor, reduce_tokens, select_modules

__all__ = [
    "CONTROLS", "TASKS", "ProbeConfig", "ProbeRunConfig",
    "AttentionSummary", "MinibatchCKA", "effective_rank", "linear_cka", "mean_token_sim",
    "minibatch_cka", "norm_outlier_frac",
    "HIGHER_IS_BETTER", "bootstrap_ci",
    "ProbeSource", "probe_encoder", "probe_sources", "split_windows",
    "LogisticProbe", "RidgeProbe", "knn_propagate",
    "merge_results", "read_results", "write_results",
    "FeatureWriter", "LayerTaps", "first_tensor", "reduce_tokens", "select_modules",
]
