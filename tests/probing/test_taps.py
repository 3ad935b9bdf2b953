"""Generic taps against hand-written forward hooks."""

import warnings

import numpy as np
import pytest
import torch
import xarray as xr
from torch import nn

from tslayers.model import EncoderConfig, TemporalEncoder
from tslayers.probing import LayerTaps, first_tensor, select_modules


class GRUWorldModel(nn.Module):
    """Two stacked GRUs (time-major, tuple outputs) and a linear readout."""

    def __init__(self):
        super().__init__()
        self.inp = nn.Linear(3, 16)
        self.gru1 = nn.GRU(16, 16)  # batch_first=False: (T, B, D)
        self.gru2 = nn.GRU(16, 8)
        self.head = nn.Linear(8, 3)
        self.calls = 0

    def forward(self, x):  # x (B, T, C)
        h = self.inp(x).transpose(0, 1)
        h, _ = self.gru1(h)
        h, _ = self.gru2(h)
        self.calls += 1
        return self.head(h)


def _manual(model, names, x):
    got = {}
    mods = dict(model.named_modules())
    handles = [mods[n].register_forward_hook(
        lambda m, a, o, n=n: got.__setitem__(n, o[0] if isinstance(o, tuple) else o))
        for n in names]
    with torch.no_grad():
        model(*x)
    for h in handles:
        h.remove()
    return got


def test_gru_taps_match_manual_hooks_and_reduce():
    torch.manual_seed(0)
    model = GRUWorldModel().eval()
    x = torch.randn(5, 11, 3)
    ref = _manual(model, ["gru1", "gru2"], (x,))
    for reduce, fn in [("mean", lambda t: t.mean(0)), ("last", lambda t: t[-1]),
                       ("tokens", lambda t: t.transpose(0, 1))]:
        with LayerTaps(model, "gru*", reduce=reduce, time_dim=0, stop_early=False) as taps:
            out = taps.run(model, x)
        assert list(out) == ["gru1", "gru2"]
        for name in out:
            torch.testing.assert_close(out[name], fn(ref[name]))


def test_stop_early_skips_the_rest_of_the_forward():
    model = GRUWorldModel().eval()
    with LayerTaps(model, "gru1", time_dim=0) as taps:
        taps.run(model, torch.randn(2, 7, 3))
    assert model.calls == 0  # gru2, head and the counter never ran
    with LayerTaps(model, "gru1", time_dim=0, stop_early=False) as taps:
        taps.run(model, torch.randn(2, 7, 3))
    assert model.calls == 1


def test_patchtst_taps_match_manual_hooks():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from gluonts.torch.model.patch_tst import PatchTSTModel
    torch.manual_seed(0)
    model = PatchTSTModel(prediction_length=8, context_length=64, patch_len=8, stride=8,
                          padding_patch="end", d_model=32, nhead=4, dim_feedforward=64,
                          num_feat_dynamic_real=0, dropout=0.0, activation="relu",
                          norm_first=False, num_encoder_layers=3, scaling="mean").eval()
    past = torch.randn(4, 64)
    args = (past, torch.ones_like(past))
    names = [f"encoder.layers.{i}" for i in range(3)]
    ref = _manual(model, names, args)
    with LayerTaps(model, "encoder.layers.?", reduce="tokens") as taps:
        out = taps.run(model, *args)
    assert list(out) == names
    for n in names:
        torch.testing.assert_close(out[n], ref[n])
    with LayerTaps(model, "encoder.layers.1", reduce="mean") as taps:
        pooled = taps.run(model, *args)["encoder.layers.1"]
    torch.testing.assert_close(pooled, ref["encoder.layers.1"].mean(1))


def test_encoder_stable_names_match_native_taps():
    torch.manual_seed(0)
    enc = TemporalEncoder(EncoderConfig(n_channels=2, patch_len=8, d_model=16, n_layers=3,
                                        n_heads=2)).eval()
    x = torch.randn(3, 32, 2)
    native = {}  # reference: forward hooks on the blocks themselves
    hooks = [b.register_forward_hook(lambda m, a, o, i=i: native.update({i + 1: o[0]}))
             for i, b in enumerate(enc.blocks)]
    enc(x)
    for h in hooks:
        h.remove()
    with LayerTaps(enc, "blocks.*.out", reduce="tokens") as taps:
        out = taps.run(enc, x)
    assert list(out) == ["blocks.0.out", "blocks.1.out", "blocks.2.out"]
    for i, name in enumerate(out):
        torch.testing.assert_close(out[name], native[i + 1])


def test_pattern_matching_nothing_lists_available_names():
    with pytest.raises(ValueError, match=r"matches no module.*gru1, gru2"):
        select_modules(GRUWorldModel(), "lstm*")


def test_first_tensor_handles_dataclasses_and_mappings():
    from dataclasses import dataclass

    @dataclass
    class Out:
        meta: str
        last_hidden_state: torch.Tensor

    t = torch.ones(2)
    assert first_tensor(Out("x", t)) is t
    assert first_tensor({"logits": t}) is t
    assert first_tensor(((t, None), 3)) is t
    with pytest.raises(TypeError):
        first_tensor("no tensor")


def test_offload_to_netcdf_roundtrip(tmp_path):
    model = GRUWorldModel().eval()
    path = tmp_path / "feats.nc"
    batches = []
    with LayerTaps(model, "gru*", time_dim=0, offload=path) as taps:
        for _ in range(3):
            batches.append(taps.run(model, torch.randn(4, 6, 3)))
    with xr.open_dataset(path, engine="h5netcdf") as f:
        for name in ("gru1", "gru2"):
            np.testing.assert_allclose(f[name].values,
                                       torch.cat([b[name] for b in batches]).numpy())
