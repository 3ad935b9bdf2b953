"""Synthetic systems with known latent states: the embedded default data.

Every generator is deterministic by ``seed`` (one ``numpy.random.Generator`` per call), vectorised
over series (the only Python loops run over time steps or a handful of anomaly slots), and returns
the in-memory form of ``tslayers.data.core``: ``obs`` (series, time, channel), ``latent``
(series, time, state), a series-level ``label`` (which parameter class / system produced the
series) and, where the system has one, a per-time ``time_label`` (regime id or anomaly 0/1).

Continuous systems are integrated with classical RK4 (``rk4``) at ``dt / substeps`` and sampled
every ``dt``; a burn-in puts chaotic systems on their attractor. Observations of the
continuous systems are noisy random linear projections of the standardised state features, so
that probes must *decode* the state rather than read it off a channel.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import scipy.linalg
import xarray as xr

from tslayers.data.core import DataError, make_dataset

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

Array = np.ndarray


def _check_sizes(n_series: int, length: int) -> None:
    if n_series < 1 or length < 2:
        raise DataError(f"need n_series >= 1 and length >= 2, got n_series={n_series}, "
                        f"length={length}")


def rk4(
    f: Callable[[float, Array], Array],
    x0: Array,
    dt: float,
    n_obs: int,
    substeps: int = 1,
    t0: float = 0.0,
    burn_in: int = 0,
) -> Array:
    """Integrate ``dx/dt = f(t, x)`` with classical RK4, vectorised over leading dims of ``x0``.

    Takes ``substeps`` RK4 steps of ``dt / substeps`` between samples; ``burn_in`` samples are
    integrated and thrown away first. Returns (..., n_obs, D) with sample 0 = state after burn-in.
    """
    h = dt / substeps
    x = np.array(x0, dtype=np.float64)
    t = t0
    out = np.empty(x.shape[:-1] + (n_obs, x.shape[-1]), dtype=np.float64)
    for i in range(-burn_in, n_obs):
        if i >= 0:
            out[..., i, :] = x
            if i == n_obs - 1:
                break
        for _ in range(substeps):
            k1 = f(t, x)
            k2 = f(t + h / 2, x + (h / 2) * k1)
            k3 = f(t + h / 2, x + (h / 2) * k2)
            k4 = f(t + h, x + h * k3)
            x = x + (h / 6) * (k1 + 2 * k2 + 2 * k3 + k4)
            t += h
    return out


def _project(
    features: Array, n_channels: int, noise: float, rng: np.random.Generator
) -> tuple[Array, Array]:
    """Noisy random linear view of (N, T, F) features -> obs (N, T, C) and the matrix (C, F).

    Features are standardised over the whole dataset and each channel scaled to unit signal
    variance, so ``noise`` is a noise-to-signal ratio (std) whatever the system's units.
    """
    f = features.shape[-1]
    mu = features.mean(axis=(0, 1))
    sd = features.std(axis=(0, 1)) + 1e-12
    w = rng.standard_normal((n_channels, f))
    w /= np.linalg.norm(w, axis=1, keepdims=True)
    signal = np.einsum("ntf,cf->ntc", ((features - mu) / sd).astype(np.float32),
                       w.astype(np.float32))
    scale = signal.std(axis=(0, 1)) + 1e-12
    signal /= scale
    w = w / scale[:, None] / sd[None, :]  # obs = (features - mu) @ w.T + noise
    obs = signal + noise * rng.standard_normal(signal.shape, dtype=np.float32)
    return obs, w


def _classes(**params: Sequence[float]) -> tuple[int, list[dict[str, float]], list[str]]:
    """Zip per-class parameter tuples into class dicts and readable class names."""
    lens = {k: len(v) for k, v in params.items()}
    k = max(lens.values())
    for key, n in lens.items():
        if n not in (1, k):
            raise DataError(f"class parameters must have the same length (or 1): {lens}; "
                            f"'{key}' has {n}")
    full = {key: list(v) * (k if len(v) == 1 else 1) for key, v in params.items()}
    cls = [{key: float(full[key][i]) for key in full} for i in range(k)]
    varying = [key for key in full if len(set(full[key])) > 1] or list(full)[:1]
    names = [",".join(f"{key}={c[key]:g}" for key in varying) for c in cls]
    return k, cls, names


# --------------------------------------------------------------------------------------------
# Linear-Gaussian state-space model
# --------------------------------------------------------------------------------------------


def random_stable_dynamics(
    state_dim: int,
    rng: np.random.Generator,
    radius: tuple[float, float] = (0.85, 0.98),
    max_angle: float = np.pi / 4,
) -> Array:
    """A random stable transition matrix with spectral radius in ``radius``.

    Built as an orthogonal change of basis of a real Schur form (2x2 rotation-scaling blocks, one
    real eigenvalue when ``state_dim`` is odd) so the eigenvalues are controlled exactly: damped
    oscillations with periods > 2*pi/max_angle steps, never an explosive mode.
    """
    b = np.zeros((state_dim, state_dim))
    i = 0
    while i < state_dim:
        r = rng.uniform(*radius)
        if i + 1 < state_dim:
            th = rng.uniform(0.05, max_angle)
            b[i:i + 2, i:i + 2] = r * np.array([[np.cos(th), -np.sin(th)],
                                               [np.sin(th), np.cos(th)]])
            i += 2
        else:
            b[i, i] = r
            i += 1
    q, _ = np.linalg.qr(rng.standard_normal((state_dim, state_dim)))
    return q @ b @ q.T


def make_lgssm(
    n_series: int = 512,
    length: int = 512,
    *,
    state_dim: int = 4,
    obs_dim: int = 3,
    noise: float = 0.3,
    seed: int = 0,
    n_systems: int = 1,
    process_noise: float = 1.0,
    radius: tuple[float, float] = (0.85, 0.98),
) -> xr.Dataset:
    """Linear-Gaussian state-space series: ``x_t = A x_{t-1} + w_t``, ``y_t = C x_t + v_t``.

    ``w ~ N(0, Q)`` with ``Q = process_noise**2 I``, ``v ~ N(0, R)`` with ``R = noise**2 I``.
    ``x_0 ~ N(m0, P0)`` with ``m0 = 0`` and ``P0`` the stationary covariance, so every series is
    stationary and a window's best prior is the same ``(m0, P0)``. Rows of ``C`` are scaled so each
    channel has unit signal variance: ``noise`` is the noise-to-signal std ratio.

    ``n_systems`` random systems are drawn; series ``i`` uses system ``label[i]``. The matrices
    are stored without the series dim but with a leading ``system`` dim: ``A`` (system, state,
    state_in), ``Cobs`` (system, channel, state), ``Q``/``P0`` (system, state, state_in), ``R``
    (system, channel, channel_in), ``m0`` (system, state). ``tslayers.data.kalman`` reads them.
    """
    _check_sizes(n_series, length)
    if state_dim < 1 or obs_dim < 1:
        raise DataError(f"state_dim and obs_dim must be >= 1, got {state_dim}, {obs_dim}")
    rng = np.random.default_rng(seed)
    s, c = state_dim, obs_dim
    mats: dict[str, list[Array]] = {k: [] for k in ("A", "Cobs", "Q", "R", "m0", "P0")}
    for _ in range(n_systems):
        a = random_stable_dynamics(s, rng, radius)
        q = process_noise**2 * np.eye(s)
        p0 = scipy.linalg.solve_discrete_lyapunov(a, q)
        p0 = (p0 + p0.T) / 2
        cm = rng.standard_normal((c, s))
        cm /= np.sqrt(np.einsum("cs,st,ct->c", cm, p0, cm))[:, None]
        for key, val in zip(mats, (a, cm, q, noise**2 * np.eye(c), np.zeros(s), p0), strict=True):
            mats[key].append(val)
    stack = {k: np.stack(v) for k, v in mats.items()}
    label = rng.integers(0, n_systems, n_series)
    a_i, c_i = stack["A"][label], stack["Cobs"][label]  # (N, S, S), (N, C, S)
    chol_p0 = np.linalg.cholesky(stack["P0"])[label]
    x = np.einsum("nij,nj->ni", chol_p0, rng.standard_normal((n_series, s)))
    w = process_noise * rng.standard_normal((length, n_series, s), dtype=np.float32)
    latent = np.empty((n_series, length, s), dtype=np.float32)
    single = n_systems == 1
    for t in range(length):
        if t > 0:
            x = (x @ stack["A"][0].T if single else np.einsum("nij,nj->ni", a_i, x)) + w[t]
        latent[:, t] = x
    signal = np.einsum("ncs,nts->ntc", c_i.astype(np.float32), latent)
    obs = signal + noise * rng.standard_normal(signal.shape, dtype=np.float32)
    dims = {"A": ("system", "state", "state_in"), "Cobs": ("system", "channel", "state"),
            "Q": ("system", "state", "state_in"), "R": ("system", "channel", "channel_in"),
            "m0": ("system", "state"), "P0": ("system", "state", "state_in")}
    extra = {k: (dims[k], stack[k]) for k in stack}
    return make_dataset(
        obs, latent=latent, label=label, classes=[f"system{i}" for i in range(n_systems)],
        extra=extra,
        attrs=dict(name="synthetic/lgssm", system="lgssm", seed=seed, state_dim=s, obs_dim=c,
                   noise=noise, process_noise=process_noise, n_systems=n_systems,
                   radius=list(radius)),
    )


# --------------------------------------------------------------------------------------------
# Continuous systems: Lorenz-63, damped driven pendulum, Van der Pol
# --------------------------------------------------------------------------------------------


def make_lorenz(
    n_series: int = 512,
    length: int = 512,
    *,
    n_channels: int = 3,
    noise: float = 0.1,
    seed: int = 0,
    rho: Sequence[float] = (28.0, 40.0),
    sigma: Sequence[float] = (10.0,),
    beta: Sequence[float] = (8.0 / 3.0,),
    dt: float = 0.05,
    substeps: int = 5,
    burn_in: int = 200,
) -> xr.Dataset:
    """Lorenz-63 on its attractor, seen through a noisy random projection.

    Parameter tuples define classes (zipped); ``label`` says which class each series uses, so
    the default is a two-class task (rho 28 vs 40) with identical observation statistics.
    ``latent`` = (x, y, z) in the system's own units.
    """
    _check_sizes(n_series, length)
    rng = np.random.default_rng(seed)
    k, cls, names = _classes(rho=rho, sigma=sigma, beta=beta)
    label = rng.integers(0, k, n_series)
    p = {key: np.array([c[key] for c in cls])[label][:, None] for key in ("rho", "sigma", "beta")}

    def f(t: float, x: Array) -> Array:
        dx = p["sigma"] * (x[:, 1:2] - x[:, 0:1])
        dy = x[:, 0:1] * (p["rho"] - x[:, 2:3]) - x[:, 1:2]
        dz = x[:, 0:1] * x[:, 1:2] - p["beta"] * x[:, 2:3]
        return np.concatenate([dx, dy, dz], axis=1)

    x0 = rng.standard_normal((n_series, 3)) * 5 + np.array([0.0, 0.0, 25.0])
    traj = rk4(f, x0, dt, length, substeps, burn_in=burn_in)
    obs, w = _project(traj, n_channels, noise, rng)
    return make_dataset(
        obs, latent=traj, label=label, classes=names, state_names=["x", "y", "z"],
        extra={"W": (("channel", "state"), w)},
        attrs=dict(name="synthetic/lorenz", system="lorenz", seed=seed, noise=noise, dt=dt,
                   substeps=substeps, burn_in=burn_in, rho=list(rho), sigma=list(sigma),
                   beta=list(beta)),
    )


def make_pendulum(
    n_series: int = 512,
    length: int = 512,
    *,
    n_channels: int = 3,
    noise: float = 0.1,
    seed: int = 0,
    damping: Sequence[float] = (0.05, 0.5),
    drive_amplitude: Sequence[float] = (0.0, 1.2),
    drive_frequency: Sequence[float] = (2.0 / 3.0,),
    omega0: float = 1.0,
    dt: float = 0.1,
    substeps: int = 5,
    burn_in: int = 0,
) -> xr.Dataset:
    """Damped driven pendulum ``theta'' = -gamma theta' - omega0^2 sin(theta) + A cos(w_d t)``.

    Classes (zipped parameter tuples) default to a lightly damped free pendulum vs the classic
    chaotic driven one (gamma 0.5, A 1.2, w_d 2/3). ``latent`` = (sin theta, cos theta, omega):
    the angle enters through sin/cos so the state has no 2*pi jumps. With damping 0 and drive 0
    the energy ``omega^2 / 2 - omega0^2 cos(theta)`` is conserved (tested).
    """
    _check_sizes(n_series, length)
    rng = np.random.default_rng(seed)
    k, cls, names = _classes(damping=damping, drive_amplitude=drive_amplitude,
                             drive_frequency=drive_frequency)
    label = rng.integers(0, k, n_series)
    p = {key: np.array([c[key] for c in cls])[label]
         for key in ("damping", "drive_amplitude", "drive_frequency")}
    phase = rng.uniform(0, 2 * np.pi, n_series)

    def f(t: float, x: Array) -> Array:
        th, om = x[:, 0], x[:, 1]
        drive = p["drive_amplitude"] * np.cos(p["drive_frequency"] * t + phase)
        return np.stack([om, -p["damping"] * om - omega0**2 * np.sin(th) + drive], axis=1)

    x0 = np.stack([rng.uniform(-0.9 * np.pi, 0.9 * np.pi, n_series),
                   rng.standard_normal(n_series) * 0.5], axis=1)
    traj = rk4(f, x0, dt, length, substeps, burn_in=burn_in)
    feats = np.stack([np.sin(traj[..., 0]), np.cos(traj[..., 0]), traj[..., 1]], axis=-1)
    obs, w = _project(feats, n_channels, noise, rng)
    return make_dataset(
        obs, latent=feats, label=label, classes=names,
        state_names=["sin_theta", "cos_theta", "omega"],
        extra={"W": (("channel", "state"), w), "drive_phase": ("series", phase)},
        attrs=dict(name="synthetic/pendulum", system="pendulum", seed=seed, noise=noise, dt=dt,
                   substeps=substeps, omega0=omega0, damping=list(damping),
                   drive_amplitude=list(drive_amplitude),
                   drive_frequency=list(drive_frequency)),
    )


def make_van_der_pol(
    n_series: int = 512,
    length: int = 512,
    *,
    n_channels: int = 3,
    noise: float = 0.1,
    seed: int = 0,
    mu: Sequence[float] = (1.0, 3.0),
    drive_amplitude: Sequence[float] = (0.0,),
    drive_frequency: Sequence[float] = (1.0,),
    dt: float = 0.1,
    substeps: int = 5,
    burn_in: int = 100,
) -> xr.Dataset:
    """Van der Pol oscillator ``x'' - mu (1 - x^2) x' + x = A cos(w t)`` on its limit cycle.

    Classes are the zipped parameter tuples (default: mu 1 vs 3, a near-sinusoid vs relaxation
    oscillations). ``latent`` = (x, v).
    """
    _check_sizes(n_series, length)
    rng = np.random.default_rng(seed)
    k, cls, names = _classes(mu=mu, drive_amplitude=drive_amplitude,
                             drive_frequency=drive_frequency)
    label = rng.integers(0, k, n_series)
    p = {key: np.array([c[key] for c in cls])[label]
         for key in ("mu", "drive_amplitude", "drive_frequency")}
    phase = rng.uniform(0, 2 * np.pi, n_series)

    def f(t: float, x: Array) -> Array:
        xx, v = x[:, 0], x[:, 1]
        drive = p["drive_amplitude"] * np.cos(p["drive_frequency"] * t + phase)
        return np.stack([v, p["mu"] * (1 - xx**2) * v - xx + drive], axis=1)

    x0 = rng.uniform(-3, 3, (n_series, 2))
    traj = rk4(f, x0, dt, length, substeps, burn_in=burn_in)
    obs, w = _project(traj, n_channels, noise, rng)
    return make_dataset(
        obs, latent=traj, label=label, classes=names, state_names=["x", "v"],
        extra={"W": (("channel", "state"), w)},
        attrs=dict(name="synthetic/van_der_pol", system="van_der_pol", seed=seed, noise=noise,
                   dt=dt, substeps=substeps, burn_in=burn_in, mu=list(mu),
                   drive_amplitude=list(drive_amplitude),
                   drive_frequency=list(drive_frequency)),
    )


# --------------------------------------------------------------------------------------------
# Switching autoregressive regimes
# --------------------------------------------------------------------------------------------


def make_switching_ar(
    n_series: int = 512,
    length: int = 512,
    *,
    n_channels: int = 3,
    n_regimes: int = 3,
    mean_dwell: float = 64.0,
    noise: float = 0.1,
    seed: int = 0,
    radius: float = 0.95,
) -> xr.Dataset:
    """Markov-switching AR(2) per channel with a sticky regime chain; per-time regime labels.

    Regime ``k`` is an AR(2) with poles ``radius * exp(+-i theta_k)`` (theta spread from slow to
    fast oscillation), innovation std ``sigma_k`` giving stationary std ``scale_k``, and mean
    ``offset_k`` (per channel). The chain stays with probability ``1 - 1/mean_dwell`` and
    otherwise jumps to a uniformly chosen other regime. ``latent`` is the noise-free AR signal,
    ``obs = latent + noise * N(0, 1)``; ``time_label[n, t]`` is the regime that generated step
    ``t`` of series ``n``; ``label`` is the regime that occupies most of the series.
    Coefficients are stored as ``ar_coef`` (regime, lag), ``sigma``, ``scale`` (regime) and
    ``offset`` (regime, channel).
    """
    _check_sizes(n_series, length)
    if n_regimes < 2:
        raise DataError(f"n_regimes must be >= 2 for switching, got {n_regimes}")
    rng = np.random.default_rng(seed)
    theta = np.linspace(0.04, 0.5, n_regimes) * np.pi
    a1, a2 = 2 * radius * np.cos(theta), -(radius**2) * np.ones(n_regimes)
    # stationary variance of AR(2) with unit innovations
    gamma0 = (1 - a2) / ((1 + a2) * ((1 - a2) ** 2 - a1**2))
    scale = np.geomspace(0.6, 1.6, n_regimes)[rng.permutation(n_regimes)]
    sigma = scale / np.sqrt(gamma0)
    offset = rng.normal(0, 0.5, (n_regimes, n_channels))
    p_stay = 1.0 - 1.0 / mean_dwell
    regime = np.empty((n_series, length), dtype=np.int64)
    regime[:, 0] = rng.integers(0, n_regimes, n_series)
    u = rng.random((length, n_series))
    jump = rng.integers(1, n_regimes, (length, n_series))
    for t in range(1, length):
        r = regime[:, t - 1]
        regime[:, t] = np.where(u[t] < p_stay, r, (r + jump[t]) % n_regimes)
    eps = rng.standard_normal((n_series, length, n_channels), dtype=np.float32)
    # AR on the centred signal z; latent = z + offset[regime]
    z = np.empty((n_series, length, n_channels), dtype=np.float32)
    k0 = regime[:, 0]
    z[:, 0] = scale[k0][:, None] * eps[:, 0]
    rho1 = a1[k0] / (1 - a2[k0])  # lag-1 autocorrelation: start in the stationary law
    z[:, 1] = rho1[:, None] * z[:, 0] + (scale[k0] * np.sqrt(1 - rho1**2))[:, None] * eps[:, 1]
    for t in range(2, length):
        k = regime[:, t]
        z[:, t] = (a1[k][:, None] * z[:, t - 1] + a2[k][:, None] * z[:, t - 2]
                   + sigma[k][:, None] * eps[:, t])
    latent = z + offset[regime].astype(np.float32)
    obs = latent + noise * rng.standard_normal(latent.shape, dtype=np.float32)
    counts = np.stack([(regime == k).sum(1) for k in range(n_regimes)], axis=1)
    return make_dataset(
        obs, latent=latent, label=counts.argmax(1),
        classes=[f"regime{k}" for k in range(n_regimes)],
        time_label=regime, time_label_kind="regime",
        state_names=[f"z{i}" for i in range(n_channels)],
        extra={"ar_coef": (("regime", "lag"), np.stack([a1, a2], axis=1)),
               "sigma": ("regime", sigma), "scale": ("regime", scale),
               "offset": (("regime", "channel"), offset)},
        attrs=dict(name="synthetic/switching_ar", system="switching_ar", seed=seed,
                   n_regimes=n_regimes, mean_dwell=mean_dwell, noise=noise, radius=radius),
    )


# --------------------------------------------------------------------------------------------
# Trend + multi-seasonal series with labelled anomalies
# --------------------------------------------------------------------------------------------

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
    _check_sizes(n_series, length)
    rng = np.random.default_rng(seed)
    n, tlen = n_series, length
    t = np.arange(tlen, dtype=np.float64)
    comps = [np.cumsum(rng.normal(0, 0.02, (n, tlen)), axis=1) + rng.normal(0, 1, (n, 1))
             * (t / tlen)[None]]  # slow random-walk drift + linear trend
    for period in periods:
        h = np.arange(1, n_harmonics + 1)
        amp = rng.uniform(0.5, 1.0, (n, n_harmonics)) / h
        ph = rng.uniform(0, 2 * np.pi, (n, n_harmonics))
        s = np.einsum("nh,nht->nt", amp,
                      np.cos(2 * np.pi * h[None, :, None] * t[None, None] / period
                             + ph[..., None]))
        comps.append(s / np.sqrt((amp**2).sum(1, keepdims=True) / 2))  # unit std
    latent = np.stack(comps, axis=-1).astype(np.float32)  # (N, T, K)
    n_comp = latent.shape[-1]
    loading = rng.uniform(0.5, 1.5, (n, n_channels, n_comp)) * rng.choice([-1, 1],
                                                                           (n, n_channels, 1))
    level = rng.normal(0, 1, (n, n_channels))
    clean = np.einsum("nck,ntk->ntc", loading.astype(np.float32), latent) + level[:, None]
    obs = clean + noise * rng.standard_normal(clean.shape, dtype=np.float32)
    std = clean.std(axis=1, keepdims=True)  # (N, 1, C)

    has = rng.random(n) < anomaly_prob
    count = np.where(has, rng.integers(1, max_anomalies + 1, n), 0)
    # one anomaly per slot of tlen // max_anomalies steps, slots chosen at random: anomalies
    # never overlap, so every labelled run is exactly one anomaly of one type
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


# --------------------------------------------------------------------------------------------
# Mixture of systems: a system-classification task
# --------------------------------------------------------------------------------------------

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
    _check_sizes(n_series, length)
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
