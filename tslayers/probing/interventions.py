"""Edit activations at taps: replace, steer, ablate, patch; and activation-patching effects.

Taps are chosen with the same globs as :func:`~tslayers.probing.taps.select_modules`, so
``blocks.*`` names the same modules for reading (:class:`LayerTaps`) and for writing
(:func:`intervene`). An edit acts on the module's hidden-state tensor (the one
:func:`~tslayers.probing.taps.first_tensor` reads: ``nn.GRU``'s output, not ``h_n``; a Hugging
Face ``last_hidden_state``; our ``Block``'s tokens) and the output is rebuilt with the same type,
so the rest of the model sees what it expects. Nothing runs under ``no_grad``: gradients flow
through edits (e.g. into a steering vector that is an ``nn.Parameter``).

>>> clean = cache_activations(model, "blocks.*", x_clean)
>>> with intervene(model, {"blocks.2": patch(clean["blocks.2"]), "blocks.0": steer(v, 2.0)}):
...     y = model(x_corrupt)

Edits apply at every call of a selected module; a module called several times in one forward
pass is edited at each call (caches keep the first call, as :class:`LayerTaps` does).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from .taps import first_tensor, select_modules

TensorFn = Callable[[torch.Tensor], torch.Tensor]
_FIELDS = ("last_hidden_state", "tokens", "hidden_states")  # the order first_tensor searches


# ---------------------------------------------------------------------------- output surgery
def _rebuild(output: Any, key: Any, value: Any) -> Any:
    """A copy of ``output`` (tuple, namedtuple, list, mapping or dataclass) with one entry
    replaced; ``key`` is an index, a mapping key or a field name."""
    if isinstance(output, Mapping):
        items = dict(output)
        items[key] = value
        try:
            return type(output)(**items)  # Hugging Face ModelOutput, plain dict subclasses
        except TypeError:
            return type(output)(items)
    if dataclasses.is_dataclass(output):
        return dataclasses.replace(output, **{key: value})
    if isinstance(output, tuple):
        items = list(output)
        items[key] = value
        return type(output)._make(items) if hasattr(output, "_make") else tuple(items)
    if isinstance(output, list):
        items = list(output)
        items[key] = value
        return items
    raise TypeError(f"cannot rebuild a module output of type {type(output).__name__}")


def map_first_tensor(output: Any, fn: TensorFn) -> Any:
    """``output`` with its hidden-state tensor ``t = first_tensor(output)`` replaced by
    ``fn(t)``, rebuilt with the same type (``nn.GRU`` -> ``(fn(output), h_n)``).

    Searches in exactly the order of :func:`first_tensor`, so the edited tensor is the one taps
    read: ``first_tensor(map_first_tensor(o, fn))`` is ``fn(first_tensor(o))``.
    """
    if isinstance(output, torch.Tensor):
        return fn(output)
    for attr in _FIELDS:
        if isinstance(output, Mapping):
            value = output.get(attr)
        else:
            value = getattr(output, attr, None)
        if isinstance(value, torch.Tensor):
            if isinstance(output, Mapping) or dataclasses.is_dataclass(output):
                return _rebuild(output, attr, fn(value))
            raise TypeError(f"cannot edit attribute '{attr}' of {type(output).__name__}")
    if isinstance(output, Mapping):
        entries = list(output.items())
    elif dataclasses.is_dataclass(output):
        entries = [(f.name, getattr(output, f.name)) for f in dataclasses.fields(output)]
    elif isinstance(output, (tuple, list)):
        entries = list(enumerate(output))
    else:
        entries = []
    for key, value in entries:
        if isinstance(value, torch.Tensor):
            return _rebuild(output, key, fn(value))
    for key, value in entries:
        try:
            first_tensor(value)
        except TypeError:
            continue
        return _rebuild(output, key, map_first_tensor(value, fn))
    raise TypeError(f"no tensor found in module output of type {type(output).__name__}")


# ---------------------------------------------------------------------------- edits
def _step_index(steps: int | Sequence[int] | slice | None, n: int) -> torch.Tensor | None:
    """Boolean mask (n,) of the selected time steps, or None for all of them."""
    if steps is None:
        return None
    mask = torch.zeros(n, dtype=torch.bool)
    if isinstance(steps, int):
        steps = [steps]
    mask[steps] = True
    return mask


@dataclasses.dataclass
class Edit:
    """One activation edit: ``new(t)`` gives the replacement, applied at ``steps`` only.

    ``steps`` (an index, a list or a slice along the tap's time axis; ``None``: everywhere)
    restricts the edit to some time steps; other steps keep the model's own values.
    Build edits with :func:`replace`, :func:`steer`, :func:`zero_ablate`, :func:`mean_ablate`,
    :func:`patch`.
    """

    new: TensorFn
    steps: int | Sequence[int] | slice | None = None
    label: str = "edit"

    def apply(self, t: torch.Tensor, time_dim: int = 1) -> torch.Tensor:
        new = self.new(t)
        try:
            new = torch.broadcast_to(new, t.shape)
        except RuntimeError:
            raise ValueError(f"{self.label}: replacement of shape {tuple(new.shape)} does not "
                             f"fit the activation of shape {tuple(t.shape)}") from None
        mask = _step_index(self.steps, t.shape[time_dim])
        if mask is None:
            return new.to(t.dtype)
        shape = [1] * t.dim()
        shape[time_dim] = -1
        return torch.where(mask.to(t.device).view(shape), new.to(t.dtype), t)


def _as_tensor(value: torch.Tensor | np.ndarray | float, like: torch.Tensor) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.to(device=like.device, dtype=like.dtype)
    return torch.as_tensor(np.asarray(value), device=like.device, dtype=like.dtype)


def replace(value: torch.Tensor | np.ndarray | TensorFn, *,
            steps: int | Sequence[int] | slice | None = None) -> Edit:
    """Replace the activation by ``value`` (broadcast to its shape) or by ``value(t)``."""
    if callable(value) and not isinstance(value, torch.Tensor):
        return Edit(value, steps, "replace")
    return Edit(lambda t: _as_tensor(value, t), steps, "replace")


def steer(vector: torch.Tensor | np.ndarray, scale: float = 1.0, *,
          steps: int | Sequence[int] | slice | None = None) -> Edit:
    """Add ``scale * vector`` (shape (D,), broadcast over batch and time) to the activation.

    ``vector`` may be an ``nn.Parameter``: the gradient of a loss w.r.t. it flows through.
    """
    return Edit(lambda t: t + scale * _as_tensor(vector, t), steps, "steer")


def zero_ablate(*, steps: int | Sequence[int] | slice | None = None) -> Edit:
    """Set the activation to zero."""
    return Edit(torch.zeros_like, steps, "zero_ablate")


def mean_ablate(mean: torch.Tensor | np.ndarray, *,
                steps: int | Sequence[int] | slice | None = None) -> Edit:
    """Replace the activation by a provided mean (e.g. over a reference set: (D,) or the
    activation's full shape without batch), which removes the information it carried while
    keeping its typical scale (unlike zero-ablation)."""
    return Edit(lambda t: _as_tensor(mean, t), steps, "mean_ablate")


def patch(cached: torch.Tensor, *, steps: int | Sequence[int] | slice | None = None) -> Edit:
    """Replace the activation by another input's cached activation (same shape), e.g. from
    :func:`cache_activations` on the clean input."""
    return Edit(lambda t: _as_tensor(cached, t), steps, "patch")


def _coerce(edit: Edit | torch.Tensor | np.ndarray | TensorFn) -> Edit:
    return edit if isinstance(edit, Edit) else replace(edit)


@contextlib.contextmanager
def intervene(
    model: nn.Module,
    edits: Mapping[str, Edit | torch.Tensor | np.ndarray | TensorFn],
    *,
    time_dim: int = 1,
) -> Iterator[dict[str, int]]:
    """Apply ``edits`` (``{tap glob: edit}``) to every forward pass inside the ``with`` block.

    A bare tensor or function is read as :func:`replace`. ``time_dim``: the time/token axis of
    the tapped tensors (for ``steps``; 0 for ``nn.GRU(batch_first=False)``). Yields
    ``{tap: calls}``, the number of times each edit fired, so a tap that is not on the forward
    path is visible. Hooks are removed on exit, also after an exception. Edit hooks run before
    any other forward hook on the module, so :class:`LayerTaps` (entered before or after) and
    :func:`cache_activations` read the edited activation.
    """
    plan: list[tuple[str, nn.Module, Edit]] = []
    for pattern, edit in edits.items():
        for name, module in select_modules(model, pattern).items():
            plan.append((name, module, _coerce(edit)))
    fired = {name: 0 for name, _, _ in plan}
    handles = []

    def make_hook(name: str, edit: Edit):
        def hook(module: nn.Module, args: Any, output: Any) -> Any:
            fired[name] += 1
            return map_first_tensor(output, lambda t: edit.apply(t, time_dim))

        return hook

    try:
        for name, module, edit in plan:
            # prepended: edits run before other hooks, so taps always read edited values
            handles.append(module.register_forward_hook(make_hook(name, edit), prepend=True))
        yield fired
    finally:
        for h in handles:
            h.remove()


# ---------------------------------------------------------------------------- caching
def _call(model: nn.Module, x: Any, kwargs: Mapping[str, Any]) -> Any:
    return model(*x, **kwargs) if isinstance(x, tuple) else model(x, **kwargs)


def run_with_cache(
    model: nn.Module, taps: str | Sequence[str], x: Any, **kwargs: Any
) -> tuple[Any, dict[str, torch.Tensor]]:
    """``(model(x), {tap: full activation})`` from one pass (no reduction, detached, on the
    model's device). ``x`` may be a tuple of positional arguments; ``kwargs`` go to the model.
    The first call of each module is kept."""
    modules = select_modules(model, taps)
    cache: dict[str, torch.Tensor] = {}
    handles = []

    def make_hook(name: str):
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            cache.setdefault(name, first_tensor(output).detach())

        return hook

    try:
        for name, module in modules.items():
            handles.append(module.register_forward_hook(make_hook(name)))
        out = _call(model, x, kwargs)
    finally:
        for h in handles:
            h.remove()
    missing = [n for n in modules if n not in cache]
    if missing:
        raise RuntimeError(f"taps {missing} did not fire during the forward pass")
    return out, cache


def cache_activations(
    model: nn.Module, taps: str | Sequence[str], x: Any, **kwargs: Any
) -> dict[str, torch.Tensor]:
    """Full activations ``{tap: tensor}`` of ``model(x)`` at the taps (for :func:`patch`)."""
    with torch.no_grad():
        return run_with_cache(model, taps, x, **kwargs)[1]


# ---------------------------------------------------------------------------- patching
def last_step_mean(output: Any, time_dim: int = 1) -> torch.Tensor:
    """Default metric: the mean of the output's hidden-state tensor at its last time step
    (the mean over everything when it has no time axis, i.e. is (B,) or (B, D))."""
    t = first_tensor(output)
    if t.dim() >= 3:
        t = t.select(time_dim, -1)
    return t.float().mean()


def patching_effect(
    model: nn.Module,
    taps: str | Sequence[str],
    clean: Any,
    corrupt: Any,
    metric: Callable[[Any], torch.Tensor | float] | None = None,
    *,
    per_step: bool = False,
    time_dim: int = 1,
    **kwargs: Any,
):
    """Share of the clean-vs-corrupt output difference restored by patching each tap.

    For a scalar metric ``m`` of the model output (default :func:`last_step_mean`: the output
    mean over the last time step, averaged over the batch)::

        effect(tap) = (m(patched) - m(corrupt)) / (m(clean) - m(corrupt))

    where *patched* is the corrupt run with the tap's activation replaced by the clean run's
    (all time steps; with ``per_step`` also one time step at a time). 1 means the tap carries
    everything that distinguishes clean from corrupt for ``m``; 0 means nothing. The effect is
    NaN when ``m(clean) == m(corrupt)``.

    ``clean``/``corrupt``: model inputs of the same shape (or tuples of positional arguments).
    ``time_dim``: the time axis of the taps (for ``per_step``) and of the output (for the
    default metric), e.g. 2 for PatchTST's (B, C, N, D) blocks.
    Returns an ``xarray.DataArray`` named ``patching_effect``: dims ``(tap,)``, or with
    ``per_step`` ``(tap, step)`` (NaN beyond a tap's length; taps without a time axis are all
    NaN) plus the all-steps effect as the coordinate ``all_steps``. Attributes hold
    ``m_clean`` and ``m_corrupt``.
    """
    import xarray as xr

    if metric is None:
        def metric(out: Any) -> torch.Tensor:
            return last_step_mean(out, time_dim)

    def m(out: Any) -> float:
        value = metric(out)
        return float(value.detach().cpu()) if isinstance(value, torch.Tensor) else float(value)

    with torch.no_grad():
        out_clean, cache = run_with_cache(model, taps, clean, **kwargs)
        m_clean, m_corrupt = m(out_clean), m(_call(model, corrupt, kwargs))
        gap = m_clean - m_corrupt

        def effect(name: str, steps: Any = None) -> float:
            with intervene(model, {name: patch(cache[name], steps=steps)}, time_dim=time_dim):
                patched = m(_call(model, corrupt, kwargs))
            return (patched - m_corrupt) / gap if gap != 0 else float("nan")

        names = list(cache)
        total = np.array([effect(n) for n in names])
        if not per_step:
            return xr.DataArray(total, dims=("tap",), coords={"tap": names},
                                name="patching_effect",
                                attrs={"m_clean": m_clean, "m_corrupt": m_corrupt})
        lengths = [cache[n].shape[time_dim] if cache[n].dim() >= 3 else 0 for n in names]
        steps = np.full((len(names), max(lengths, default=0)), np.nan)
        for i, (name, n_steps) in enumerate(zip(names, lengths)):
            for s in range(n_steps):
                steps[i, s] = effect(name, s)
    return xr.DataArray(
        steps, dims=("tap", "step"),
        coords={"tap": names, "step": np.arange(steps.shape[1]), "all_steps": ("tap", total)},
        name="patching_effect", attrs={"m_clean": m_clean, "m_corrupt": m_corrupt},
    )
