"""Kalman filter / RTS smoother: the Bayes-optimal latent estimates and forecasts of an LGSSM.

For a linear-Gaussian state-space model the filter's mean ``E[x_t | y_0..t]`` and the smoother's
``E[x_t | y_0..T-1]`` are the exact posterior means, and ``C A^k E[x_t | y_0..t]`` is the
minimum-MSE k-step forecast of ``y_{t+k}``: no probe on any encoder can beat them in expectation.
``lgssm_optimum`` turns them into the numbers probes are compared against.

Model (the convention of ``make_lgssm``)::

    x_0 ~ N(m0, P0),  x_t = A x_{t-1} + w_t, w_t ~ N(0, Q)
    y_t = C x_t + v_t,  v_t ~ N(0, R)         (y_t observed at t = 0..T-1, NaN = missing)

Everything is vectorised over series. Missing channels are handled exactly by zeroing their rows
of ``C`` and the innovation, and giving them unit innovation variance (so they contribute no gain
and nothing to the likelihood). When no value is missing every series shares the same covariance
recursion, which is then computed once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import xarray as xr

from tslayers.data.core import DataError

__all__ = [
    "FilterResult",
    "SmootherResult",
    "kalman_filter",
    "kalman_smoother",
    "kalman_forecast",
    "lgssm_optimum",
    "lgssm_window_optimum",
    "system_matrices",
    "window_estimates",
]

Array = np.ndarray


@dataclass
class FilterResult:
    """Filtered and one-step predicted moments. Covariances have a leading dim of N or 1."""

    mean: Array  # (N, T, S)  E[x_t | y_0..t]
    cov: Array  # (N|1, T, S, S)
    pred_mean: Array  # (N, T, S)  E[x_t | y_0..t-1]
    pred_cov: Array  # (N|1, T, S, S)
    loglik: Array  # (N,)  log p(y_0..T-1)


@dataclass
class SmootherResult:
    mean: Array  # (N, T, S)  E[x_t | y_0..T-1]
    cov: Array  # (N|1, T, S, S)


def _sym(p: Array) -> Array:
    return 0.5 * (p + np.swapaxes(p, -1, -2))


def kalman_filter(
    y: Array, A: Array, C: Array, Q: Array, R: Array, m0: Array, P0: Array
) -> FilterResult:
    """Filter observations ``y`` (N, T, C) (NaN = missing) through one shared model."""
    y = np.asarray(y, dtype=np.float64)
    if y.ndim == 2:
        y = y[None]
    n, t_len, c = y.shape
    s = A.shape[0]
    if C.shape != (c, s):
        raise DataError(f"C has shape {C.shape}, expected ({c}, {s}) for {c} channels")
    mask = np.isfinite(y)
    shared = bool(mask.all())
    nb = 1 if shared else n
    mean = np.empty((n, t_len, s))
    pmean = np.empty((n, t_len, s))
    cov = np.empty((nb, t_len, s, s))
    pcov = np.empty((nb, t_len, s, s))
    loglik = np.zeros(n)
    m = np.broadcast_to(m0, (n, s)).astype(np.float64)
    p = np.broadcast_to(P0, (nb, s, s)).astype(np.float64)
    eye_c = np.eye(c)
    for t in range(t_len):
        if t > 0:
            m = m @ A.T
            p = _sym(A @ p @ A.T + Q)
        pmean[:, t], pcov[:, t] = m, p
        if shared:
            cm = C[None]  # (1, C, S)
            rm = R[None]
            yt = y[:, t]
            obs_t = np.full((n,), c)
        else:
            mk = mask[:, t].astype(np.float64)  # (N, C)
            cm = C[None] * mk[..., None]
            rm = R[None] * mk[:, :, None] * mk[:, None, :] + eye_c * (1 - mk)[:, None, :]
            yt = np.where(mask[:, t], y[:, t], 0.0)
            obs_t = mask[:, t].sum(1)
        sc = _sym(cm @ p @ np.swapaxes(cm, 1, 2) + rm)  # innovation covariance (nb, C, C)
        sinv = np.linalg.inv(sc)
        gain = p @ np.swapaxes(cm, 1, 2) @ sinv  # (nb, S, C)
        if shared:
            v = yt - m @ C.T
            m = m + v @ gain[0].T
            quad = np.einsum("nc,cd,nd->n", v, sinv[0], v)
        else:
            v = yt - np.einsum("ncs,ns->nc", cm, m)
            m = m + np.einsum("nsc,nc->ns", gain, v)
            quad = np.einsum("nc,ncd,nd->n", v, sinv, v)
        p = _sym(p - gain @ cm @ p)
        mean[:, t], cov[:, t] = m, p
        logdet = np.linalg.slogdet(sc)[1]
        loglik -= 0.5 * (quad + logdet + obs_t * np.log(2 * np.pi))
    return FilterResult(mean, cov, pmean, pcov, loglik)


def kalman_smoother(filt: FilterResult, A: Array) -> SmootherResult:
    """Rauch-Tung-Striebel smoother on top of a ``FilterResult``."""
    n, t_len, s = filt.mean.shape
    mean = filt.mean.copy()
    cov = filt.cov.copy()
    for t in range(t_len - 2, -1, -1):
        p_f = filt.cov[:, t]
        p_pred = filt.pred_cov[:, t + 1]
        g = np.swapaxes(np.linalg.solve(p_pred, A @ p_f), 1, 2)  # P_f A^T P_pred^{-1}
        d = mean[:, t + 1] - filt.pred_mean[:, t + 1]
        mean[:, t] = filt.mean[:, t] + (np.einsum("ij,nj->ni", g[0], d) if g.shape[0] == 1
                                         else np.einsum("nij,nj->ni", g, d))
        cov[:, t] = _sym(p_f + g @ (cov[:, t + 1] - p_pred) @ np.swapaxes(g, 1, 2))
    return SmootherResult(mean, cov)


def kalman_forecast(
    mean: Array, A: Array, C: Array, horizons: Sequence[int]
) -> dict[int, Array]:
    """Optimal k-step forecasts ``C A^k m`` of y from filtered means (..., S) -> (..., C)."""
    out = {}
    for k in horizons:
        if k < 1:
            raise DataError(f"forecast horizons must be >= 1, got {k}")
        out[int(k)] = mean @ (C @ np.linalg.matrix_power(A, int(k))).T
    return out


def system_matrices(ds: xr.Dataset, system: int = 0) -> dict[str, Array]:
    """The LGSSM matrices stored by ``make_lgssm`` for one system (float64)."""
    missing = [k for k in ("A", "Cobs", "Q", "R", "m0", "P0") if k not in ds]
    if missing:
        raise DataError(f"dataset '{ds.attrs.get('name', '?')}' lacks LGSSM matrices {missing}; "
                        "lgssm_optimum needs a dataset made by make_lgssm / "
                        "load_dataset('synthetic/lgssm').")
    get = {k: np.asarray(ds[k].values, dtype=np.float64) for k in ("A", "Cobs", "Q", "R", "m0",
                                                                    "P0")}
    if "system" in ds["A"].dims:
        get = {k: v[system] for k, v in get.items()}
    return {"A": get["A"], "C": get["Cobs"], "Q": get["Q"], "R": get["R"], "m0": get["m0"],
            "P0": get["P0"]}


def window_estimates(ds: xr.Dataset, x: Array, systems: Array | None,
                     horizons: Sequence[int]) -> dict[str, Any]:
    """Bayes-optimal estimates for windows ``x`` (W, T, C) (NaN = missing), each filtered from
    the stationary prior (what a window model can know at best): ``filtered`` and ``smoothed``
    state means (W, T, S) and ``forecast`` {h: (W, C)} from the window's last step.
    ``systems`` (W,) picks each window's system (None: system 0)."""
    x = np.asarray(x, dtype=np.float64)
    systems = np.zeros(len(x), dtype=int) if systems is None else np.asarray(systems)
    s = system_matrices(ds, int(systems[0]))["A"].shape[0]
    filt = np.zeros((*x.shape[:2], s))
    smooth = np.zeros_like(filt)
    fc = {int(h): np.zeros((len(x), x.shape[-1])) for h in horizons}
    for k in np.unique(systems):
        sel = systems == k
        mats = system_matrices(ds, int(k))
        f = kalman_filter(x[sel], **mats)
        filt[sel], smooth[sel] = f.mean, kalman_smoother(f, mats["A"]).mean
        for h, pred in kalman_forecast(f.mean[:, -1], mats["A"], mats["C"], horizons).items():
            fc[h][sel] = pred
    return {"filtered": filt, "smoothed": smooth, "forecast": fc}


