"""Depthwise probing: one pipeline from any feature source to results.

Where things live (add a piece in one place):

- a **feature source** (a model or a control): :mod:`.sources` (``FeatureSource`` protocol);
- a **task**: :mod:`.tasks` (``register_task(Task(...))``: family, needs, metrics, builder);
- a **metric**: :mod:`.metrics` (``METRICS``, with its direction);
- **probes** (ridge, logistic, kNN, MLP): :mod:`.probes`; taps on any module: :mod:`.taps`;
- the **pipeline** (windows -> features -> problems -> fits -> scores): :mod:`.pipeline`;
- the **analysis** (selection on val, paired intervals, controls): :mod:`.analysis`;
- the results file: :mod:`.results`; label-free diagnostics: :mod:`.diagnostics`; CKA across
  models (untrained twin, a compared model): :mod:`.compare`;
- interventions (patch, steer, ablate any tap): :mod:`.interventions`; public forecasting
  models: :mod:`.public_models`; RNN layers as taps: :mod:`.rnn`; user factories: :mod:`.factory`.
"""

from .analysis import annotate, best_layer, layer_profile, layer_table, primary_metric
from .config import CONTROLS, ProbeConfig, ProbeRunConfig
from .diagnostics import (
    AttentionSummary,
    MinibatchCKA,
    cross_cka,
    effective_rank,
    linear_cka,
    mean_token_sim,
    minibatch_cka,
    norm_outlier_frac,
)
from .interventions import (
    cache_activations,
    intervene,
    mean_ablate,
    patch,
    patching_effect,
    replace,
    run_with_cache,
    steer,
    zero_ablate,
)
from .metrics import HIGHER_IS_BETTER, METRICS, bootstrap_ci
from .pipeline import ProbeSource, probe, probe_encoder, probe_model, probe_sources
from .probes import LogisticProbe, MLPProbe, RidgeProbe, knn_propagate
from .results import merge_results, read_results, write_results
from .sources import (
    EncoderSource,
    FeatureSource,
    MiniRocketSource,
    ModuleSource,
    PeriodogramSource,
    RawWindowSource,
)
from .taps import FeatureWriter, LayerTaps, first_tensor, reduce_tokens, select_modules
from .tasks import TASKS, Problem, Task, View, register_task
from .untrained import untrained_twin

__all__ = [
    "annotate", "best_layer", "layer_profile", "layer_table", "primary_metric",
    "CONTROLS", "ProbeConfig", "ProbeRunConfig",
    "AttentionSummary", "MinibatchCKA", "cross_cka", "effective_rank", "linear_cka",
    "mean_token_sim", "minibatch_cka", "norm_outlier_frac",
    "HIGHER_IS_BETTER", "METRICS", "bootstrap_ci",
    "ProbeSource", "probe", "probe_encoder", "probe_model", "probe_sources",
    "LogisticProbe", "MLPProbe", "RidgeProbe", "knn_propagate",
    "merge_results", "read_results", "write_results",
    "EncoderSource", "FeatureSource", "MiniRocketSource", "ModuleSource", "PeriodogramSource",
    "RawWindowSource", "untrained_twin",
    "FeatureWriter", "LayerTaps", "first_tensor", "reduce_tokens", "select_modules",
    "TASKS", "Problem", "Task", "View", "register_task",
    "cache_activations", "intervene", "mean_ablate", "patch", "patching_effect", "replace",
    "run_with_cache", "steer", "zero_ablate",
]
