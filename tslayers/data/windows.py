"""Splits and context windows.

Splits are made on the xarray form, *before* windowing, so that no window of one split can
share a series (``split_series``) or a time step (``split_time``, with an optional ``gap``)
with another: probes must never be scored on windows that overlap their training windows.
Split datasets keep their original ``series`` and ``time`` coordinates, and windows report
those original indices (``"series"``, ``"start"``), so any window can be traced back.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import xarray as xr
from torch.utils.data import Dataset

from tslayers.data.core import DataError, series_lengths

__all__ = ["split_series", "split_time", "WindowDataset", "collate_windows"]


def _check_fractions(val_fraction: float, test_fraction: float) -> None:
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1
            and val_fraction + test_fraction < 1):
        raise DataError(f"val_fraction={val_fraction} and test_fraction={test_fraction} must be "
                        "in [0, 1) with a sum below 1")


def _allocate(idx: np.ndarray, fracs: Sequence[float], rng: np.random.Generator
              ) -> list[np.ndarray]:
    """Shuffle ``idx`` and cut it by fractions (a non-zero fraction gets >= 1 item if it can)."""
    idx = rng.permutation(idx)
    n = len(idx)
    counts = [int(round(f * n)) for f in fracs]
    for i, f in enumerate(fracs):
        if f > 0 and counts[i] == 0 and n - sum(counts) > 1:
            counts[i] = 1
    cuts = np.cumsum(counts)
    return [idx[: cuts[0]]] + [idx[cuts[i - 1]: cuts[i]] for i in range(1, len(cuts))] + \
        [idx[cuts[-1]:]]


def split_series(
    ds: xr.Dataset,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    seed: int = 0,
    *,
    stratify: bool = True,
) -> tuple[xr.Dataset, xr.Dataset, xr.Dataset]:
    """Split by series into (train, val, test).

    If ``ds`` has an official ``split`` variable, its ``test`` series are the test set
    (``test_fraction`` is ignored) and validation is carved from the official train series.
    With ``stratify`` and a ``label``, fractions are applied per class so rare classes appear
    in every split.
    """
    _check_fractions(val_fraction, test_fraction)
    n = ds.sizes["series"]
    rng = np.random.default_rng(seed)
    labels = ds["label"].values if (stratify and "label" in ds) else np.zeros(n, dtype=np.int64)
    if "split" in ds:
        official = ds["split"].values.astype(str)
        unknown = sorted(set(official) - {"train", "test", "val", "validation"})
        if unknown:
            raise DataError(f"split variable has values {unknown}; expected 'train'/'test' "
                            "(optionally 'val')")
        test_idx = np.flatnonzero(official == "test")
        given_val = np.flatnonzero(np.isin(official, ["val", "validation"]))
        pool = np.flatnonzero(official == "train")
        parts: list[list[np.ndarray]] = [[], [given_val], [test_idx]]
        if len(given_val) == 0:
            for k in np.unique(labels[pool]):
                va, tr = _allocate(pool[labels[pool] == k], [val_fraction], rng)
                parts[0].append(tr)
                parts[1].append(va)
        else:
            parts[0].append(pool)
    else:
        if n < 3 and (val_fraction > 0 or test_fraction > 0):
            raise DataError(f"cannot split {n} series by series into train/val/test; for a "
                            "single long series use split_time(ds, ..., gap=...) instead")
        parts = [[], [], []]
        for k in np.unique(labels):
            te, va, tr = _allocate(np.flatnonzero(labels == k), [test_fraction, val_fraction],
                                   rng)
            parts[0].append(tr)
            parts[1].append(va)
            parts[2].append(te)
    out = []
    for p in parts:
        idx = np.sort(np.concatenate(p)) if p else np.zeros(0, dtype=np.int64)
        out.append(ds.isel(series=idx.astype(np.int64)))
    return out[0], out[1], out[2]


def split_time(
    ds: xr.Dataset,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    gap: int = 0,
) -> tuple[xr.Dataset, xr.Dataset, xr.Dataset]:
    """Split every series by time into train | gap | val | gap | test (contiguous blocks).

    Windows are later cut *within* each block, so none spans two splits; ``gap`` steps are
    dropped between blocks so that even the end of a training target and the start of a
    validation context are ``gap`` steps apart (use ``gap >= horizon`` against leakage through
    autocorrelation). Fractions apply to the length left after the gaps.
    """
    _check_fractions(val_fraction, test_fraction)
    if gap < 0:
        raise DataError(f"gap must be >= 0, got {gap}")
    t_len = int(series_lengths(ds).max())
    n_gaps = int(val_fraction > 0) + int(test_fraction > 0)
    usable = t_len - gap * n_gaps
    n_val, n_test = int(round(val_fraction * usable)), int(round(test_fraction * usable))
    n_train = usable - n_val - n_test
    if n_train < 1 or (val_fraction > 0 and n_val < 1) or (test_fraction > 0 and n_test < 1):
        raise DataError(f"series of {t_len} steps are too short to split by time with "
                        f"val_fraction={val_fraction}, test_fraction={test_fraction}, gap={gap}; "
                        "use a smaller gap or fractions")
    tr_end = n_train
    va_start = tr_end + (gap if n_val else 0)
    va_end = va_start + n_val
    te_start = va_end + (gap if n_test else 0)
    return (ds.isel(time=slice(0, tr_end)), ds.isel(time=slice(va_start, va_end)),
            ds.isel(time=slice(te_start, te_start + n_test)))


def _check_windows_fit(lengths: np.ndarray, context: int, horizon: int, name: str) -> None:
    """Refuse data where no window fits; warn when most series are too short to give one."""
    n, total = len(lengths), context + horizon
    if n == 0:
        raise DataError(f"dataset '{name}' has no series (an empty split?); lower "
                        "val_fraction/test_fraction or provide more series")
    if lengths.max() < total:
        raise DataError(
            f"no window fits: series in '{name}' have lengths {int(lengths.min())}.."
            f"{int(lengths.max())} but a window needs context + horizon = {context} + "
            f"{horizon} = {total} steps; lower context/horizon to at most "
            f"{int(lengths.max())} or use longer series")
    too_short = int((lengths < total).sum())
    if too_short > n // 2:
        warnings.warn(
            f"{too_short} of {n} series in '{name}' are shorter than context + horizon = "
            f"{total} and give no window; lower the context (shortest series: "
            f"{int(lengths.min())} steps) or resample the series to a common length",
            stacklevel=3)


def _window_starts(obs: np.ndarray, lengths: np.ndarray, context: int, horizon: int,
                   stride: int) -> tuple[np.ndarray, np.ndarray]:
    """(series index, start) of every window that fits its series and has an observed value
    in its context (and, with a horizon, in its future); vectorised over an (N, K) start grid."""
    n, t_len, _ = obs.shape
    total = context + horizon
    starts = np.arange(0, t_len - total + 1, stride)
    valid = starts[None, :] + total <= lengths[:, None]
    observed = np.isfinite(obs).any(-1)
    csum = np.concatenate([np.zeros((n, 1), np.int64), np.cumsum(observed, 1)], axis=1)
    valid &= (csum[:, starts + context] - csum[:, starts]) > 0
    if horizon > 0:
        valid &= (csum[:, starts + total] - csum[:, starts + context]) > 0
    s_idx, k_idx = np.nonzero(valid)
    return s_idx, starts[k_idx]


def _subsample_per_series(s_idx: np.ndarray, max_per_series: int, seed: int) -> np.ndarray:
    """Sorted positions in ``s_idx`` (series of each window) of a random subset of at most
    ``max_per_series`` windows per series, so long series do not dominate an epoch."""
    keys = np.random.default_rng(seed).random(len(s_idx))
    order = np.lexsort((keys, s_idx))
    s_sorted = s_idx[order]
    rank = np.arange(len(order)) - np.searchsorted(s_sorted, s_sorted)
    return np.sort(order[rank < max_per_series])


class WindowDataset(Dataset):
    """Context windows (+ forecast horizons) cut from every series with a stride.

    Item ``i`` is a dict of tensors: ``x`` (context, C) float32 with NaN for missing,
    ``future`` (horizon, C) when ``horizon > 0``, ``label`` () int64, ``latent`` (context, S)
    float32, ``time_label`` (context,) int64 when the dataset has them, and ``series`` /
    ``start`` () int64: the original series index and time index of the window start.

    Windows run from time 0 of each series up to its own length (ragged tails excluded);
    windows whose context (or, with a horizon, whose future) is entirely missing are dropped.
    ``max_windows_per_series`` keeps a random subset (by ``seed``) so long series do not
    dominate an epoch.
    """

    def __init__(
        self,
        ds: xr.Dataset,
        context: int,
        horizon: int = 0,
        stride: int | None = None,
        *,
        max_windows_per_series: int | None = None,
        seed: int = 0,
        require_label: bool = False,
    ) -> None:
        if context < 1 or horizon < 0:
            raise DataError(f"context must be >= 1 and horizon >= 0, got {context}, {horizon}")
        stride = stride or context
        if stride < 1:
            raise DataError(f"stride must be >= 1, got {stride}")
        name = ds.attrs.get("name", "dataset")
        if require_label and "label" not in ds:
            raise DataError(f"dataset '{name}' has no 'label' variable but the task needs "
                            "series labels; use a labelled dataset (e.g. synthetic/mixture, "
                            "ucr/GunPoint) or add ds['label'] = ('series', ints)")
        self.context, self.horizon, self.stride = context, horizon, stride
        obs = np.ascontiguousarray(ds["obs"].values, dtype=np.float32)
        lengths = series_lengths(ds)
        _check_windows_fit(lengths, context, horizon, name)
        s_idx, starts = _window_starts(obs, lengths, context, horizon, stride)
        if max_windows_per_series is not None:
            keep = _subsample_per_series(s_idx, max_windows_per_series, seed)
            s_idx, starts = s_idx[keep], starts[keep]
        if len(s_idx) == 0:
            raise DataError(f"every window of '{name}' is entirely missing (context {context}, "
                            f"horizon {horizon}); check the data for NaNs")
        self.index = np.stack([s_idx, starts], axis=1).astype(np.int64)
        self.obs = torch.from_numpy(obs)
        self.series_ids = torch.from_numpy(np.asarray(ds["series"].values, dtype=np.int64))
        self.time_ids = torch.from_numpy(np.asarray(ds["time"].values, dtype=np.int64))
        self.label = (torch.from_numpy(ds["label"].values.astype(np.int64))
                      if "label" in ds else None)
        self.latent = (torch.from_numpy(np.ascontiguousarray(ds["latent"].values,
                                                             dtype=np.float32))
                       if "latent" in ds else None)
        self.time_label = (torch.from_numpy(ds["time_label"].values.astype(np.int64))
                           if "time_label" in ds else None)
        self.n_channels = obs.shape[-1]

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        s, t0 = (int(v) for v in self.index[i])
        c = self.context
        item: dict[str, torch.Tensor] = {"x": self.obs[s, t0:t0 + c]}
        if self.horizon:
            item["future"] = self.obs[s, t0 + c:t0 + c + self.horizon]
        if self.label is not None:
            item["label"] = self.label[s]
        if self.latent is not None:
            item["latent"] = self.latent[s, t0:t0 + c]
        if self.time_label is not None:
            item["time_label"] = self.time_label[s, t0:t0 + c]
        item["series"] = self.series_ids[s]
        item["start"] = self.time_ids[t0]
        return item


def collate_windows(items: list[dict[str, torch.Tensor]]) -> dict[str, Any]:
    """Stack a list of window dicts into a batch dict (same keys, leading batch dim)."""
    if not items:
        raise DataError("cannot collate an empty batch")
    return {k: torch.stack([it[k] for it in items]) for k in items[0]}
