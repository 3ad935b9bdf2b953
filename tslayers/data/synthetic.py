"""Synthetic systems with known latent states: the embedded default data.

Every generator is deterministic by ``seed`` (one ``numpy.random.Generator`` per call), vectorised
over series (the only Python loops run over time steps or a handful of anomaly slots), and returns
the in-memory form of ``tslayers.data.core``: ``obs`` (series, time, channel), ``latent``
(series, time, state), a series-level ``label`` (which parameter class / system produced the
series) and, where the system has one, a per-time ``time_label`` (regime id or anomaly 0/1).

The generators live by kind (``continuous``: ODE systems; ``state_space``: LGSSM and switching
AR; ``seasonal``: seasonal series with anomalies); this module names them all (``GENERATORS``)
and mixes them into a system-classification task (``make_mixture``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import xarray as xr

from tslayers.data.continuous import make_lorenz, make_pendulum, make_van_der_pol, rk4
from tslayers.data.core import DataError, check_sizes, make_dataset
from tslayers.data.seasonal import make_seasonal_anomalies
from tslayers.data.state_space import make_lgssm, make_switching_ar, random_stable_dynamics

__all__ = [
    "rk4",
    "random_stable_dynamics",
    "make_lgssm",
    "make_lorenz",
    "make_pendulum",
    "make_van_der_pol",
    "make_switching_ar",
    "make_seasonal_anomalies",
    "make_mixture",
    "GENERATORS",
]

GENERATORS: dict[str, Callable[..., xr.Dataset]] = {
    "lgssm": make_lgssm,
    "lorenz": make_lorenz,
    "pendulum": make_pendulum,
    "van_der_pol": make_van_der_pol,
    "switching_ar": make_switching_ar,
    "seasonal": make_seasonal_anomalies,
}


def make_mixture(
    n_series: int = 512,
    length: int = 512,
    seed: int = 0,
    systems: Sequence[str] = tuple(GENERATORS),
    *,
    n_channels: int = 3,
    noise: float = 0.1,
    system_params: dict[str, dict[str, Any]] | None = None,
) -> xr.Dataset:
    """Series drawn from several systems, ``label`` = system (a classification task).

    Every system is generated with the same ``n_channels`` and each system's observations are
    standardised per channel over the whole system, so the class cannot be read off the scale.
    Latents and per-time labels differ between systems and are dropped; ``system_params`` passes
    extra keyword arguments to individual generators. Series are shuffled.
    """
    check_sizes(n_series, length)
    unknown = [s for s in systems if s not in GENERATORS]
    if unknown or not systems:
        raise DataError(f"unknown systems {unknown} for make_mixture; choose from "
                        f"{sorted(GENERATORS)}")
    system_params = dict(system_params or {})
    seeds = np.random.SeedSequence(seed).spawn(len(systems) + 1)
    counts = [len(a) for a in np.array_split(np.arange(n_series), len(systems))]
    parts = []
    for i, (sys_name, cnt) in enumerate(zip(systems, counts, strict=True)):
        if cnt == 0:
            continue
        kw: dict[str, Any] = dict(noise=noise, seed=int(seeds[i].generate_state(1)[0]))
        kw["obs_dim" if sys_name == "lgssm" else "n_channels"] = n_channels
        kw.update(system_params.get(sys_name, {}))
        obs = GENERATORS[sys_name](cnt, length, **kw)["obs"].values
        mu = np.nanmean(obs, axis=(0, 1))
        sd = np.nanstd(obs, axis=(0, 1)) + 1e-8
        parts.append(((obs - mu) / sd).astype(np.float32))
    obs = np.concatenate(parts)
    label = np.concatenate([np.full(cnt, i) for i, cnt in enumerate(counts)])
    perm = np.random.default_rng(seeds[-1]).permutation(n_series)
    return make_dataset(
        obs[perm], label=label[perm], classes=list(systems),
        attrs=dict(name="synthetic/mixture", system="mixture", seed=seed,
                   systems=list(systems), noise=noise, n_channels=n_channels),
    )
