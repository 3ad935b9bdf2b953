"""Unroll a stacked ``nn.GRU``/``nn.LSTM``/``nn.RNN`` into per-layer modules so every layer is
a tap.

A stacked RNN runs all its layers inside one fused call, so forward hooks only see the last
layer's output sequence (and ``h_n``, the last step of every layer). :func:`unroll_rnn` builds
an equivalent :class:`UnrolledRNN` of single-layer RNNs that *share* the original parameters
(no copy: training one trains the other), with the same call signature and outputs. Its layers
are reachable as taps ``{name}.layers.0``, ``{name}.layers.1``, ...; each tap's hidden-state
tensor is that layer's output sequence ((B, T, D·dirs) with ``batch_first``), the per-layer,
per-step states the fused module never exposes.

Unroll after loading a checkpoint: the unrolled module's ``state_dict`` keys differ
(``rnn.layers.1.weight_ih_l0`` for ``rnn.weight_ih_l1``).

>>> model = unroll_rnns(model)             # every stacked RNN inside, replaced in a copy
>>> with LayerTaps(model, "rnn.layers.*", reduce="tokens") as taps: ...
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence

_RNNS = (nn.GRU, nn.LSTM, nn.RNN)


class UnrolledRNN(nn.Module):
    """A stacked RNN as ``layers`` of single-layer RNNs sharing its weights.

    ``forward(x, hx=None)`` returns what the original returns: ``(output, h_n)`` or, for an
    LSTM, ``(output, (h_n, c_n))``, with the same layouts (``batch_first``, directions, LSTM
    ``proj_size``) and PackedSequence inputs. Inter-layer dropout is applied as the fused
    module does (training mode only), though with different random draws.
    """

    def __init__(self, rnn: nn.RNNBase):
        super().__init__()
        if not isinstance(rnn, _RNNS):
            raise TypeError(f"unroll_rnn expects nn.GRU, nn.LSTM or nn.RNN, got "
                            f"{type(rnn).__name__}")
        self.mode = type(rnn)
        self.num_layers = rnn.num_layers
        self.batch_first = rnn.batch_first
        self.dirs = 2 if rnn.bidirectional else 1
        self.dropout = nn.Dropout(rnn.dropout)
        out_size = (getattr(rnn, "proj_size", 0) or rnn.hidden_size) * self.dirs
        kwargs: dict[str, Any] = dict(hidden_size=rnn.hidden_size, num_layers=1, bias=rnn.bias,
                                      batch_first=rnn.batch_first,
                                      bidirectional=rnn.bidirectional)
        if isinstance(rnn, nn.LSTM):
            kwargs["proj_size"] = rnn.proj_size
        if isinstance(rnn, nn.RNN):
            kwargs["nonlinearity"] = rnn.nonlinearity
        layers = []
        for k in range(rnn.num_layers):
            p = rnn.weight_ih_l0
            layer = self.mode(input_size=rnn.input_size if k == 0 else out_size,
                              device=p.device, dtype=p.dtype, **kwargs)
            for name in layer._flat_weights_names:  # e.g. weight_hh_l0_reverse
                shared = getattr(rnn, name.replace("_l0", f"_l{k}"))
                setattr(layer, name, shared)  # RNNBase.__setattr__ refreshes its flat weights
            layers.append(layer)
        self.layers = nn.ModuleList(layers)
        self.train(rnn.training)  # a new module starts in training mode: keep the original's

    def _split_state(self, hx: Any, k: int) -> Any:
        if hx is None:
            return None
        rows = slice(k * self.dirs, (k + 1) * self.dirs)
        if isinstance(hx, tuple):
            return tuple(h[rows] for h in hx)
        return hx[rows]

    def _drop(self, x: Any) -> Any:
        if not self.training or self.dropout.p == 0:
            return x
        if isinstance(x, PackedSequence):
            return x._replace(data=self.dropout(x.data))
        return self.dropout(x)

    def forward(self, x: Any, hx: Any = None) -> tuple[Any, Any]:
        finals = []
        for k, layer in enumerate(self.layers):
            if k > 0:
                x = self._drop(x)
            x, h = layer(x, self._split_state(hx, k))
            finals.append(h)
        if self.mode is nn.LSTM:
            return x, (torch.cat([h for h, _ in finals]), torch.cat([c for _, c in finals]))
        return x, torch.cat(finals)


def unroll_rnn(rnn: nn.RNNBase) -> nn.Module:
    """The equivalent :class:`UnrolledRNN` of a stacked RNN (a single-layer RNN is returned
    as is: its output already is its only layer)."""
    return rnn if rnn.num_layers == 1 else UnrolledRNN(rnn)


def unroll_rnns(model: nn.Module, *, inplace: bool = False) -> nn.Module:
    """``model`` (a copy unless ``inplace``) with every stacked GRU/LSTM/RNN replaced by its
    :class:`UnrolledRNN`, under the same name: ``rnn`` gains taps ``rnn.layers.{k}``."""
    if not inplace:
        model = copy.deepcopy(model)
    if isinstance(model, _RNNS):
        return unroll_rnn(model)
    for name, module in list(model.named_modules()):
        if isinstance(module, _RNNS) and module.num_layers > 1:
            parent_name, _, attr = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, attr, UnrolledRNN(module))
    return model
