"""Pretraining objectives: forecast, reconstruct, contrastive, jepa — one interface.

``objective(encoder, batch) -> ObjectiveOutput(loss, metrics, embeddings)``. To add one, write
a subclass of :class:`Objective` decorated with ``@register_objective("name")`` and import its
module here. Objectives are
saved as ``objective.json`` (their config) + ``objective.safetensors`` (heads, and JEPA's
target encoder); no pickles.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from tslayers.io import atomic_path, atomic_write
from tslayers.model import EncoderConfig

from .base import (
    OBJECTIVES,
    Objective,
    ObjectiveConfig,
    ObjectiveOutput,
    pool,
    sample_patch_mask,
)
from .collapse import effective_rank
from .contrastive import ContrastiveObjective, info_nce, token_info_nce
from .forecast import ForecastObjective, pinball_loss
from .jepa import JEPAObjective, ema_momentum
from .reconstruct import ReconstructObjective, masked_patch_mse

__all__ = [
    "OBJECTIVES",
    "ContrastiveObjective",
    "ForecastObjective",
    "JEPAObjective",
    "Objective",
    "ObjectiveConfig",
    "ObjectiveOutput",
    "ReconstructObjective",
    "build_objective",
    "effective_rank",
    "ema_momentum",
    "info_nce",
    "load_objective",
    "masked_patch_mse",
    "pinball_loss",
    "pool",
    "sample_patch_mask",
    "save_objective",
    "token_info_nce",
]

CONFIG_FILE = "objective.json"
WEIGHTS_FILE = "objective.safetensors"


def build_objective(config: ObjectiveConfig, encoder_config: EncoderConfig) -> Objective:
    """The objective named by ``config.name`` with heads sized for ``encoder_config``."""
    if config.name not in OBJECTIVES:  # configs built with dataclasses.replace skip validation
        raise ValueError(f"objective.name='{config.name}' is unknown; choose one of "
                         f"{', '.join(sorted(OBJECTIVES))}")
    return OBJECTIVES[config.name](config, encoder_config)


def save_objective(objective: Objective, directory: str | Path) -> Path:
    """Write ``objective.json`` and ``objective.safetensors`` into ``directory``."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in objective.state_dict().items()}
    with atomic_path(directory / WEIGHTS_FILE) as tmp:
        save_file(state, str(tmp), metadata={"tslayers": "Objective"})
    atomic_write(directory / CONFIG_FILE,
                      json.dumps(dataclasses.asdict(objective.config), indent=2))
    return directory


def load_objective(directory: str | Path, encoder_config: EncoderConfig) -> Objective:
    """Rebuild a saved objective for an encoder of ``encoder_config``; clear error on mismatch."""
    from safetensors.torch import load_file

    from tslayers.config import from_dict

    directory = Path(directory)
    cfg_path, w_path = directory / CONFIG_FILE, directory / WEIGHTS_FILE
    for p in (cfg_path, w_path):
        if not p.is_file():
            raise FileNotFoundError(f"no {p.name} in '{directory}': expected a directory written "
                                    "by save_objective (e.g. a pretrain run's 'objective/')")
    objective = build_objective(from_dict(ObjectiveConfig, json.loads(cfg_path.read_text())),
                                encoder_config)
    state = load_file(str(w_path))
    own = objective.state_dict()
    bad = sorted(k for k in set(own) | set(state)
                 if k not in own or k not in state or own[k].shape != state[k].shape)
    if bad:
        raise ValueError(f"objective weights in '{w_path}' do not fit an encoder with "
                         f"d_model={encoder_config.d_model}, patch_len={encoder_config.patch_len}"
                         f", n_channels={encoder_config.n_channels}: mismatched keys {bad[:5]}")
    objective.load_state_dict(state)
    return objective
