"""Configs of the probe suite (``probe:`` section) and of the ``tslayers probe`` command."""

from __future__ import annotations

from dataclasses import dataclass, field

from tslayers.data.config import DataConfig
from tslayers.model import EncoderConfig

#: controls a probe run can add (see tslayers.probing.sources and pipeline)
CONTROLS = ("untrained", "raw-window", "periodogram", "minirocket", "mlp", "permuted",
            "selectivity")


@dataclass
class ProbeConfig:
    """What to probe and how. Defaults keep a 4-layer, d_model=64 encoder on ~500 windows
    well under 30 s on two CPU cores."""

    tasks: list[str] = field(default_factory=lambda: ["auto"])
    # dataset variables to probe for (per series or per time step; see tslayers.data.add_targets)
    targets: list[str] = field(default_factory=list)
    horizons: list[int] = field(default_factory=lambda: [1, 4, 16])
    forecast_from: list[str] = field(default_factory=lambda: ["last", "all"])  # token features
    pool: str = "mean"  # series-level pooling: mean | last | register
    lambdas: list[float] = field(
        default_factory=lambda: [1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1e3, 1e4, 1e5])
    Cs: list[float] = field(default_factory=lambda: [0.01, 0.1, 1.0, 10.0])  # logistic probes
    seeds: list[int] = field(default_factory=lambda: [0])  # one split of the series per seed
    bootstrap: int = 200  # bootstrap replicates over series (0: no intervals)
    ci: float = 0.9
    controls: list[str] = field(default_factory=lambda: list(CONTROLS))
    permutations: int = 200  # permutation p-value of each layer's test score (0: none)
    context: int | None = None  # window length; None = data.context
    stride: int | None = None  # window stride; None = data.stride or context
    max_windows: int = 512  # windows sampled over all series (bounds memory and time)
    batch_size: int = 64
    val_fraction: float = 0.2
    test_fraction: float = 0.2
    max_features: int = 512  # "all tokens" forecasting: the last max_features // F tokens
    knn_k: int = 10
    n_bins: int = 4  # correspondence without per-time labels: quantile bins of the 1st latent
    diagnostics: bool = True
    outlier_factor: float = 3.0
    device: str = "cpu"
    progress: bool = True

    def __post_init__(self) -> None:
        from .tasks import TASKS

        bad = [t for t in self.tasks if t not in (*TASKS, "auto")]
        if bad:
            raise ValueError(f"probe.tasks: unknown task(s) {bad}; choose from {list(TASKS)} "
                             "or 'auto'")
        bad = [c for c in self.controls if c not in CONTROLS]
        if bad:
            raise ValueError(f"probe.controls: unknown control(s) {bad}; choose from "
                             f"{list(CONTROLS)}")
        bad = [f for f in self.forecast_from if f not in ("last", "all", "mean")]
        if bad:
            raise ValueError(f"probe.forecast_from: {bad} not in ['last', 'all', 'mean']")
        if self.pool not in ("mean", "last", "register"):
            raise ValueError(f"probe.pool must be mean, last or register, got '{self.pool}'")
        if any(h < 1 for h in self.horizons):
            raise ValueError(f"probe.horizons must be >= 1, got {self.horizons}")
        if not self.seeds:
            raise ValueError("probe.seeds must name at least one seed")
        if not (0 < self.val_fraction < 1 and 0 < self.test_fraction < 1
                and self.val_fraction + self.test_fraction < 1):
            raise ValueError("probe.val_fraction and probe.test_fraction must be in (0, 1) and "
                             "sum to less than 1")
        if self.max_windows < 8:
            raise ValueError(f"probe.max_windows={self.max_windows} is too small (>= 8)")


@dataclass
class ProbeRunConfig:
    """``tslayers probe CONFIG``: an encoder (pretrained checkpoint or untrained), data, tasks."""

    data: DataConfig = field(default_factory=DataConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    checkpoint: str | None = None  # a pretrain run dir (with encoder/) or an encoder/ dir
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    out: str = "runs/probe"
    name: str | None = None  # model name in the results; None = checkpoint folder or "untrained"
    seed: int = 0  # initialisation seed of an untrained encoder
