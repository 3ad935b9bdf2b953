"""Shared pieces of the real-data benchmark: logging, config, per-dataset cache, bootstrap
intervals (tslayers' own resampling helpers) and tslayers pretraining on numpy arrays."""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from tslayers.probing.metrics import bootstrap_counts, interval, row_weights

ROOT = Path(__file__).resolve().parents[2]
_T0 = time.perf_counter()


def log(msg: str) -> None:
    print(f"[{time.perf_counter() - _T0:7.1f}s] {msg}", file=sys.stderr, flush=True)


def elapsed() -> float:
    return time.perf_counter() - _T0


def rel(path: Path) -> str:
    """A path relative to the repository root (never an absolute machine path)."""
    try:
        return str(Path(path).resolve().relative_to(ROOT))
    except ValueError:
        return Path(path).name


def quiet() -> None:
    """Silence Lightning's banners, gluonts' messages and progress bars."""
    os.environ.setdefault("TQDM_DISABLE", "1")
    warnings.filterwarnings("ignore")
    import functools

    import gluonts.model.evaluation as gluonts_evaluation
    import lightning  # noqa: F401  (configures its loggers on import; override afterwards)
    from tqdm import tqdm

    gluonts_evaluation.tqdm = functools.partial(tqdm, disable=True)
    for name in list(logging.root.manager.loggerDict) + ["lightning", "gluonts"]:
        if name.startswith(("lightning", "pytorch_lightning", "gluonts")):
            logging.getLogger(name).setLevel(logging.ERROR)


# ------------------------------------------------------------------------------ config
def deep_merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = (deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict)
                  else copy.deepcopy(v))
    return out


def load_bench_config(path: Path, quick: bool) -> dict:
    cfg = yaml.safe_load(Path(path).read_text())
    quick_cfg = cfg.pop("quick", {}) or {}
    return deep_merge(cfg, quick_cfg) if quick else cfg


def build(cls: type, data: dict, where: str) -> Any:
    from tslayers.config import from_dict

    return from_dict(cls, data, prefix=f"{where}.")


# ------------------------------------------------------------------------------ cache
def cached(work: Path, kind: str, name: str, settings: dict, fn, force: bool = False) -> dict:
    """Run ``fn()`` once per (kind, dataset, settings): its JSON result is kept under
    ``work`` so an interrupted run resumes where it stopped."""
    key = hashlib.sha1(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()
    path = work / "cache" / f"{kind}-{name}-{key[:10]}.json"
    if path.exists() and not force:
        log(f"{kind} {name}: cached ({rel(path) if path.is_absolute() else path})")
        return json.loads(path.read_text())
    t0 = time.perf_counter()
    res = fn()
    res["wall_s"] = time.perf_counter() - t0
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(res, default=_jsonable))
    tmp.replace(path)
    return json.loads(path.read_text())


def _jsonable(v: Any) -> Any:
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, np.generic):
        return v.item()
    raise TypeError(f"not JSON serialisable: {type(v)}")


# ------------------------------------------------------------------------------ intervals
def weighted_mean_ci(values: dict[str, np.ndarray], groups: np.ndarray, n_boot: int,
                     seed: int, ci: float = 0.9, denom: np.ndarray | None = None
                     ) -> tuple[dict[str, tuple[float, float, float]], np.ndarray]:
    """Point estimate and percentile interval of sum(v) / sum(denom) (a mean when ``denom``
    is None) for every method in ``values`` {name: (n,)}, resampling ``groups`` (series, or
    blocks of windows) with replacement; every method shares the same draws (paired).
    Returns ({name: (estimate, lo, hi)}, the (R, n) weights for paired differences)."""
    groups = np.asarray(groups)
    counts = bootstrap_counts(groups, n_boot, seed, "test")
    w = row_weights(counts, groups, groups)
    d = np.ones(len(groups)) if denom is None else np.asarray(denom, dtype=np.float64)
    out = {}
    for name, v in values.items():
        v = np.asarray(v, dtype=np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            reps = (w @ v) / (w @ d)
        out[name] = (float(v.sum() / d.sum()), *interval(reps, ci))
    return out, w


def paired_diff_ci(a: np.ndarray, b: np.ndarray, w: np.ndarray, ci: float = 0.9,
                   denom: np.ndarray | None = None) -> tuple[float, float, float]:
    """(a - b) as ratio-of-sums means under the shared bootstrap weights ``w`` (R, n)."""
    d = np.ones(len(a)) if denom is None else np.asarray(denom, dtype=np.float64)
    diff = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        reps = (w @ diff) / (w @ d)
    return (float(diff.sum() / d.sum()), *interval(reps, ci))


def seed_t_interval(per_seed: list[float], ci: float = 0.9) -> tuple[float, float]:
    """Student-t interval of the mean of per-seed values (seed variance only); (nan, nan)
    for fewer than two seeds."""
    from scipy import stats

    v = np.asarray(per_seed, dtype=np.float64)
    if len(v) < 2:
        return float("nan"), float("nan")
    half = stats.t.ppf(0.5 + ci / 2, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v))
    return float(v.mean() - half), float(v.mean() + half)


