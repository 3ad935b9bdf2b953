"""Forward-hook taps on any ``nn.Module``, reduced on the fly so memory stays bounded.

The one tap mechanism of tslayers: our :class:`~tslayers.model.TemporalEncoder` ends every layer
in an identity module (``embed.out``, ``blocks.{i}.out``), so it is tapped exactly like any
model's ``named_modules()`` (a GluonTS PatchTST, a Hugging Face encoder, an LSTM/GRU world
model...).
A tap keeps, per batch, one of:

- ``mean``     mean over the time/token axis            -> (B, D)
- ``last``     the last token                            -> (B, D)
- ``register`` mean over the first ``num_prefix`` tokens -> (B, D)  (register/CLS pooling)
- ``tokens``   every token, aligned to time              -> (B, N, D)
- ``none``     the raw tensor (already (B, D), or you know what you are doing)

Once every selected module has fired the forward pass is stopped (``stop_early``), so tapping
layer 3 of a 48-layer model costs 3 layers.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import os
import tempfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

REDUCTIONS = ("mean", "last", "register", "tokens", "none")


class _StopForward(Exception):
    """Raised from the deepest hook to abandon the rest of the forward pass."""


def _split_patterns(patterns: str | Iterable[str]) -> list[str]:
    if isinstance(patterns, str):
        patterns = patterns.split(",")
    return [p.strip() for p in patterns if p.strip()]


def select_modules(model: nn.Module, patterns: str | Iterable[str]) -> dict[str, nn.Module]:
    """Modules whose name matches any glob in ``patterns`` (comma separated or a list), in
    forward-definition order.

    Raises ``ValueError`` listing the available names when a pattern matches nothing.
    """
    named = dict(model.named_modules())
    named.pop("", None)
    selected: dict[str, nn.Module] = {}
    for pattern in _split_patterns(patterns):
        hits = [n for n in named if fnmatch.fnmatchcase(n, pattern)]
        if not hits:
            available = list(named)
            shown = ", ".join(available[:60]) + (" ..." if len(available) > 60 else "")
            if not available:
                rnn = isinstance(model, nn.RNNBase)
                raise ValueError(
                    f"tap pattern '{pattern}': {type(model).__name__} has no submodules to tap"
                    + ("; pass --unroll-rnn (tslayers.probing.unroll_rnns) to tap each layer"
                       if rnn else "; wrap it in a module whose layers are attributes"))
            raise ValueError(
                f"tap pattern '{pattern}' matches no module of {type(model).__name__}; "
                f"available names: {shown}"
            )
        for name in hits:
            selected.setdefault(name, named[name])
    if not selected:
        raise ValueError("no tap pattern given; pass e.g. 'blocks.*' or '*'")
    order = {id(m): i for i, m in enumerate(named.values())}
    return dict(sorted(selected.items(), key=lambda kv: order[id(kv[1])]))


class TapsNotFired(RuntimeError):
    """Tapped modules that the forward pass never called (containers, unused branches)."""

    def __init__(self, missing: list[str]):
        self.missing = missing
        super().__init__(f"taps {missing} did not fire during the forward pass; they are not "
                         "on the forward path for this input")


def firing_taps(model: nn.Module, patterns: str | Iterable[str], *args: Any) -> list[str]:
    """The modules ``patterns`` select that one forward pass on ``args`` actually calls.
    Modules reached only through a wildcard and never called (a ``ModuleList`` container, an
    unused dropout) are left out; an exactly named module that never fires is an error."""
    names = list(select_modules(model, patterns))
    try:
        with LayerTaps(model, names, stop_early=False) as taps:
            taps.run(model, *args)
        return names
    except TapsNotFired as err:
        exact = set(_split_patterns(patterns)) & set(err.missing)
        if exact or len(err.missing) == len(names):
            raise
        return [n for n in names if n not in err.missing]


def first_tensor(output: Any) -> torch.Tensor:
    """The hidden-state tensor inside a module output: a tensor, the first tensor of a
    tuple/list (``nn.GRU`` -> output, not h_n), ``last_hidden_state`` / first tensor field of a
    dataclass or mapping (Hugging Face ``ModelOutput``), or ``.tokens`` (our ``EncoderOutput``).
    """
    if isinstance(output, torch.Tensor):
        return output
    for attr in ("last_hidden_state", "tokens", "hidden_states"):
        value = output.get(attr) if isinstance(output, Mapping) else getattr(output, attr, None)
        if isinstance(value, torch.Tensor):
            return value
    if isinstance(output, Mapping):
        values = list(output.values())
    elif dataclasses.is_dataclass(output):
        values = [getattr(output, f.name) for f in dataclasses.fields(output)]
    elif isinstance(output, (tuple, list)):
        values = list(output)
    else:
        values = []
    for value in values:
        if isinstance(value, torch.Tensor):
            return value
    for value in values:  # nested (e.g. PackedSequence-free tuples of tuples)
        try:
            return first_tensor(value)
        except TypeError:
            continue
    raise TypeError(f"no tensor found in module output of type {type(output).__name__}")


def reduce_tokens(
    t: torch.Tensor, reduce: str, *, time_dim: int = 1, num_prefix: int = 0
) -> torch.Tensor:
    """Reduce a (B, N, D) tensor (time on ``time_dim``) as described in the module docstring."""
    if reduce not in REDUCTIONS:
        raise ValueError(f"reduce must be one of {REDUCTIONS}, got '{reduce}'")
    if reduce == "none" or t.dim() == 2:
        return t
    if time_dim != 1:
        t = t.movedim(time_dim, 1)
    if t.dim() > 3:  # e.g. (B, N, H, d): fold trailing dims into features
        t = t.flatten(2)
    if reduce == "tokens":
        return t
    if reduce == "last":
        return t[:, -1]
    if reduce == "register":
        if num_prefix < 1:
            raise ValueError("reduce='register' needs num_prefix >= 1 (the model has no registers)")
        return t[:, :num_prefix].mean(1)
    return t[:, num_prefix:].mean(1)


class LayerTaps:
    """Record reduced outputs of selected modules during forward passes.

    >>> with LayerTaps(model, "encoder.layers.*", reduce="mean") as taps:
    ...     feats = taps.run(model, x)        # {name: (B, D)} float32 on CPU

    ``reduce`` may be one string or ``{pattern: reduction}``; ``time_dim`` is the token axis of
    the tapped outputs (1 for batch-first, 0 for ``nn.GRU(batch_first=False)``);
    ``transform(name, tensor)`` is applied before reducing (e.g. regroup channels).
    ``offload`` (a ``.nc`` path) appends every batch to a netCDF file instead of keeping it.
    """

    def __init__(
        self,
        model: nn.Module,
        patterns: str | Iterable[str],
        *,
        reduce: str | Mapping[str, str] = "mean",
        time_dim: int = 1,
        num_prefix: int = 0,
        stop_early: bool = True,
        to_cpu: bool = True,
        transform: Callable[[str, torch.Tensor], torch.Tensor] | None = None,
        offload: str | Path | None = None,
    ):
        self.model = model
        self.modules = select_modules(model, patterns)
        self.reduce = reduce
        self.time_dim = time_dim
        self.num_prefix = num_prefix
        self.stop_early = stop_early
        self.to_cpu = to_cpu
        self.transform = transform
        self.features: dict[str, torch.Tensor] = {}
        self.output: Any = None
        self._handles: list[Any] = []
        self._writer = FeatureWriter(offload) if offload is not None else None

    @property
    def names(self) -> list[str]:
        return list(self.modules)

    def _reduction(self, name: str) -> str:
        if isinstance(self.reduce, str):
            return self.reduce
        for pattern, red in self.reduce.items():
            if fnmatch.fnmatchcase(name, pattern):
                return red
        return "mean"

    def _hook(self, name: str):
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            if name in self.features:  # module called twice in one pass: keep the first
                return
            t = first_tensor(output).detach()
            if self.transform is not None:
                t = self.transform(name, t)
            t = reduce_tokens(t, self._reduction(name), time_dim=self.time_dim,
                              num_prefix=self.num_prefix)
            self.features[name] = t.float().cpu() if self.to_cpu else t
            if self.stop_early and len(self.features) == len(self.modules):
                raise _StopForward

        return hook

    def __enter__(self) -> LayerTaps:
        for name, module in self.modules.items():
            self._handles.append(module.register_forward_hook(self._hook(name)))
        return self

    def __exit__(self, *exc: Any) -> None:
        self.remove()

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
        if self._writer is not None:
            self._writer.close()

    def run(
        self, fn: Callable[..., Any] | nn.Module, *args: Any, **kwargs: Any
    ) -> dict[str, torch.Tensor]:
        """Call ``fn(*args, **kwargs)`` (usually the model) and return this batch's features.

        Hooks must be registered (use as a context manager). With ``offload`` the batch is
        appended to the file and still returned. ``self.output`` keeps the call's return value
        (None when the pass was stopped early).
        """
        if not self._handles:
            raise RuntimeError("LayerTaps.run outside 'with LayerTaps(...)': hooks not registered")
        self.features, self.output = {}, None
        try:
            with torch.no_grad():
                self.output = fn(*args, **kwargs)
        except _StopForward:
            pass
        missing = [n for n in self.modules if n not in self.features]
        if missing:
            raise TapsNotFired(missing)
        out, self.features = self.features, {}
        if self._writer is not None:
            self._writer.append({k: v.numpy() for k, v in out.items()})
        return out


class FeatureWriter:
    """Append per-tap feature batches to a netCDF file along an unlimited ``window`` dim.

    Readable afterwards with ``xr.open_dataset(path, engine="h5netcdf")``: one variable per tap,
    (window, ...) float32. Used for runs whose features do not fit in memory.
    """

    def __init__(self, path: str | Path):
        import h5netcdf

        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp",
                                   dir=self.path.parent)  # unique: writers never collide
        os.close(fd)
        self._tmp = Path(tmp)
        self._file = h5netcdf.File(self._tmp, "w")
        self._file.dimensions = {"window": None}
        self._n = 0
        self._vars: dict[str, str] = {}

    @staticmethod
    def _var_name(tap: str) -> str:
        return tap.replace("/", "_")

    def append(self, batch: Mapping[str, np.ndarray]) -> None:
        sizes = {len(v) for v in batch.values()}
        if len(sizes) != 1:
            raise ValueError(f"taps disagree on batch size: {sizes}")
        n = sizes.pop()
        f = self._file
        for tap, arr in batch.items():
            var = self._var_name(tap)
            if var not in self._vars:
                dims = ["window"]
                for i, size in enumerate(arr.shape[1:]):
                    dim = f"{var}_d{i}"
                    f.dimensions[dim] = size
                    dims.append(dim)
                v = f.create_variable(var, tuple(dims), np.float32,
                                      chunks=(max(1, min(n, 1024)), *arr.shape[1:]))
                v.attrs["tap"] = tap
                self._vars[var] = tap
        f.resize_dimension("window", self._n + n)
        for tap, arr in batch.items():
            f.variables[self._var_name(tap)][self._n : self._n + n] = arr.astype(np.float32)
        self._n += n

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
            self._tmp.replace(self.path)
