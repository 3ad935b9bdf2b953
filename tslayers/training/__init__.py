"""Training: the Lightning loop shared by pretraining and alignment, and ``pretrain``.

``loop`` (optimiser/schedule, Trainer, resumable data order) and ``module`` (LitPretrainer)
import no data code; ``pretrain``/``PretrainConfig`` pull in the data module lazily.
``pretrain_command`` (``command``) checks the config before Lightning is imported.
"""

from __future__ import annotations

from tslayers._lazy import lazy_getattr

_LAZY = {
    "TrainConfig": "tslayers.training.config",
    "PretrainConfig": "tslayers.training.config",
    "LitPretrainer": "tslayers.training.module",
    "build_trainer": "tslayers.training.loop",
    "configure_adamw_cosine": "tslayers.training.loop",
    "warmup_cosine": "tslayers.training.loop",
    "param_groups": "tslayers.training.loop",
    "resolve_precision": "tslayers.training.loop",
    "ResumableLoader": "tslayers.training.loop",
    "EpochSampler": "tslayers.training.loop",
    "pretrain": "tslayers.training.pretraining",
    "pretrain_command": "tslayers.training.command",
    "can_resume": "tslayers.training.pretraining",
    "Terminated": "tslayers.training.pretraining",
    "DivergenceError": "tslayers.training.module",
    "export_pretrained": "tslayers.training.pretraining",
}


__getattr__ = lazy_getattr(__name__, _LAZY)


__all__ = list(_LAZY)