def _hull(boot: tuple[float, float, float], per_seed: list[float], ci: float
          ) -> tuple[float, float, float]:
    """The bootstrap interval widened, where it is narrower, to the t-interval across seeds."""
    lo, hi = seed_t_interval(per_seed, ci)
    if not np.isfinite(lo):
        return boot
    return boot[0], min(boot[1], lo), max(boot[2], hi)


def seed_mean_ci(values: dict[str, np.ndarray], groups: np.ndarray, n_boot: int, seed: int,
                 ci: float = 0.9, denom: np.ndarray | None = None,
                 bounds: tuple[float, float] = (-np.inf, np.inf)
                 ) -> tuple[dict[str, tuple[float, float, float]], np.ndarray]:
    """Like ``weighted_mean_ci`` for per-seed values {name: (S, n)}: the estimate is the mean
    over seeds; its interval is the paired bootstrap over test units of the seed-averaged
    values, widened to the t-interval across the S per-seed scores where that is wider, and
    clipped to the metric's ``bounds``."""
    d = np.ones(len(groups)) if denom is None else np.asarray(denom, dtype=np.float64)
    arr = {k: np.atleast_2d(np.asarray(v, dtype=np.float64)) for k, v in values.items()}
    boot, w = weighted_mean_ci({k: v.mean(0) for k, v in arr.items()}, groups, n_boot, seed,
                               ci, denom)
    out = {}
    for k, v in arr.items():
        est, lo, hi = _hull(boot[k], list(v.sum(1) / d.sum()), ci)
        out[k] = (est, max(lo, bounds[0]), min(hi, bounds[1]))
    return out, w


def seed_diff_ci(a: np.ndarray, b: np.ndarray, w: np.ndarray, ci: float = 0.9,
                 denom: np.ndarray | None = None) -> tuple[tuple[float, float, float], list]:
    """(a - b) for per-seed values (S, n) under the shared weights ``w``: the seed-mean
    difference with the wider of the paired bootstrap (seed-averaged values) and the
    t-interval across seeds; also the per-seed point differences."""
    a, b = np.atleast_2d(np.asarray(a, np.float64)), np.atleast_2d(np.asarray(b, np.float64))
    d = np.ones(a.shape[1]) if denom is None else np.asarray(denom, dtype=np.float64)
    per_seed = list((a - b).sum(1) / d.sum())
    return _hull(paired_diff_ci(a.mean(0), b.mean(0), w, ci, denom), per_seed, ci), per_seed


def fmt_seeds(values: list[float], digits: int = 3) -> str:
    return " / ".join(f"{v:.{digits}f}" for v in values)


def fmt_ci(v: tuple | list | None, digits: int = 3) -> str:
    if v is None:
        return "–"
    est, lo, hi = v
    if not np.isfinite(lo):
        return f"{est:.{digits}f}"
    return f"{est:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


# ------------------------------------------------------------------------------ pretraining
def pretrain_arrays(train: list[np.ndarray] | np.ndarray, val: list[np.ndarray] | np.ndarray,
                    encoder: dict, objective: dict, steps: int, batch_size: int, lr: float,
                    context: int, horizon: int, stride: int | None, seed: int, out: Path,
                    extra_train: dict | None = None):
    """Pretrain a TemporalEncoder with one tslayers objective on numpy series (train only;
    ``val`` is a monitoring-only split that ``pretrain`` requires, taken from train data).
    Returns (encoder, objective module, seconds)."""
    from tslayers.data import DataConfig, from_numpy, save_netcdf
    from tslayers.model import EncoderConfig, TemporalEncoder
    from tslayers.objectives import ObjectiveConfig, load_objective
    from tslayers.training import PretrainConfig, TrainConfig, pretrain

    out.mkdir(parents=True, exist_ok=True)
    series = [np.asarray(s, np.float32) for s in train] + [np.asarray(s, np.float32)
                                                           for s in val]
    ds = from_numpy(series, split=["train"] * len(train) + ["val"] * len(val),
                    name="real/train-only")
    path = save_netcdf(ds, out / "train_only.nc")
    tcfg = dict(max_steps=steps, warmup_steps=max(1, steps // 10), lr=lr,
                val_check_interval=steps, ckpt_every_n_steps=steps, progress_bar=False,
                accelerator="cpu", devices=1, seed=seed, **(extra_train or {}))
    pcfg = PretrainConfig(
        data=DataConfig(name=str(path), context=context, horizon=horizon, stride=stride,
                        batch_size=batch_size, split="series", seed=seed),
        encoder=build(EncoderConfig, encoder, "encoder"),
        objective=build(ObjectiveConfig, objective, "objective"),
        train=build(TrainConfig, tcfg, "train"))
    t0 = time.perf_counter()
    run = pretrain(pcfg, out_dir=out / "run", overwrite=True)  # the JSON cache resumes
    secs = time.perf_counter() - t0
    enc = TemporalEncoder.from_pretrained(run / "encoder").eval()
    return enc, load_objective(run / "objective", enc.config).eval(), secs


def untrained_twin(encoder, seed: int):
    from tslayers.model import TemporalEncoder

    torch.manual_seed(seed)
    return TemporalEncoder(copy.deepcopy(encoder.config)).eval()