def _r2(true: Array, est: Array) -> Array:
    """Per-state R^2 over all finite rows of (M, S) arrays."""
    ok = np.isfinite(true).all(-1) & np.isfinite(est).all(-1)
    true, est = true[ok], est[ok]
    sst = ((true - true.mean(0)) ** 2).sum(0)
    return 1.0 - ((true - est) ** 2).sum(0) / np.maximum(sst, 1e-300)


def _mse(target: Array, pred: Array) -> tuple[float, Array]:
    """MSE over observed targets, overall and per channel (last axis)."""
    err = (target - pred) ** 2
    ok = np.isfinite(err)
    per_ch = np.where(ok, err, 0).sum(tuple(range(err.ndim - 1))) / np.maximum(
        ok.sum(tuple(range(err.ndim - 1))), 1)
    return float(np.where(ok, err, 0).sum() / max(ok.sum(), 1)), per_ch


def _groups(ds: xr.Dataset) -> list[tuple[int, Array]]:
    n_sys = ds.sizes.get("system", 1)
    if n_sys == 1 or "label" not in ds:
        return [(0, np.arange(ds.sizes["series"]))]
    lab = ds["label"].values
    return [(k, np.flatnonzero(lab == k)) for k in range(n_sys) if (lab == k).any()]


def _summary(latent: Array, filt: Array, smooth: Array,
             fc: dict[int, list[tuple[Array, Array]]], extra: dict[str, Any]) -> dict[str, Any]:
    """Scores from true and estimated states and, per horizon, (target, forecast) pairs
    collected over system groups (pooled here; a horizon with no pair gets no score)."""
    s = latent.shape[-1]
    fr2 = _r2(latent.reshape(-1, s), filt.reshape(-1, s))
    sr2 = _r2(latent.reshape(-1, s), smooth.reshape(-1, s))
    out: dict[str, Any] = {
        "filtered_r2": fr2, "filtered_r2_mean": float(fr2.mean()),
        "smoothed_r2": sr2, "smoothed_r2_mean": float(sr2.mean()),
        "forecast_mse": {}, "forecast_mse_per_channel": {},
    }
    for k, pairs in fc.items():
        if pairs:
            target, pred = (np.concatenate([a.reshape(-1, a.shape[-1]) for a in side])
                            for side in zip(*pairs, strict=True))
            out["forecast_mse"][k], out["forecast_mse_per_channel"][k] = _mse(target, pred)
    out.update(extra)
    return out


