"""TemporalEncoder: taps, masks, scaling, channel modes, save/load."""

import pytest
import torch

from tslayers.model import EncoderConfig, TemporalEncoder
from tslayers.model.layers import rope_tables
from tslayers.probing import LayerTaps
from tslayers.probing.sources import all_layers as _all_layers


def _encoder(**kw):
    torch.manual_seed(0)
    cfg = dict(n_channels=2, patch_len=8, d_model=32, n_layers=4, n_heads=2)
    cfg.update(kw)
    return TemporalEncoder(EncoderConfig(**cfg)).eval()


@pytest.mark.parametrize("kw", [{}, {"causal": True, "n_registers": 2},
                                {"channel_mixing": True, "stride": 4}])
def test_taps_equal_truncated_encoders(kw):
    enc = _encoder(**kw)
    x = torch.randn(3, 61, 2)
    hidden, out = _all_layers(enc, x)
    for layer in range(1, enc.n_layers + 1):
        trunc = enc.truncated(layer)
        alone = _all_layers(trunc, x)[0][layer]
        torch.testing.assert_close(hidden[layer], alone, rtol=0, atol=1e-6)
    torch.testing.assert_close(out.tokens, enc.norm(hidden[enc.n_layers]))


def test_tap_modules_equal_a_hand_written_forward_and_stop_early():
    enc = _encoder(n_registers=1)
    x = torch.randn(2, 32, 2)
    names = enc.tap_names()
    assert names["embed.out"] == 0 and names["blocks.3.out"] == 4
    assert set(names) <= set(dict(enc.named_modules()))  # stable names are real modules
    h = enc.embed_patches(enc.patchify(x))  # reference: the blocks called one by one
    rope = rope_tables(h.shape[1] - 1, 1, 16, enc.config.rope_base, h.device, h.dtype)
    ref = [h]
    for block in enc.blocks:
        h, _ = block(h, rope, causal=False, num_prefix=1, key_lengths=None, stats=False)
        ref.append(h)
    hidden, _ = _all_layers(enc, x)
    for layer, expected in enumerate(ref):
        torch.testing.assert_close(hidden[layer], expected)
    calls = []
    enc.blocks[2].register_forward_hook(lambda *a: calls.append(1))
    with LayerTaps(enc, "blocks.1.out", reduce="none") as taps:  # stops after block 1
        early = taps.run(enc, x)["blocks.1.out"]
    assert not calls
    torch.testing.assert_close(early, ref[2])


def test_channel_layouts():
    x = torch.randn(3, 40, 2)
    ci = _encoder()(x)
    assert ci.tokens.shape == (3 * 2, 5, 32)
    assert ci.per_channel(ci.tokens).shape == (3, 2, 5, 32)
    cm = _encoder(channel_mixing=True)(x)
    assert cm.tokens.shape == (3, 5, 32)
    # channel independence: a channel's tokens do not depend on the other channel
    x2 = x.clone()
    x2[..., 1] = torch.randn(3, 40)
    enc = _encoder()
    a, b = enc(x).per_channel(enc(x).tokens), enc(x2).per_channel(enc(x2).tokens)
    torch.testing.assert_close(a[:, 0], b[:, 0])


def test_patches_end_at_last_step_and_padding_is_unobserved():
    enc = _encoder(stride=4)
    p = enc.patchify(torch.randn(1, 30, 2))
    assert p.pad == 2 and p.values.shape == (2, 7, 8)  # ceil((30 - 8) / 4) + 1 patches
    assert p.observed[:, 0, :2].sum() == 0 and p.observed[:, 0, 2:].all()


def test_instance_scaling_uses_observed_values_only():
    enc = _encoder()
    x = torch.randn(2, 64, 2) * 3 + 7
    x[0, :20, 0] = float("nan")
    p = enc.patchify(x)
    obs = x[0, 20:, 0]
    torch.testing.assert_close(p.loc[0, 0, 0], obs.mean())
    torch.testing.assert_close(p.scale[0, 0, 0], torch.sqrt(obs.var(unbiased=False)))


def test_nan_constant_and_unobserved_patches_stay_finite():
    enc = _encoder(causal=True, n_registers=1)
    x = torch.randn(3, 48, 2)
    x[0] = float("nan")  # a fully unobserved series
    x[1, :, 0] = 1234.5  # a constant channel
    x[2, 8:24, 1] = float("nan")  # two fully unobserved patches
    hidden, out = _all_layers(enc, x, attn_stats=True)
    assert torch.isfinite(out.tokens).all()
    assert all(torch.isfinite(h).all() for h in hidden.values())
    assert all(torch.isfinite(t).all() for s in out.attn_stats.values() for t in s.as_tuple())
    # the constant channel scales to zeros, not to inf
    p = enc.patchify(x)
    assert p.values[2].abs().max() == 0  # series 1, channel 0 in (b c) order


def test_too_short_and_wrong_rank_inputs_name_the_problem():
    enc = _encoder()
    with pytest.raises(ValueError, match="minimum length is patch_len=8"):
        enc(torch.randn(2, 5, 2))
    with pytest.raises(ValueError, match=r"\(batch, time, channels\)"):
        enc(torch.randn(2, 40))


def test_attn_stats_per_layer_match_reference():
    enc = _encoder(n_registers=1, attn_backend="math")
    x = torch.randn(2, 40, 2)
    stats_math = enc(x, attn_stats=True).attn_stats
    for block in enc.blocks:
        block.attn.backend = "sdpa"
    stats_sdpa = enc(x, attn_stats=True).attn_stats
    assert sorted(stats_math) == [1, 2, 3, 4]
    for layer in stats_math:
        for a, b in zip(stats_math[layer].as_tuple(), stats_sdpa[layer].as_tuple()):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(stats_math[layer].received.sum(-1),
                                   torch.full((4, 2), 6.0), atol=1e-4, rtol=0)


def test_save_load_round_trip_is_bit_exact(tmp_path):
    enc = _encoder(n_registers=2, layerscale=0.5)
    enc.save_pretrained(tmp_path / "enc")
    loaded = TemporalEncoder.from_pretrained(tmp_path / "enc").eval()
    assert loaded.config == enc.config
    for (k, a), (_, b) in zip(enc.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), k
    x = torch.randn(2, 40, 2)
    assert torch.equal(enc(x).tokens, loaded(x).tokens)


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="save_pretrained"):
        TemporalEncoder.from_pretrained(tmp_path / "missing")
    _encoder(d_model=32).save_pretrained(tmp_path / "a")
    cfg = (tmp_path / "a" / "config.json").read_text().replace('"d_model": 32', '"d_model": 16')
    (tmp_path / "a" / "config.json").write_text(cfg)
    with pytest.raises(ValueError, match="do not fit the architecture"):
        TemporalEncoder.from_pretrained(tmp_path / "a")


def test_training_step_changes_weights_and_drop_path_is_stochastic():
    enc = _encoder(drop_path=0.5).train()
    x = torch.randn(4, 32, 2)
    assert not torch.equal(enc(x).tokens, enc(x).tokens)
    opt = torch.optim.SGD(enc.parameters(), lr=0.1)
    before = enc.embed.proj.weight.detach().clone()
    enc(x).tokens.pow(2).mean().backward()
    opt.step()
    assert not torch.equal(before, enc.embed.proj.weight)
