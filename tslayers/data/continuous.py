"""Continuous systems with known latent states: Lorenz-63, damped driven pendulum, Van der Pol.

They are integrated with classical RK4 (``rk4``) at ``dt / substeps`` and sampled every ``dt``;
a burn-in puts chaotic systems on their attractor. Observations are noisy random linear
projections of the standardised state features, so that probes must *decode* the state rather
than read it off a channel. Parameter tuples define the classes (``label``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import xarray as xr

from tslayers.data.core import DataError, check_sizes, make_dataset

__all__ = ["rk4", "make_lorenz", "make_pendulum", "make_van_der_pol"]

Array = np.ndarray


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


def _draw_classes(rng: np.random.Generator, n_series: int, **params: Sequence[float]
                  ) -> tuple[Array, list[str], dict[str, Array]]:
    """Zip per-class parameter tuples into classes and draw one per series: the labels, readable
    class names and each parameter's value per series (N,)."""
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
    label = rng.integers(0, k, n_series)
    return label, names, {key: np.array([c[key] for c in cls])[label] for key in full}


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
    check_sizes(n_series, length)
    rng = np.random.default_rng(seed)
    label, names, p = _draw_classes(rng, n_series, rho=rho, sigma=sigma, beta=beta)
    p = {key: v[:, None] for key, v in p.items()}

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
    check_sizes(n_series, length)
    rng = np.random.default_rng(seed)
    label, names, p = _draw_classes(rng, n_series, damping=damping,
                                    drive_amplitude=drive_amplitude,
                                    drive_frequency=drive_frequency)
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
    check_sizes(n_series, length)
    rng = np.random.default_rng(seed)
    label, names, p = _draw_classes(rng, n_series, mu=mu, drive_amplitude=drive_amplitude,
                                    drive_frequency=drive_frequency)
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
