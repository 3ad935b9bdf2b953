"""Synthetic engine: integrators, label alignment, determinism, the in-memory form."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from scipy.integrate import solve_ivp

from tslayers.data import (
    make_lgssm,
    make_lorenz,
    make_mixture,
    make_pendulum,
    make_seasonal_anomalies,
    make_switching_ar,
    make_van_der_pol,
)
from tslayers.data.core import DataError
from tslayers.data.synthetic import GENERATORS, rk4

SMALL = dict(n_series=24, length=64)


@pytest.mark.parametrize("name", [*GENERATORS, "mixture"])
def test_same_seed_same_data_different_seed_differs(name):
    gen = make_mixture if name == "mixture" else GENERATORS[name]
    a, b, c = gen(**SMALL, seed=1), gen(**SMALL, seed=1), gen(**SMALL, seed=2)
    xr.testing.assert_identical(a, b)
    assert not np.allclose(a["obs"].values, c["obs"].values)


@pytest.mark.parametrize("name", [*GENERATORS, "mixture"])
def test_in_memory_form(name):
    gen = make_mixture if name == "mixture" else GENERATORS[name]
    ds = gen(**SMALL, seed=0)
    assert ds["obs"].dims == ("series", "time", "channel")
    assert ds["obs"].dtype == np.float32 and ds.sizes["channel"] == 3
    assert np.isfinite(ds["obs"].values).all()
    assert ds["label"].dtype == np.int64
    assert ds["label"].values.max() < len(ds["label"].attrs["classes"])
    if name != "mixture":
        assert ds["latent"].dims == ("series", "time", "state")
        assert ds["latent"].dtype == np.float32
    assert ds.attrs["seed"] == 0 and "system" in ds.attrs


def test_rk4_is_fourth_order_and_matches_reference_on_lorenz():
    # harmonic oscillator: global error shrinks 16x when the step halves
    f = lambda t, x: np.stack([x[:, 1], -x[:, 0]], axis=1)  # noqa: E731
    x0 = np.array([[1.0, 0.0]])
    errs = []
    for sub in (10, 20):
        traj = rk4(f, x0, dt=1.0, n_obs=11, substeps=sub)
        errs.append(abs(traj[0, -1, 0] - np.cos(10.0)))
    assert 12 < errs[0] / errs[1] < 20

    # Lorenz-63 as generated: restart a tight reference solver from the latent state
    ds = make_lorenz(8, 40, noise=0.0, seed=3, rho=(28.0, 40.0))
    lat = ds["latent"].values.astype(np.float64)
    rho = np.array([28.0, 40.0])[ds["label"].values]
    for n in range(8):
        def lorenz(t, x, r=rho[n]):
            return [10 * (x[1] - x[0]), x[0] * (r - x[2]) - x[1], x[0] * x[1] - 8 / 3 * x[2]]
        ref = solve_ivp(lorenz, (0, 0.5), lat[n, 0], rtol=1e-11, atol=1e-11).y[:, -1]
        np.testing.assert_allclose(lat[n, 10], ref, rtol=1e-3, atol=1e-3)


def test_undamped_pendulum_conserves_energy_and_damped_loses_it():
    ds = make_pendulum(16, 1000, noise=0.0, seed=0, damping=(0.0,), drive_amplitude=(0.0,),
                       dt=0.1, substeps=10)
    lat = ds["latent"].values.astype(np.float64)
    # state is (sin, cos, omega): sin^2 + cos^2 = 1 checks the angle is carried intact
    np.testing.assert_allclose(lat[..., 0] ** 2 + lat[..., 1] ** 2, 1.0, atol=1e-6)
    energy = 0.5 * lat[..., 2] ** 2 - lat[..., 1]
    drift = np.abs(energy - energy[:, :1]).max()
    assert drift < 1e-4 * max(1.0, np.abs(energy).max())
    damped = make_pendulum(16, 1000, noise=0.0, seed=0, damping=(0.1,), drive_amplitude=(0.0,))
    lat = damped["latent"].values.astype(np.float64)
    e = 0.5 * lat[..., 2] ** 2 - lat[..., 1]
    assert np.all(e[:, -1] + 1 < 0.5 * (e[:, 0] + 1))  # energy above rest at least halves
    assert np.all(np.diff(e, axis=1) <= 1e-6)  # monotone dissipation


def test_van_der_pol_reaches_its_limit_cycle():
    ds = make_van_der_pol(32, 400, noise=0.0, seed=0, mu=(1.0,))
    x = ds["latent"].values[..., 0]
    # the mu=1 limit cycle has amplitude ~2.01 whatever the start
    np.testing.assert_allclose(np.abs(x[:, 100:]).max(1), 2.0086, atol=0.02)


def test_switching_ar_regime_labels_line_up_with_generated_dynamics():
    ds = make_switching_ar(64, 400, n_regimes=3, mean_dwell=40, noise=0.0, seed=4)
    z = ds["latent"].values.astype(np.float64) - ds["offset"].values[ds["time_label"].values]
    k = ds["time_label"].values
    a = ds["ar_coef"].values
    sigma = ds["sigma"].values
    assert len(np.unique(k)) == 3 and (np.diff(k, axis=1) != 0).sum() > 64  # it does switch
    # per-regime least squares on the labelled steps recovers each regime's coefficients
    for r in range(3):
        n_i, t_i = np.nonzero(k[:, 2:] == r)
        t_i = t_i + 2
        X = np.stack([z[n_i, t_i - 1], z[n_i, t_i - 2]], -1).reshape(-1, 2)
        y = z[n_i, t_i].reshape(-1)
        coef, *_ = np.linalg.lstsq(X, y, rcond=None)
        np.testing.assert_allclose(coef, a[r], atol=0.02)
    # standardised innovations are N(0, 1) *at switch points too*: a label shifted by one
    # step would use the wrong regime exactly there
    resid = (z[:, 2:] - a[k[:, 2:], 0, None] * z[:, 1:-1] - a[k[:, 2:], 1, None] * z[:, :-2])
    std = resid / sigma[k[:, 2:]][..., None]
    switch = np.diff(k, axis=1)[:, 1:] != 0
    assert abs(std[switch].std() - 1) < 0.15
    shifted = np.concatenate([k[:, :1], k[:, :-1]], axis=1)
    resid_s = (z[:, 2:] - a[shifted[:, 2:], 0, None] * z[:, 1:-1]
               - a[shifted[:, 2:], 1, None] * z[:, :-2]) / sigma[shifted[:, 2:]][..., None]
    assert resid_s[switch].std() > 1.5
    counts = np.stack([(k == r).sum(1) for r in range(3)], 1)
    np.testing.assert_array_equal(ds["label"].values, counts.argmax(1))


def test_seasonal_anomaly_labels_line_up_with_inserted_anomalies():
    ds = make_seasonal_anomalies(200, 400, noise=0.05, seed=7)
    obs = ds["obs"].values.astype(np.float64)
    clean = (np.einsum("nck,ntk->ntc", ds["loading"].values, ds["latent"].values)
             + ds["level"].values[:, None])
    resid = obs - clean
    lab = ds["time_label"].values.astype(bool)
    typ = ds["anomaly_type"].values
    assert ds["time_label"].attrs["kind"] == "anomaly"
    # unlabelled steps carry only the observation noise
    assert np.abs(resid[~lab]).max() < 6 * 0.05
    sd = clean.std(axis=1)  # (N, C)
    # every labelled run is one anomaly (they never overlap): check each where it was put
    checked = set()
    edges = np.diff(np.pad(lab.astype(int), ((0, 0), (1, 1))), axis=1)
    for n, t0 in zip(*np.nonzero(edges == 1), strict=True):
        t1 = t0 + np.argmax(edges[n, t0 + 1:] == -1) + 1
        kinds = np.unique(typ[n, t0:t1])
        assert len(kinds) == 1
        kind = kinds[0]
        if kind == 1:  # spike: one step, 4..8 std
            assert t1 - t0 == 1
            ratio = np.abs(resid[n, t0]) / sd[n]
            assert np.all((ratio > 3.9) & (ratio < 8.2))
        elif kind == 2:  # level shift: the same offset on every labelled step
            off = resid[n, t0:t1]
            assert np.all(np.abs(off - off.mean(0)) < 6 * 0.05)
            assert np.all(np.abs(off.mean(0)) / sd[n] > 1.9)
        elif kind == 3:  # flat: the value is held (the clean signal is not)
            assert np.all(obs[n, t0:t1].std(0) < 1e-6)
            assert np.all(clean[n, t0:t1].std(0) > 1e-3)
        checked.add(int(kind))
    assert checked == {1, 2, 3}
    np.testing.assert_array_equal(ds["label"].values, lab.any(1))
    assert 0.5 < ds["label"].values.mean() < 0.9
    assert ds.attrs["season_length"] == 24


def test_lgssm_is_stationary_with_the_stored_covariance():
    ds = make_lgssm(400, 200, state_dim=3, obs_dim=2, noise=0.2, seed=0)
    lat = ds["latent"].values.reshape(-1, 3).astype(np.float64)
    p0 = ds["P0"].values[0]
    np.testing.assert_allclose(np.cov(lat.T), p0, atol=0.12 * np.abs(p0).max())
    assert np.all(np.abs(np.linalg.eigvals(ds["A"].values[0])) < 1)
    # channels have unit signal variance: total obs variance = 1 + noise^2
    np.testing.assert_allclose(ds["obs"].values.var(axis=(0, 1)), 1.04, rtol=0.12)


def test_mixture_labels_systems_and_standardises():
    ds = make_mixture(120, 64, seed=0, systems=("lgssm", "lorenz", "seasonal"))
    assert ds["label"].attrs["classes"] == ["lgssm", "lorenz", "seasonal"]
    assert np.bincount(ds["label"].values).tolist() == [40, 40, 40]
    for k in range(3):
        o = ds["obs"].values[ds["label"].values == k]
        np.testing.assert_allclose(o.std(axis=(0, 1)), 1.0, rtol=1e-3)
    with pytest.raises(DataError, match="unknown systems"):
        make_mixture(10, 32, systems=("lgssm", "nope"))
