"""Build a user's model from ``FILE.py:FACTORY`` or ``package.module:FACTORY`` with arguments.

``FILE.py:FACTORY`` **executes the whole file** (its top-level code runs, as with
``python FILE.py`` minus the ``__main__`` block), then calls ``FACTORY(**args)``. Keep training
code under ``if __name__ == "__main__":`` or in the factory. ``package.module:FACTORY`` imports
the module as Python does. The file's folder is on ``sys.path`` while it runs, so it can import
its neighbours.

Arguments come from ``--module-arg key=value`` (repeatable); values are parsed as YAML
scalars (``3`` -> int, ``0.1`` or ``1e-3`` -> float, ``true`` -> bool, ``null`` -> None,
``ckpt/last.pt`` -> str), so a checkpoint path or a width needs no wrapper file.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import re
import sys
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml
from torch import nn

_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+$")


def parse_module_args(items: Iterable[str], flag: str = "--module-arg") -> dict[str, Any]:
    """``["width=64", "ckpt=run/last.pt"]`` -> ``{"width": 64, "ckpt": "run/last.pt"}``;
    ``flag`` names the option in errors."""
    args: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise ValueError(f"{flag} '{item}' must look like key=value with a Python "
                             "identifier as key")
        parsed = yaml.safe_load(value) if value.strip() else ""
        if isinstance(parsed, (dict, list)):
            parsed = value  # only scalars are parsed; anything else stays the literal string
        elif isinstance(parsed, str) and _NUMBER.match(parsed):
            parsed = float(parsed)  # YAML 1.1 reads 1e-3 as a string; users mean a number
        args[key] = parsed
    return args


def _load_file(path: Path, flag: str) -> Any:
    if not path.is_file():
        raise FileNotFoundError(f"{flag} file '{path}' does not exist")
    name = f"_tslayers_user_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look the module up by name
    folder = str(path.resolve().parent)
    sys.path.insert(0, folder)
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    finally:
        if folder in sys.path:
            sys.path.remove(folder)
    return module


def resolve_factory(spec: str, flag: str = "--module") -> Callable[..., Any]:
    """The callable named by ``spec`` (runs/imports its module, does not call it); ``flag``
    names the option in errors."""
    target, sep, func = spec.rpartition(":")
    if not sep or not target or not func:
        raise ValueError(f"{flag} '{spec}' must look like FILE.py:FACTORY or "
                         "package.module:FACTORY")
    if target.endswith(".py"):
        module = _load_file(Path(target), flag)
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as err:
            raise ValueError(f"{flag}: cannot import '{target}': {err}") from None
    factory = getattr(module, func, None)
    if not callable(factory):
        available = sorted(n for n, v in vars(module).items()
                           if callable(v) and not n.startswith("_")
                           and getattr(v, "__module__", None) == module.__name__)
        raise ValueError(f"{flag}: '{target}' has no callable '{func}'; callables defined "
                         f"there: {', '.join(available) or 'none'}")
    return factory


def load_factory(spec: str, args: Mapping[str, Any] | None = None, flag: str = "--module"
                 ) -> nn.Module:
    """Build the model: ``FACTORY(**args)`` from ``spec`` (see the module docstring: a
    ``FILE.py`` is executed). Raises ``ValueError`` with the factory's signature when the
    arguments do not fit, with the failing line when the factory raises, and when the result
    is not an ``nn.Module``; ``flag`` (``--module``, ``--compare``) names the option to fix."""
    factory = resolve_factory(spec, flag)
    args = dict(args or {})
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):
        signature = None
    if signature is not None:
        try:
            signature.bind(**args)
        except TypeError as err:
            raise ValueError(f"{flag}-arg: {spec}{signature} cannot take {args}: {err}") from None
    try:
        model = factory(**args)
    except Exception as err:  # the user's code: say where it failed and which flag built it
        call = f"{spec}({', '.join(f'{k}={v!r}' for k, v in args.items())})"
        raise ValueError(f"{flag}: {call} failed with {type(err).__name__}: {err}"
                         f"{_where(err, factory)}; fix the factory or its arguments "
                         f"({flag}-arg)") from err
    if not isinstance(model, nn.Module):
        raise ValueError(f"{flag}: {spec}() returned {type(model).__name__}, not an "
                         "nn.Module; return the model itself (e.g. the network inside a "
                         "Lightning module or a pipeline)")
    return model


def _where(err: BaseException, factory: Callable[..., Any]) -> str:
    """`` (at FILE:LINE)`` for a one-line error: the innermost frame in the factory's own file
    (the line the user can fix), else the innermost frame."""
    import traceback

    frames = traceback.extract_tb(err.__traceback__)
    home = getattr(getattr(factory, "__code__", None), "co_filename", None)
    own = [f for f in frames if f.filename == home]
    frame = (own or frames or [None])[-1]
    return f" (at {frame.filename}:{frame.lineno})" if frame else ""
