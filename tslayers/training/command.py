"""``tslayers pretrain``: read and check the config before importing Lightning, so a config
mistake is reported in a second, not after the training stack has loaded."""

from __future__ import annotations

from typing import Any


def pretrain_command(args: Any) -> int:
    """``tslayers pretrain CONFIG [key.sub=value ...] [--out DIR] [--overwrite]``."""
    from tslayers.config import load_config

    from .config import PretrainConfig

    config = load_config(PretrainConfig, args.config, list(args.overrides or []))
    from .pretraining import run_pretrain_command

    return run_pretrain_command(config, args)
