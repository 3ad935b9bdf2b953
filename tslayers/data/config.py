"""``DataConfig``: the ``data:`` section of a run config (loaded strictly by tslayers.config).

Kept apart from the data module so reading a config does not import torch or Lightning.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["DataConfig"]


@dataclass
class DataConfig:
    """Where the series come from and how they are windowed, split and batched."""

    name: str = "synthetic/mixture"  # registry name or file path
    params: dict[str, Any] = field(default_factory=dict)  # passed to the dataset loader
    context: int = 256
    horizon: int = 0
    stride: int | None = None  # None = context (non-overlapping windows)
    eval_stride: int | None = None  # stride for val/test windows; None = stride
    batch_size: int = 64
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    split: str = "auto"  # auto | series | time
    gap: int | None = None  # split="time": steps dropped between splits; None = horizon
    min_series_for_series_split: int = 10
    seed: int = 0
    num_workers: int = 0
    max_windows_per_series: int | None = None  # train only; None = all windows
    drop_empty: bool = False  # drop all-NaN series instead of raising
    require_label: bool = False  # fail early when a classification task has no labels
