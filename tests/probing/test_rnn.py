"""unroll_rnn: same outputs as the fused stacked RNN, per-layer taps equal its layer states."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from tslayers.probing import LayerTaps
from tslayers.probing.interventions import cache_activations
from tslayers.probing.rnn import UnrolledRNN, unroll_rnn, unroll_rnns

CASES = [
    (nn.GRU, dict(batch_first=True)),
    (nn.GRU, dict(batch_first=False, bidirectional=True)),
    (nn.LSTM, dict(batch_first=True, bidirectional=True)),
    (nn.LSTM, dict(batch_first=False, proj_size=3)),
    (nn.RNN, dict(batch_first=True, nonlinearity="relu")),
]


def _truncated(rnn: nn.RNNBase, depth: int) -> nn.RNNBase:
    """The fused stacked RNN made of the first ``depth`` layers: its output is layer depth-1's
    output sequence (the reference the unrolled taps must equal)."""
    kwargs = dict(batch_first=rnn.batch_first, bidirectional=rnn.bidirectional)
    if isinstance(rnn, nn.LSTM):
        kwargs["proj_size"] = rnn.proj_size
    if isinstance(rnn, nn.RNN):
        kwargs["nonlinearity"] = rnn.nonlinearity
    ref = type(rnn)(rnn.input_size, rnn.hidden_size, num_layers=depth, **kwargs)
    state = {k: v for k, v in rnn.state_dict().items() if int(k.split("_l")[1][0]) < depth}
    ref.load_state_dict(state)
    return ref


@pytest.mark.filterwarnings("ignore:LSTM with projections")
@pytest.mark.parametrize("cls,kwargs", CASES)
def test_unrolled_equals_fused_and_taps_equal_layer_states(cls, kwargs):
    torch.manual_seed(0)
    rnn = cls(4, 6, num_layers=3, **kwargs).eval()
    unrolled = unroll_rnn(rnn)
    assert isinstance(unrolled, UnrolledRNN)
    x = torch.randn(5, 7, 4) if rnn.batch_first else torch.randn(7, 5, 4)
    dirs = 2 if rnn.bidirectional else 1
    layers = 3 * dirs
    hx = torch.randn(layers, 5, rnn.proj_size or 6) if cls is nn.LSTM else torch.randn(layers, 5, 6)
    hx = (hx, torch.randn(layers, 5, 6)) if cls is nn.LSTM else hx
    with torch.no_grad():
        for h0 in (None, hx):
            (y, h_n), (y2, h_n2) = rnn(x, h0), unrolled(x, h0)
            assert torch.allclose(y, y2, atol=1e-6)
            for a, b in zip(h_n if cls is nn.LSTM else [h_n], h_n2 if cls is nn.LSTM else [h_n2]):
                assert torch.allclose(a, b, atol=1e-6)
    with torch.no_grad():
        h_n = rnn(x)[1]
    cache = cache_activations(unrolled, "layers.*", x)
    time_dim = 1 if rnn.batch_first else 0
    h_last = (h_n[0] if cls is nn.LSTM else h_n).view(3, dirs, 5, -1)
    for k in range(3):
        tap = cache[f"layers.{k}"]
        with torch.no_grad():
            assert torch.allclose(tap, _truncated(rnn, k + 1)(x)[0], atol=1e-6)
        # independent of any re-run: the fused h_n holds each layer's final states
        forward = tap.select(time_dim, -1)[..., : h_last.shape[-1]]
        assert torch.allclose(forward, h_last[k, 0], atol=1e-6)
        if dirs == 2:  # the backward direction ends at step 0
            assert torch.allclose(tap.select(time_dim, 0)[..., h_last.shape[-1]:], h_last[k, 1],
                                  atol=1e-6)


def test_weights_are_shared_and_models_are_unrolled_by_name():
    class World(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = nn.GRU(3, 8, num_layers=2, batch_first=True, dropout=0.5)
            self.head = nn.Linear(8, 1)

        def forward(self, x):
            return self.head(self.rnn(x)[0])

    torch.manual_seed(1)
    model = World().eval()
    unrolled = unroll_rnns(model)
    assert isinstance(model.rnn, nn.GRU)  # a copy by default
    x = torch.randn(2, 9, 3)
    with torch.no_grad():
        assert torch.allclose(model(x), unrolled(x), atol=1e-6)
        unrolled.rnn.layers[0].weight_ih_l0.mul_(0)
    assert not torch.equal(model.rnn.weight_ih_l0, unrolled.rnn.layers[0].weight_ih_l0)
    with LayerTaps(unrolled, "rnn.layers.*", reduce="tokens") as taps:
        feats = taps.run(unrolled, x)
    assert list(feats) == ["rnn.layers.0", "rnn.layers.1"]
    assert feats["rnn.layers.0"].shape == (2, 9, 8)
    # unroll_rnn shares the parameters of the fused module it stands for
    fused = nn.LSTM(3, 4, num_layers=2)
    same = unroll_rnn(fused)
    assert same.layers[1].weight_ih_l0 is fused.weight_ih_l1
    assert unroll_rnn(nn.GRU(3, 4)).__class__ is nn.GRU


def test_packed_sequences_and_training_dropout():
    torch.manual_seed(2)
    rnn = nn.LSTM(3, 5, num_layers=2, batch_first=True, dropout=0.3)
    unrolled = unroll_rnn(rnn)
    x = torch.randn(3, 6, 3)
    packed = pack_padded_sequence(x, torch.tensor([6, 4, 2]), batch_first=True)
    rnn.eval()
    unrolled.eval()
    with torch.no_grad():
        (y, (_, c)), (y2, (_, c2)) = rnn(packed), unrolled(packed)
    assert torch.allclose(y.data, y2.data, atol=1e-6) and torch.allclose(c, c2, atol=1e-6)
    unrolled.train()
    y_train = unrolled(x)[0]
    assert not torch.allclose(y_train, unrolled.eval()(x)[0])  # dropout between layers
