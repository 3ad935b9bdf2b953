"""Discrete-time stochastic systems with known latent states.

Linear-Gaussian state-space models (``tslayers.data.kalman`` gives their Bayes-optimal latent
estimates and forecasts) and Markov-switching AR(2) regimes with per-time regime labels.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg
import xarray as xr

from tslayers.data.core import DataError, check_sizes, make_dataset

__all__ = ["random_stable_dynamics", "make_lgssm", "make_switching_ar"]

Array = np.ndarray


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
    check_sizes(n_series, length)
    if state_dim < 1 or obs_dim < 1:
        raise DataError(f"state_dim and obs_dim must be >= 1, got {state_dim}, {obs_dim}")
    rng = np.random.default_rng(seed)
    stack = _draw_lgssm_systems(rng, n_systems, state_dim, obs_dim, noise, process_noise, radius)
    label = rng.integers(0, n_systems, n_series)
    latent = _simulate_lgssm(stack, label, length, process_noise, rng)
    signal = np.einsum("ncs,nts->ntc", stack["Cobs"][label].astype(np.float32), latent)
    obs = signal + noise * rng.standard_normal(signal.shape, dtype=np.float32)
    return make_dataset(
        obs, latent=latent, label=label, classes=[f"system{i}" for i in range(n_systems)],
        extra={k: (_LGSSM_DIMS[k], stack[k]) for k in stack},
        attrs=dict(name="synthetic/lgssm", system="lgssm", seed=seed, state_dim=state_dim,
                   obs_dim=obs_dim, noise=noise, process_noise=process_noise,
                   n_systems=n_systems, radius=list(radius)),
    )


_LGSSM_DIMS = {"A": ("system", "state", "state_in"), "Cobs": ("system", "channel", "state"),
               "Q": ("system", "state", "state_in"), "R": ("system", "channel", "channel_in"),
               "m0": ("system", "state"), "P0": ("system", "state", "state_in")}


def _draw_lgssm_systems(rng: np.random.Generator, n_systems: int, s: int, c: int, noise: float,
                        process_noise: float, radius: tuple[float, float]) -> dict[str, Array]:
    """``n_systems`` stationary systems (state dim ``s``, ``c`` channels), each matrix of
    ``_LGSSM_DIMS`` stacked along a leading system axis."""
    mats: dict[str, list[Array]] = {k: [] for k in _LGSSM_DIMS}
    for _ in range(n_systems):
        a = random_stable_dynamics(s, rng, radius)
        q = process_noise**2 * np.eye(s)
        p0 = scipy.linalg.solve_discrete_lyapunov(a, q)
        p0 = (p0 + p0.T) / 2
        cm = rng.standard_normal((c, s))
        cm /= np.sqrt(np.einsum("cs,st,ct->c", cm, p0, cm))[:, None]
        for key, val in zip(mats, (a, cm, q, noise**2 * np.eye(c), np.zeros(s), p0), strict=True):
            mats[key].append(val)
    return {k: np.stack(v) for k, v in mats.items()}


def _simulate_lgssm(stack: dict[str, Array], label: Array, length: int, process_noise: float,
                    rng: np.random.Generator) -> Array:
    """Latent states (N, T, S) of series ``n`` run by system ``label[n]``, started in the
    stationary law ``N(0, P0)``."""
    n_series, s = len(label), stack["A"].shape[-1]
    a_i = stack["A"][label]  # (N, S, S)
    chol_p0 = np.linalg.cholesky(stack["P0"])[label]
    x = np.einsum("nij,nj->ni", chol_p0, rng.standard_normal((n_series, s)))
    w = process_noise * rng.standard_normal((length, n_series, s), dtype=np.float32)
    latent = np.empty((n_series, length, s), dtype=np.float32)
    single = len(stack["A"]) == 1
    for t in range(length):
        if t > 0:
            x = (x @ stack["A"][0].T if single else np.einsum("nij,nj->ni", a_i, x)) + w[t]
        latent[:, t] = x
    return latent


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
    check_sizes(n_series, length)
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
    regime = _regime_chain(rng, n_series, length, n_regimes, 1.0 - 1.0 / mean_dwell)
    eps = rng.standard_normal((n_series, length, n_channels), dtype=np.float32)
    z = _switching_ar2(regime, a1, a2, sigma, scale, eps)  # centred; latent adds the offset
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


def _regime_chain(rng: np.random.Generator, n_series: int, length: int, n_regimes: int,
                  p_stay: float) -> Array:
    """Sticky Markov chain (N, T): stay with ``p_stay``, else jump to another regime."""
    regime = np.empty((n_series, length), dtype=np.int64)
    regime[:, 0] = rng.integers(0, n_regimes, n_series)
    u = rng.random((length, n_series))
    jump = rng.integers(1, n_regimes, (length, n_series))
    for t in range(1, length):
        r = regime[:, t - 1]
        regime[:, t] = np.where(u[t] < p_stay, r, (r + jump[t]) % n_regimes)
    return regime


def _switching_ar2(regime: Array, a1: Array, a2: Array, sigma: Array, scale: Array, eps: Array
                   ) -> Array:
    """Centred AR(2) signal (N, T, C) whose coefficients follow ``regime``, started in the
    stationary law of the first regime; ``eps`` are the unit innovations."""
    z = np.empty(eps.shape, dtype=np.float32)
    k0 = regime[:, 0]
    z[:, 0] = scale[k0][:, None] * eps[:, 0]
    rho1 = a1[k0] / (1 - a2[k0])  # lag-1 autocorrelation
    z[:, 1] = rho1[:, None] * z[:, 0] + (scale[k0] * np.sqrt(1 - rho1**2))[:, None] * eps[:, 1]
    for t in range(2, regime.shape[1]):
        k = regime[:, t]
        z[:, t] = (a1[k][:, None] * z[:, t - 1] + a2[k][:, None] * z[:, t - 2]
                   + sigma[k][:, None] * eps[:, t])
    return z
