"""The untrained twin: the same architecture with freshly initialised weights, as a control.

A probe that decodes a state as well from the twin as from the trained model measures the
architecture and the input, not what training taught (a random GRU decodes a pendulum's state
almost perfectly). The twin must be available for any model, including one loaded from a
checkpoint whose construction code we do not have, so it is built from the model itself.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator

import torch
from torch import nn


def _post_order(module: nn.Module) -> Iterator[nn.Module]:
    """Children before their parent: the order in which constructors initialise them (a
    module's ``__init__`` builds its children, then calls its own ``reset_parameters``)."""
    for child in module.children():
        yield from _post_order(child)
    yield module


def _reset(module: nn.Module) -> bool:
    """Call the module's own initialiser; False when it has none."""
    for name in ("reset_parameters", "_reset_parameters"):  # nn.MultiheadAttention: private
        fn = getattr(module, name, None)
        if callable(fn):
            fn()
            return True
    return False


def default_fallback(name: str, param: nn.Parameter) -> None:
    """Initialiser for parameters owned directly by a module without ``reset_parameters``
    (e.g. a LayerScale gain, a mask token, a positional table): truncated normal with std 0.02
    for matrices and above (the ViT/GPT-2 convention), zeros for vectors named ``bias`` and
    ones for other vectors (gains and scales)."""
    with torch.no_grad():
        if param.dim() >= 2:
            nn.init.trunc_normal_(param, std=0.02, a=-0.04, b=0.04)
        elif name.endswith("bias"):
            param.zero_()
        else:
            param.fill_(1.0)


def untrained_twin(
    model: nn.Module,
    seed: int = 0,
    *,
    fallback: Callable[[str, nn.Parameter], None] | None = default_fallback,
    init: Callable[[nn.Module], None] | None = None,
) -> nn.Module:
    """A deep copy of ``model`` with every parameter re-initialised; deterministic in ``seed``.

    Rule, module by module with children before parents (constructor order): a module with
    ``reset_parameters`` (or ``_reset_parameters``) calls it, which for built-in layers (Linear,
    Conv, GRU/LSTM, LayerNorm, BatchNorm incl. running stats, Embedding, MultiheadAttention)
    is exactly PyTorch's own initialisation. Parameters registered directly on a module
    without one go to ``fallback(name, param)`` (:func:`default_fallback`; ``None`` leaves them
    as they are). Buffers of such modules are left as they are (they are usually fixed tables,
    e.g. RoPE frequencies). ``init``, when given, is then applied to every module
    (``twin.apply(init)``), for architectures with their own scheme, e.g. a Hugging Face
    model's ``model._init_weights`` (same distributions as the library's own initialisation,
    not bit-equal to a fresh ``from_config`` model, whose draws come in another order).

    Draws come from a generator seeded with ``seed``; the caller's global RNG state is left
    untouched. For a model made only of such layers, built by ``factory`` in registration
    order, ``untrained_twin(model, s)`` equals ``torch.manual_seed(s); factory()``.
    """
    twin = copy.deepcopy(model)
    devices = sorted({p.device.index or 0 for p in twin.parameters() if p.device.type == "cuda"})
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        for module in _post_order(twin):
            if _reset(module) or fallback is None:
                continue
            for name, param in module.named_parameters(recurse=False):
                fallback(name, param)
        if init is not None:
            twin.apply(init)
    return twin
