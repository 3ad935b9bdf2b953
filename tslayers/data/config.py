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

    def __post_init__(self) -> None:
        from tslayers.config import check_ranges

        def opt(v: int | None, low: int) -> bool:
            return v is None or v >= low

        check_ranges("data", self, {
            "context": (self.context >= 1, "use a window length >= 1 (and >= encoder.patch_len)"),
            "horizon": (self.horizon >= 0, "use 0 or more future steps"),
            "stride": (opt(self.stride, 1), "use a stride >= 1, or leave it empty = context"),
            "eval_stride": (opt(self.eval_stride, 1), "use a stride >= 1, or leave it empty"),
            "batch_size": (self.batch_size >= 1, "use a batch size >= 1"),
            "val_fraction": (0 <= self.val_fraction < 1, "use a fraction in [0, 1)"),
            "test_fraction": (0 <= self.test_fraction < 1
                              and self.val_fraction + self.test_fraction < 1,
                              "use a fraction in [0, 1) with val_fraction + test_fraction < 1"),
            "split": (self.split in ("auto", "series", "time"),
                      "use 'auto', 'series' or 'time'"),
            "gap": (opt(self.gap, 0), "use 0 or more steps, or leave it empty = horizon"),
            "min_series_for_series_split": (self.min_series_for_series_split >= 1, "use >= 1"),
            "num_workers": (self.num_workers >= 0, "use 0 or more loader workers"),
            "max_windows_per_series": (opt(self.max_windows_per_series, 1),
                                       "use 1 or more, or leave it empty for all"),
        })
