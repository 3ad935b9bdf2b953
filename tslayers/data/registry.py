"""Datasets by name, so YAML configs can say ``name: synthetic/lgssm`` plus ``params: {...}``.

Names are exact (``synthetic/mixture``) or families with a free suffix registered as
``prefix/*`` (``ucr/GunPoint``, ``gluonts/electricity``, ``statsmodels/co2``). A name that looks
like a file path (has a known suffix or exists on disk) is loaded by ``load_file``. Parameters
are checked against the loader's signature so a typo in a config fails with the allowed keys.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

import xarray as xr

from tslayers.data import adapters, synthetic
from tslayers.data.core import DataError

__all__ = ["register_dataset", "load_dataset", "list_datasets"]

_REGISTRY: dict[str, Callable[..., xr.Dataset]] = {}
_FILE_SUFFIXES = (".nc", ".nc4", ".netcdf", ".npy", ".npz", ".csv", ".json", ".jsonl")


def register_dataset(name: str) -> Callable[[Callable[..., xr.Dataset]], Callable[..., xr.Dataset]]:
    """Decorator: make ``fn(**params) -> xr.Dataset`` loadable as ``name``.

    A name ending in ``/*`` registers a family; its loader receives the suffix as its first
    positional argument (``ucr/*`` -> ``fn("GunPoint", **params)``).
    """

    def deco(fn: Callable[..., xr.Dataset]) -> Callable[..., xr.Dataset]:
        _REGISTRY[name] = fn
        return fn

    return deco


def list_datasets() -> list[str]:
    """Registered names (families shown as ``prefix/*``)."""
    return sorted(_REGISTRY)


def _call(fn: Callable[..., xr.Dataset], name: str, args: tuple, params: dict[str, Any]
          ) -> xr.Dataset:
    sig = inspect.signature(fn)
    has_var_kw = any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values())
    if not has_var_kw:
        allowed = [p.name for p in list(sig.parameters.values())[len(args):]
                   if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        unknown = [k for k in params if k not in allowed]
        if unknown:
            hints = {k: difflib.get_close_matches(k, allowed, n=1) for k in unknown}
            hint = "; ".join(f"'{k}' -> did you mean '{v[0]}'?" for k, v in hints.items() if v)
            raise DataError(f"dataset '{name}' got unknown parameters {unknown}. "
                            f"{hint + '. ' if hint else ''}Allowed: {sorted(allowed)}")
    ds = fn(*args, **params)
    ds.attrs.setdefault("name", name)
    return ds


def _looks_like_path(name: str) -> bool:
    return name.lower().endswith(_FILE_SUFFIXES) or Path(name).exists()


def load_dataset(name: str, **params: Any) -> xr.Dataset:
    """Load a dataset by registered name, family name or file path; ``params`` go to its loader.

    >>> ds = load_dataset("synthetic/lgssm", n_series=64, length=128, seed=1)
    """
    if name in _REGISTRY:
        return _call(_REGISTRY[name], name, (), params)
    if "/" in name:
        prefix, rest = name.split("/", 1)
        fam = f"{prefix}/*"
        if fam in _REGISTRY and rest:
            return _call(_REGISTRY[fam], name, (rest,), params)
    if _looks_like_path(name):
        return adapters.load_file(name, **params)
    close = difflib.get_close_matches(name, list(_REGISTRY), n=3, cutoff=0.5)
    hint = f" Did you mean {close}?" if close else ""
    raise DataError(
        f"unknown dataset '{name}'.{hint} Known names: {', '.join(list_datasets())}; families "
        "take a suffix (ucr/GunPoint, statsmodels/co2, gluonts/<repo name>), or give a path to a "
        f"file ({', '.join(_FILE_SUFFIXES)}). Add your own with @register_dataset('name').")


# ---- built-in names -------------------------------------------------------------------------
# Generator defaults are small (512 series x 512 steps) so CPU tests and the quickstart stay
# fast; pass n_series/length to scale.

for _system, _gen in synthetic.GENERATORS.items():
    register_dataset(f"synthetic/{_system}")(_gen)
register_dataset("synthetic/mixture")(synthetic.make_mixture)
register_dataset("ucr/*")(adapters.load_ucr)
register_dataset("uea/*")(adapters.load_ucr)
register_dataset("statsmodels/*")(adapters.load_statsmodels)
register_dataset("gluonts/*")(adapters.load_gluonts)
register_dataset("aeon/airline")(adapters.load_airline)
