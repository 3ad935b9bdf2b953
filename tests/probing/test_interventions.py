"""Interventions: edits rebuild outputs, patching identities, exact effects, steering."""

from __future__ import annotations

import dataclasses
from collections import OrderedDict, namedtuple

import numpy as np
import pytest
import torch
from torch import nn

from tslayers.model import EncoderConfig, TemporalEncoder
from tslayers.probing import LayerTaps, RidgeProbe, first_tensor
from tslayers.probing.interventions import (
    cache_activations,
    intervene,
    map_first_tensor,
    mean_ablate,
    patch,
    patching_effect,
    replace,
    steer,
    zero_ablate,
)


class GRUWorld(nn.Module):
    """An external latent-dynamics model: GRU over (B, T, C), per-step linear read-out."""

    def __init__(self, c: int = 3, h: int = 16, out: int = 2):
        super().__init__()
        self.rnn = nn.GRU(c, h, batch_first=True)
        self.head = nn.Linear(h, out)

    def forward(self, x):
        h, _ = self.rnn(x)
        return self.head(h)


class AddInput(nn.Module):
    def __init__(self, w: float):
        super().__init__()
        self.w = w

    def forward(self, h, x):
        return h + self.w * x


class SideResidual(nn.Module):
    """Residual stream h_{i+1} = h_i + w_i x, output h_L: block i writes a known share
    w_i / sum(w) of the output, so patching block k restores sum_{i<=k} w_i / sum(w)."""

    def __init__(self, weights):
        super().__init__()
        self.blocks = nn.ModuleList(AddInput(w) for w in weights)

    def forward(self, x):
        h = torch.zeros_like(x)
        for block in self.blocks:
            h = block(h, x)
        return h


@pytest.fixture(scope="module")
def gru():
    torch.manual_seed(0)
    return GRUWorld().eval()


def _pair(shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g), torch.randn(*shape, generator=g)


def test_map_first_tensor_rebuilds_each_output_type():
    @dataclasses.dataclass
    class Out:
        aux: int
        tokens: torch.Tensor
        other: torch.Tensor

    Pair = namedtuple("Pair", "a b")
    t, u = torch.ones(2), torch.zeros(2)
    cases = [t, (t, u), [t, u], Pair(t, u), Out(3, t, u), OrderedDict(x=t, y=u), ((t, u), u)]
    for out in cases:
        new = map_first_tensor(out, lambda z: z + 5)
        assert type(new) is type(out)
        assert torch.equal(first_tensor(new), first_tensor(out) + 5)
    assert map_first_tensor(Out(3, t, u), lambda z: z * 0).other is u
    assert map_first_tensor(Pair(t, u), lambda z: z * 0).b is u


def test_gru_tuple_output_is_edited_and_h_n_kept(gru):
    x = torch.randn(4, 10, 3)
    _, h_n = gru.rnn(x)
    seen = {}
    gru.rnn.register_forward_hook(lambda m, a, o: seen.setdefault("out", o))
    with intervene(gru, {"rnn": zero_ablate()}) as fired:
        y = gru(x)
    gru.rnn._forward_hooks.clear()
    assert fired == {"rnn": 1}
    assert torch.allclose(y, gru.head.bias.expand_as(y))  # head(0) = bias
    assert isinstance(seen["out"], tuple) and torch.equal(seen["out"][1], h_n)


def test_self_patch_is_identity_and_corrupt_patch_reproduces_corrupt(gru):
    clean, corrupt = _pair((4, 10, 3))
    y_clean, y_corrupt = gru(clean), gru(corrupt)
    own = cache_activations(gru, "rnn", clean)
    bad = cache_activations(gru, "rnn", corrupt)
    with intervene(gru, {"rnn": patch(own["rnn"])}):
        assert torch.equal(gru(clean), y_clean)
    with intervene(gru, {"rnn": patch(bad["rnn"])}):
        assert torch.allclose(gru(clean), y_corrupt, atol=1e-6)


def test_encoder_patching_identities_and_full_restoration():
    torch.manual_seed(1)
    enc = TemporalEncoder(EncoderConfig(n_channels=1, patch_len=8, d_model=32, n_layers=3,
                                        n_heads=2)).eval()
    clean, corrupt = _pair((3, 64, 1), seed=1)
    with torch.no_grad():
        t_clean, t_corrupt = enc(clean).tokens, enc(corrupt).tokens
        own = cache_activations(enc, "blocks.1", clean)  # module name
        bad = cache_activations(enc, "blocks.1.out", corrupt)  # stable tap module
        with intervene(enc, {"blocks.*": replace(lambda t: t)}):
            assert torch.equal(enc(clean).tokens, t_clean)
        with intervene(enc, {"blocks.1": patch(own["blocks.1"])}):
            assert torch.equal(enc(clean).tokens, t_clean)
        with intervene(enc, {"blocks.1.out": patch(bad["blocks.1.out"])}):
            assert torch.allclose(enc(clean).tokens, t_corrupt, atol=1e-6)
    # the whole residual stream at any block determines the output: every block restores 1
    eff = patching_effect(enc, "blocks.*.out", clean, corrupt)
    assert list(eff.tap.values) == ["blocks.0.out", "blocks.1.out", "blocks.2.out"]
    np.testing.assert_allclose(eff.values, 1.0, atol=1e-5)


def test_effect_is_exact_and_monotone_along_a_residual_stream():
    weights = [0.5, 1.0, 0.25, 2.0]
    model = SideResidual(weights)
    clean, corrupt = _pair((5, 7, 2), seed=2)
    eff = patching_effect(model, "blocks.*", clean, corrupt)
    expected = np.cumsum(weights) / np.sum(weights)
    np.testing.assert_allclose(eff.values, expected, rtol=1e-5)
    assert np.all(np.diff(eff.values) > 0)
    assert eff.attrs["m_clean"] == pytest.approx(float(clean[:, -1].mean() * sum(weights)),
                                                 rel=1e-5)