def lgssm_optimum(
    ds: xr.Dataset,
    horizons: Sequence[int] = (1, 4, 16),
    *,
    context: int | None = None,
    stride: int | None = None,
    init: Literal["prior", "series"] = "prior",
) -> dict[str, Any]:
    """Bayes-optimal scores on an LGSSM dataset, from the dataset alone.

    Returns ``filtered_r2`` / ``smoothed_r2`` (per state, arrays) and their ``*_mean``; the
    empirical ``forecast_mse[k]`` of the optimal k-step forecast of ``obs`` (same units as
    ``obs``, averaged over channels and observed targets) and ``forecast_mse_per_channel[k]``.

    With ``context=None`` the filter runs over whole series (every t is a forecast origin).
    With ``context`` it delegates to ``lgssm_window_optimum`` (see there for which bound is fair
    for a window-based probe).
    """
    if context is not None:
        return lgssm_window_optimum(ds, context, horizons, stride=stride, init=init)
    if "latent" not in ds:
        raise DataError("lgssm_optimum needs ds['latent'] (the true states) to score R^2")
    obs = ds["obs"].values.astype(np.float64)
    lat = ds["latent"].values.astype(np.float64)
    n, t_len, _ = obs.shape
    filt_all = np.full_like(lat, np.nan)
    smooth_all = np.full_like(lat, np.nan)
    fc: dict[int, list[tuple[Array, Array]]] = {int(k): [] for k in horizons}
    for k_sys, idx in _groups(ds):
        mats = system_matrices(ds, k_sys)
        f = kalman_filter(obs[idx], **mats)
        sm = kalman_smoother(f, mats["A"])
        filt_all[idx], smooth_all[idx] = f.mean, sm.mean
        for k, pred in kalman_forecast(f.mean, mats["A"], mats["C"], horizons).items():
            if k < t_len:
                fc[k].append((obs[idx][:, k:], pred[:, : t_len - k]))
    return _summary(lat, filt_all, smooth_all, fc, {"mode": "series", "n_series": n})


