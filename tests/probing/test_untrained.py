"""untrained_twin: every parameter re-drawn, equal to a fresh build under the same seed."""

from __future__ import annotations

import torch
from torch import nn

from tslayers.probing.untrained import untrained_twin


class WorldModel(nn.Module):
    """Built only from layers with their own reset_parameters."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Linear(3, 8)
        self.conv = nn.Conv1d(8, 8, 3, padding=1)
        self.bn = nn.BatchNorm1d(8)
        self.rnn = nn.GRU(8, 8, num_layers=2, batch_first=True)
        self.block = nn.TransformerEncoderLayer(8, 2, 16, batch_first=True)
        self.lstm = nn.LSTM(8, 4, batch_first=True, bidirectional=True)
        self.codes = nn.Embedding(5, 8)
        self.norm = nn.LayerNorm(8)


def factory(seed: int) -> WorldModel:
    torch.manual_seed(seed)
    return WorldModel()


def _trained(seed: int = 0) -> WorldModel:
    """Stand-in for training: every parameter and the BatchNorm statistics move."""
    model = factory(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p) + 0.05)
        model.bn(torch.randn(16, 8, 5) * 3 + 1)
    return model


def test_twin_differs_everywhere_and_equals_a_fresh_build():
    model = _trained()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    twin = untrained_twin(model, seed=7)
    assert torch.equal(torch.get_rng_state(), rng)  # the caller's RNG is untouched
    fresh = factory(7).state_dict()
    for name, p in model.named_parameters():
        assert not torch.equal(p, twin.get_parameter(name)), name
    for name, value in twin.state_dict().items():
        assert torch.equal(value, fresh[name]), name  # parameters and BatchNorm buffers
        assert torch.equal(model.state_dict()[name], before[name])  # the model is untouched
    assert not torch.equal(twin.bn.running_var, model.bn.running_var)


def test_fallback_for_parameters_without_reset_parameters():
    class Gain(nn.Module):
        def __init__(self):
            super().__init__()
            self.gamma = nn.Parameter(torch.full((8,), 0.1))
            self.pos = nn.Parameter(torch.randn(4, 8))
            self.bias = nn.Parameter(torch.randn(8))
            self.register_buffer("table", torch.arange(4.0))

    model = nn.Sequential(nn.Linear(8, 8), Gain())
    twin = untrained_twin(model, seed=1)
    gain = twin[1]
    assert torch.equal(gain.gamma, torch.ones(8)) and torch.equal(gain.bias, torch.zeros(8))
    assert gain.pos.abs().max() <= 0.04 and gain.pos.std() > 0
    assert torch.equal(gain.table, model[1].table)
    assert torch.equal(untrained_twin(model, seed=1)[1].pos, gain.pos)
    assert not torch.equal(untrained_twin(model, seed=2)[1].pos, gain.pos)
    kept = untrained_twin(model, seed=1, fallback=None)[1]
    assert torch.equal(kept.pos, model[1].pos)
    custom = untrained_twin(model, seed=1, init=lambda m: isinstance(m, nn.Linear)
                            and nn.init.zeros_(m.weight))
    assert torch.equal(custom[0].weight, torch.zeros(8, 8))
