"""``DataConfig`` and the ``SeriesDataModule`` the training code uses.

The module loads a dataset by name (or takes a ready one), splits it *by series* (or, for
fewer than ``min_series_for_series_split`` series, *by time* with a gap), and serves windows.
The split xarray datasets stay available (``train_ds``/``val_ds``/``test_ds``) so probing code
can cut its own windows from exactly the same split.
"""

from __future__ import annotations

from typing import Any, Literal

import lightning.pytorch as pl
import numpy as np
import xarray as xr
from torch.utils.data import DataLoader

from tslayers.data.config import DataConfig
from tslayers.data.core import DataError, validate_dataset
from tslayers.data.registry import _looks_like_path, load_dataset
from tslayers.data.windows import WindowDataset, collate_windows, split_series, split_time

__all__ = ["DataConfig", "SeriesDataModule"]


class SeriesDataModule(pl.LightningDataModule):
    """Lightning data module over the in-memory form.

    Build from a ``DataConfig`` (``SeriesDataModule(cfg)``), or hand it a ready dataset
    (``SeriesDataModule(cfg, dataset=ds)``). ``setup()`` is idempotent and called by the
    dataloader methods if needed, so the module also works outside a Trainer.
    """

    def __init__(self, config: DataConfig | None = None, dataset: xr.Dataset | None = None,
                 **overrides: Any) -> None:
        super().__init__()
        config = config or DataConfig()
        if overrides:
            config = DataConfig(**{**config.__dict__, **overrides})
        self.config = config
        self._dataset = dataset
        self.dataset: xr.Dataset | None = None
        self.train_ds: xr.Dataset | None = None
        self.val_ds: xr.Dataset | None = None
        self.test_ds: xr.Dataset | None = None
        self.train_windows: WindowDataset | None = None
        self.val_windows: WindowDataset | None = None
        self.test_windows: WindowDataset | None = None
        self.split_mode: Literal["series", "time"] | None = None

    # -- properties other code reads --------------------------------------------------------
    @property
    def n_channels(self) -> int:
        self.setup()
        assert self.dataset is not None
        return int(self.dataset.sizes["channel"])

    @property
    def n_classes(self) -> int | None:
        self.setup()
        assert self.dataset is not None
        if "label" not in self.dataset:
            return None
        return len(self.dataset["label"].attrs.get("classes", [])) or int(
            self.dataset["label"].max()) + 1

    @property
    def season_length(self) -> int | None:
        self.setup()
        assert self.dataset is not None
        s = self.dataset.attrs.get("season_length")
        return int(s) if s is not None else None

    # -- lightning hooks --------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if self.dataset is not None:
            return
        cfg = self.config
        params = dict(cfg.params)
        if cfg.drop_empty and _looks_like_path(cfg.name):  # file loaders validate on reading
            params.setdefault("drop_empty", True)
        ds = self._dataset if self._dataset is not None else load_dataset(cfg.name, **params)
        ds = validate_dataset(ds, drop_empty=cfg.drop_empty)
        if cfg.require_label and "label" not in ds:
            raise DataError(f"dataset '{ds.attrs.get('name', cfg.name)}' has no 'label' but "
                            "require_label=True (a classification task); pick a labelled "
                            "dataset such as synthetic/mixture or ucr/GunPoint")
        mode = cfg.split
        if mode == "auto":
            enough = ds.sizes["series"] >= cfg.min_series_for_series_split or "split" in ds
            mode = "series" if enough else "time"
        if mode == "series":
            tr, va, te = split_series(ds, cfg.val_fraction, cfg.test_fraction, cfg.seed)
        elif mode == "time":
            gap = cfg.horizon if cfg.gap is None else cfg.gap
            tr, va, te = split_time(ds, cfg.val_fraction, cfg.test_fraction, gap=gap)
        else:
            raise DataError(f"DataConfig.split must be 'auto', 'series' or 'time', got {mode!r}")
        self.split_mode = mode  # type: ignore[assignment]
        self.train_ds, self.val_ds, self.test_ds = tr, va, te
        kw = dict(context=cfg.context, horizon=cfg.horizon, require_label=cfg.require_label)
        self.train_windows = WindowDataset(tr, stride=cfg.stride, seed=cfg.seed,
                                           max_windows_per_series=cfg.max_windows_per_series,
                                           **kw)
        eval_stride = cfg.eval_stride or cfg.stride
        self.val_windows = (WindowDataset(va, stride=eval_stride, **kw)
                            if va.sizes["series"] and va.sizes["time"] else None)
        self.test_windows = (WindowDataset(te, stride=eval_stride, **kw)
                             if te.sizes["series"] and te.sizes["time"] else None)
        self.dataset = ds

    def _loader(self, which: str, shuffle: bool) -> DataLoader:
        self.setup()
        windows = getattr(self, f"{which}_windows")
        if windows is None:  # an empty split: a loader that yields nothing
            windows = []
        gen = None
        if shuffle:
            import torch

            gen = torch.Generator().manual_seed(int(np.uint32(self.config.seed)))
        return DataLoader(windows, batch_size=self.config.batch_size, shuffle=shuffle,
                          num_workers=self.config.num_workers, collate_fn=collate_windows,
                          generator=gen, persistent_workers=self.config.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
