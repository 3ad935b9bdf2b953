"""The one alignment config, shared by ``tslayers align`` and a study's ``align:`` entries.

Kept apart from the training code so that loading (and rejecting) a config needs no Lightning.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tslayers.data.config import DataConfig
from tslayers.model import EncoderConfig
from tslayers.probing import ProbeConfig, ProbeSource
from tslayers.training.config import TrainConfig

from .heads import DynamicsLossConfig, ForecastHeadConfig

KINDS = ("forecast", "dynamics")


def _short_train(**kw) -> TrainConfig:
    base = dict(max_steps=200, warmup_steps=20, val_check_interval=50, ckpt_every_n_steps=50,
                lr=1e-3, progress_bar=False)
    return TrainConfig(**{**base, **kw})


def _default_stage1() -> TrainConfig:
    return _short_train()


def _default_stage2() -> TrainConfig:
    return _short_train(lr=2e-4)


@dataclass
class AlignConfig:
    """One alignment run. ``layer`` / ``dynamics.teacher_layer`` of None are chosen from the
    probing results file ``results`` (the best layer for ``target_task``)."""

    kind: str = "forecast"
    objective: str = "auto"  # in a study: whose encoder to align; auto = largest val gap
    checkpoint: str | None = None  # pretrain run dir or encoder dir (required)
    results: str | None = None  # probing results file for automatic layer choice
    target_task: str | None = None  # task, task prefix or family; default by kind:
    # "forecasting" (forecast alignment) or "dense" (dynamics alignment)
    name: str | None = None  # model name in the results; default: checkpoint folder name
    layer: int | None = None  # forecast alignment: truncate here
    drop_path: float = 0.1  # stage-2 (or dynamics) regularisation
    data: DataConfig = field(default_factory=DataConfig)
    encoder: EncoderConfig | None = None  # unused when a checkpoint is given (kept for studies)
    forecast: ForecastHeadConfig = field(default_factory=ForecastHeadConfig)
    dynamics: DynamicsLossConfig = field(default_factory=DynamicsLossConfig)
    stage1: TrainConfig = field(default_factory=_default_stage1)  # head / dynamics training
    stage2: TrainConfig = field(default_factory=_default_stage2)  # forecast: tune everything
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    probe_data: list[ProbeSource] = field(default_factory=list)  # empty: re-probe on ``data``
    reuse_before: bool = False  # take the original's scores from ``results`` (same probe setup)
    # dynamics ablations: locality teachers to run corr/both with (empty: [dynamics.
    # locality_teacher]); "encoder" = a layer of another pretrained encoder (learned teacher)
    teachers: list[str] = field(default_factory=list)
    teacher_checkpoint: str | None = None  # the learned teacher's pretrain run / encoder dir
    teacher_results: str | None = None  # its probing results (teacher layer chosen on val)
    teacher_name: str | None = None  # its model name in those results
    teacher_objective: str | None = None  # in a study: the objective whose encoder (same
    # seed) is the learned teacher; sets teacher_checkpoint/results/name
    oracle_data: DataConfig | None = None  # data with latent states for the oracle teacher
    # forecast alignment: decoders scored with GluonTS metrics on the probe's test series
    score_forecasts: bool = True
    forecast_reference: str | None = None  # pretrain run dir of a forecasting-objective model
    forecast_windows: int = 2  # rolling test windows per series (of forecast.horizon steps)
    forecast_freq: str = "D"  # season = gluonts get_seasonality(freq); "D" -> 1 (naive)
    out: str = "runs/align/<kind>"

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"align.kind='{self.kind}': choose one of {KINDS}")
        if not 0.0 <= self.drop_path < 1.0:
            raise ValueError("align.drop_path must lie in [0, 1)")
        if self.target_task is None:
            self.target_task = "forecasting" if self.kind == "forecast" else "dense"
        if not self.probe_data:
            self.probe_data = [ProbeSource(data=self.data, tasks=list(self.probe.tasks))]
        from .heads import LOCALITY_TEACHERS

        bad = [t for t in self.teachers if t not in LOCALITY_TEACHERS]
        if bad:
            raise ValueError(f"align.teachers: {bad} not in {LOCALITY_TEACHERS}")