def test_per_step_effect_locates_the_read_out_step(gru):
    clean, corrupt = _pair((4, 6, 3), seed=3)
    eff = patching_effect(gru, "rnn", clean, corrupt, per_step=True)
    assert eff.dims == ("tap", "step") and eff.sizes["step"] == 6
    # the head reads each step separately and the metric reads the last step only
    np.testing.assert_allclose(eff.sel(tap="rnn").values, [0, 0, 0, 0, 0, 1], atol=1e-6)
    assert float(eff.all_steps.sel(tap="rnn")) == pytest.approx(1.0)


def test_per_step_effects_add_up_for_an_additive_model():
    class CumSum(nn.Module):  # causal, linear in its per-step embedding: effects are additive
        def __init__(self):
            super().__init__()
            self.embed = nn.Linear(2, 4)
            self.head = nn.Linear(4, 1)

        def forward(self, x):
            return self.head(self.embed(x).cumsum(1))

    torch.manual_seed(4)
    model = CumSum()
    clean, corrupt = _pair((3, 5, 2), seed=4)
    eff = patching_effect(model, "embed", clean, corrupt, per_step=True)
    with torch.no_grad():  # share of step s in the last output: head(e_s) differences
        w = model.head.weight @ (model.embed(clean) - model.embed(corrupt)).transpose(1, 2)
        share = w.mean((0, 1)) / w.sum(-1).mean()
    np.testing.assert_allclose(eff.sel(tap="embed").values, share.numpy(), rtol=1e-4)
    assert float(eff.sel(tap="embed").sum()) == pytest.approx(1.0, rel=1e-4)


def test_ablations_steps_and_gradients(gru):
    x = torch.randn(2, 5, 3)
    with torch.no_grad():
        h, _ = gru.rnn(x)
        y = gru(x)
    mean = h.mean((0, 1))
    with intervene(gru, {"rnn": mean_ablate(mean)}):
        assert torch.allclose(gru(x), gru.head(mean).expand_as(y), atol=1e-6)
    with intervene(gru, {"rnn": zero_ablate(steps=[1, 3])}):
        y2 = gru(x)
    changed = (y2 - y).abs().amax((0, 2)) > 0
    assert changed.tolist() == [False, True, False, True, False]
    # gradients flow into a steering vector: d sum(head(h + v)) / dv = B T sum_o W[o]
    v = nn.Parameter(torch.zeros(16))
    with intervene(gru, {"rnn": steer(v, scale=2.0)}):
        gru(x).sum().backward()
    expected = 2.0 * 2 * 5 * gru.head.weight.sum(0)
    assert torch.allclose(v.grad, expected, atol=1e-5)


def test_taps_read_edited_values_whatever_the_order(gru):
    x = torch.randn(2, 5, 3)
    with LayerTaps(gru, "rnn", reduce="tokens") as taps:  # entered before the edit
        with intervene(gru, {"rnn": zero_ablate()}):
            feats = taps.run(gru, x)
    assert torch.equal(feats["rnn"], torch.zeros(2, 5, 16))


def test_bad_edit_shape_and_unknown_tap_are_refused(gru):
    with pytest.raises(ValueError, match="does not fit"):
        with intervene(gru, {"rnn": replace(torch.zeros(7))}):
            gru(torch.randn(2, 5, 3))
    with pytest.raises(ValueError, match="matches no module"):
        with intervene(gru, {"encoder.*": zero_ablate()}):
            pass


def _sines(n, rng, length=64):
    freq = rng.uniform(0.03, 0.2, n)
    phase = rng.uniform(0, 2 * np.pi, n)
    t = np.arange(length)
    x = np.sin(2 * np.pi * freq[:, None] * t + phase[:, None]) + 0.05 * rng.normal(size=(n, length))
    return torch.tensor(x[..., None], dtype=torch.float32), freq


def test_probe_direction_steers_the_decoded_state():
    """Add the layer-0 ridge direction for the frequency to the residual: the decoded
    frequency rises by the added amount at layer 0 and moves the same way two layers later."""
    torch.manual_seed(5)
    enc = TemporalEncoder(EncoderConfig(n_channels=1, patch_len=8, d_model=32, n_layers=3,
                                        n_heads=2)).eval()
    rng = np.random.default_rng(5)
    taps = ["blocks.0", "blocks.2"]

    def feats(x):
        return {k: v.mean(1).numpy() for k, v in cache_activations(enc, taps, x).items()}

    probe = RidgeProbe(np.logspace(-3, 3, 7))
    for split, n in (("train", 400), ("val", 200)):
        x, f = _sines(n, rng)
        probe.update(feats(x), f, split)
    probe.fit("val")
    w = probe.coef_["blocks.0"][probe.best_["blocks.0"][0], :, 0]
    direction = torch.tensor(w / (w @ w), dtype=torch.float32)  # +1 decoded unit per unit

    x, _ = _sines(100, rng)
    base = probe.predict(feats(x))
    shift = {}
    for alpha in (-0.05, 0.05):
        with intervene(enc, {"blocks.0": steer(direction, alpha)}):
            dec = probe.predict(feats(x))
        shift[alpha] = {k: float((dec[k] - base[k]).mean()) for k in taps}
    assert shift[0.05]["blocks.0"] == pytest.approx(0.05, rel=1e-3)
    assert shift[-0.05]["blocks.0"] == pytest.approx(-0.05, rel=1e-3)
    assert shift[-0.05]["blocks.2"] < 0 < shift[0.05]["blocks.2"]
