"""Trend + multi-seasonal series with inserted, labelled anomalies."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import xarray as xr

from tslayers.data.core import DataError, check_sizes, make_dataset

__all__ = ["ANOMALY_TYPES", "make_seasonal_anomalies"]


ANOMALY_TYPES = ("none", "spike", "level_shift", "flat")


def make_seasonal_anomalies(
    n_series: int = 512,
    length: int = 512,
    *,
    n_channels: int = 3,
    periods: Sequence[int] = (24, 168),
    noise: float = 0.1,
    seed: int = 0,
    anomaly_prob: float = 0.7,
    max_anomalies: int = 4,
    segment_length: tuple[int, int] = (8, 48),
    n_harmonics: int = 3,
    freq: str = "h",
) -> xr.Dataset:
    """Trend + several seasonalities per channel, white noise, and inserted anomalies.

    ``latent`` = (trend, season_p for each period), shared by a series' channels through random
    per-channel loadings (``loading`` (series, channel, component), ``level`` (series, channel)),
    so ``clean = level + sum_j loading_j * latent_j``. A fraction ``anomaly_prob`` of series gets
    1..``max_anomalies`` anomalies affecting all channels, in distinct slots of the series (they
    never overlap): spikes (one step, +-4..8 std), temporary level shifts (+-2..4 std) and flat
    segments (value held), both lasting ``segment_length`` steps. ``time_label`` is 1 on
    anomalous steps (kind "anomaly"), ``anomaly_type`` (series, time) says which (index into
    attr ``anomaly_types``), ``label`` is 1 for series with any anomaly. ``season_length`` is
    the shortest period.
    """
    check_sizes(n_series, length)
    rng = np.random.default_rng(seed)
    latent = _trend_and_seasons(rng, n_series, length, periods, n_harmonics)
    n_comp = latent.shape[-1]
    loading = rng.uniform(0.5, 1.5, (n_series, n_channels, n_comp)) * rng.choice(
        [-1, 1], (n_series, n_channels, 1))
    level = rng.normal(0, 1, (n_series, n_channels))
    clean = np.einsum("nck,ntk->ntc", loading.astype(np.float32), latent) + level[:, None]
    obs = clean + noise * rng.standard_normal(clean.shape, dtype=np.float32)
    obs, atype = _insert_anomalies(obs, clean.std(axis=1, keepdims=True), rng, anomaly_prob,
                                   max_anomalies, segment_length)
    # a series drawn as anomalous always has >= 1 labelled step, so label == any(time_label)
    time_label = (atype > 0).astype(np.int64)
    return make_dataset(
        obs, latent=latent, label=time_label.any(1).astype(np.int64),
        classes=["normal", "anomalous"], time_label=time_label, time_label_kind="anomaly",
        state_names=["trend"] + [f"season_{p}" for p in periods],
        extra={"anomaly_type": (("series", "time"), atype),
               "loading": (("series", "channel", "state"), loading),
               "level": (("series", "channel"), level)},
        attrs=dict(name="synthetic/seasonal", system="seasonal", seed=seed, noise=noise,
                   periods=list(periods), season_length=int(min(periods)), freq=freq,
                   anomaly_prob=anomaly_prob, max_anomalies=max_anomalies,
                   anomaly_types=list(ANOMALY_TYPES)),
    )


def _trend_and_seasons(rng: np.random.Generator, n: int, tlen: int, periods: Sequence[int],
                       n_harmonics: int) -> np.ndarray:
    """Latent components (N, T, 1 + len(periods)): a drifting trend, then one unit-std
    seasonality per period (``n_harmonics`` harmonics with random amplitudes and phases)."""
    t = np.arange(tlen, dtype=np.float64)
    comps = [np.cumsum(rng.normal(0, 0.02, (n, tlen)), axis=1) + rng.normal(0, 1, (n, 1))
             * (t / tlen)[None]]  # slow random-walk drift + linear trend
    h = np.arange(1, n_harmonics + 1)
    for period in periods:
        amp = rng.uniform(0.5, 1.0, (n, n_harmonics)) / h
        ph = rng.uniform(0, 2 * np.pi, (n, n_harmonics))
        s = np.einsum("nh,nht->nt", amp,
                      np.cos(2 * np.pi * h[None, :, None] * t[None, None] / period
                             + ph[..., None]))
        comps.append(s / np.sqrt((amp**2).sum(1, keepdims=True) / 2))  # unit std
    return np.stack(comps, axis=-1).astype(np.float32)


def _insert_anomalies(obs: np.ndarray, std: np.ndarray, rng: np.random.Generator,
                      anomaly_prob: float, max_anomalies: int, segment_length: tuple[int, int]
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Insert anomalies into ``obs`` (N, T, C), scaled by each channel's clean ``std``
    (N, 1, C); returns the new obs and the per-step type (N, T), an index into ANOMALY_TYPES.

    One anomaly per slot of T // max_anomalies steps, slots chosen at random: anomalies never
    overlap, so every labelled run is exactly one anomaly of one type.
    """
    n, tlen = obs.shape[:2]
    t = np.arange(tlen)
    has = rng.random(n) < anomaly_prob
    count = np.where(has, rng.integers(1, max_anomalies + 1, n), 0)
    slot = tlen // max_anomalies
    if slot < 2:
        raise DataError(f"length {tlen} is too short for max_anomalies={max_anomalies}; use "
                        f"max_anomalies <= {tlen // 2}")
    rank = np.argsort(rng.random((n, max_anomalies)), axis=1)
    atype = np.zeros((n, tlen), dtype=np.int64)
    for k in range(max_anomalies):
        active = rank[:, k] < count
        kind = rng.integers(1, len(ANOMALY_TYPES), n)
        seg = np.minimum(rng.integers(segment_length[0], segment_length[1] + 1, n), slot - 1)
        seg = np.where(kind == 1, 1, seg)
        start = k * slot + rng.integers(0, slot - seg)
        sign = rng.choice([-1.0, 1.0], n)
        mag = np.where(kind == 1, rng.uniform(4, 8, n), rng.uniform(2, 4, n)) * sign
        mask = active[:, None] & (t[None] >= start[:, None]) & (t[None] < (start + seg)[:, None])
        add = (kind == 1) | (kind == 2)
        bump = (mask & add[:, None])[..., None] * (mag[:, None, None] * std)
        obs = obs + bump.astype(np.float32)
        flat = mask & (kind == 3)[:, None]
        held = obs[np.arange(n), start]  # (N, C)
        obs = np.where(flat[..., None], held[:, None], obs)
        atype = np.where(mask, kind[:, None], atype)
    return obs, atype