def lgssm_window_optimum(
    ds: xr.Dataset,
    context: int,
    horizons: Sequence[int] = (1, 4, 16),
    *,
    stride: int | None = None,
    init: Literal["prior", "series"] = "prior",
) -> dict[str, Any]:
    """Optimal scores for windows ``[s, s + context)`` cut every ``stride`` (default context).

    Latent R^2 is over every position of every window; forecasts are from the last context
    step to ``s + context - 1 + k`` (windows whose target falls outside the series are skipped
    for that horizon).

    ``init="prior"`` (default, **the fair bound for a window-based probe**): the filter starts
    at the window with the stationary prior ``(m0, P0)``, i.e. it conditions on exactly what the
    model sees. ``filtered_r2`` bounds a causal encoder, ``smoothed_r2`` (smoother within the
    window) a bidirectional one. ``init="series"``: filter/smoother over the whole series, so
    estimates use observations before (and, for the smoother, after) the window: an upper bound
    no window model can reach, useful to see how much a short context costs.
    """
    if "latent" not in ds:
        raise DataError("lgssm_window_optimum needs ds['latent'] (the true states)")
    stride = stride or context
    obs = ds["obs"].values.astype(np.float64)
    lat = ds["latent"].values.astype(np.float64)
    n, t_len, c = obs.shape
    if context > t_len:
        raise DataError(f"context {context} is longer than the series ({t_len} steps); use a "
                        f"context <= {t_len}")
    starts = np.arange(0, t_len - context + 1, stride)
    pos = starts[:, None] + np.arange(context)[None]  # (W, L)
    lat_w, filt_w, smooth_w = [], [], []
    fc: dict[int, list[tuple[Array, Array]]] = {int(k): [] for k in horizons}
    for k_sys, idx in _groups(ds):
        mats = system_matrices(ds, k_sys)
        o, la = obs[idx], lat[idx]
        fm, smm, last = _window_states(ds, o, k_sys, mats, pos, init)
        lat_w.append(la[:, pos].reshape(-1, context, la.shape[-1]))
        filt_w.append(fm)
        smooth_w.append(smm)
        for k, pred in kalman_forecast(last, mats["A"], mats["C"], horizons).items():
            tgt_t = pos[:, -1] + k
            ok = tgt_t < t_len
            if ok.any():
                fc[k].append((o[:, tgt_t[ok]].reshape(-1, c), pred[:, ok].reshape(-1, c)))
    return _summary(np.concatenate(lat_w), np.concatenate(filt_w), np.concatenate(smooth_w), fc,
                    {"mode": f"window/{init}", "context": context, "stride": stride,
                     "n_windows": int(n * len(starts))})


def _window_states(ds: xr.Dataset, obs: Array, k_sys: int, mats: dict[str, Array], pos: Array,
                   init: str) -> tuple[Array, Array, Array]:
    """Filtered and smoothed states (N*W, L, S) at the window positions ``pos`` (W, L) of
    system ``k_sys``'s series ``obs`` (N, T, C), and the filtered state at each window's last
    step (N, W, S), the forecast origin; ``init`` as in ``lgssm_window_optimum``."""
    n, context = len(obs), pos.shape[1]
    if init == "prior":
        win = obs[:, pos].reshape(-1, context, obs.shape[-1])  # (N*W, L, C)
        est = window_estimates(ds, win, np.full(len(win), k_sys), [])
        fm = est["filtered"]
        return fm, est["smoothed"], fm[:, -1].reshape(n, len(pos), -1)
    if init == "series":
        f = kalman_filter(obs, **mats)
        sm = kalman_smoother(f, mats["A"])
        s = f.mean.shape[-1]
        return (f.mean[:, pos].reshape(-1, context, s), sm.mean[:, pos].reshape(-1, context, s),
                f.mean[:, pos[:, -1]])
    raise DataError(f"init must be 'prior' or 'series', got {init!r}")
