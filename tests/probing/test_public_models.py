"""Public-model adapters: every block tapped, taps equal hand-written hooks on the native API.

Random-init models from small configs (no hub access); skipped when a package is absent.
"""

from __future__ import annotations

import importlib.util

import pytest
import torch
from einops import rearrange

from tslayers.probing import LayerTaps
from tslayers.probing.interventions import cache_activations, intervene, patch, patching_effect
from tslayers.probing.public_models import (
    chronos,
    chronos_bolt,
    load_public,
    moment,
    patchtsmixer,
    patchtst,
    timesfm,
)

HAS_HF = importlib.util.find_spec("transformers") is not None
HAS_CHRONOS = importlib.util.find_spec("chronos") is not None
HAS_MOMENT = importlib.util.find_spec("momentfm") is not None
needs_hf = pytest.mark.skipif(not HAS_HF, reason="transformers not installed (extra 'models')")
B, T, C = 2, 64, 3


def _hooked(blocks, call):
    """Hand-written forward hooks: the first tensor each block returns during ``call()``."""
    seen = {}

    def hook(i):
        def fn(module, args, output):
            seen.setdefault(i, (output[0] if isinstance(output, tuple) else output).detach())

        return fn

    handles = [b.register_forward_hook(hook(i)) for i, b in enumerate(blocks)]
    try:
        with torch.no_grad():
            out = call()
    finally:
        for h in handles:
            h.remove()
    return out, [seen[i] for i in range(len(blocks))]


def _tap(pm, x):
    with LayerTaps(pm.module, pm.taps, reduce="tokens", stop_early=False, **pm.tap_kwargs) as t:
        return t.run(pm.module, x)


def _x(seed=0):
    return torch.randn(B, T, C, generator=torch.Generator().manual_seed(seed))


@needs_hf
def test_patchtst_taps_every_block_like_hooks():
    pm = patchtst(context_length=T, num_input_channels=C, patch_length=8, patch_stride=8,
                  d_model=16, num_hidden_layers=3, num_attention_heads=2, ffn_dim=32)
    hf = pm.module.model
    assert pm.layer_names() == [f"model.encoder.layers.{i}" for i in range(3)]
    x = _x()
    out, ref = _hooked(hf.encoder.layers, lambda: hf(past_values=x).last_hidden_state)
    feats = _tap(pm, x)
    for i, name in enumerate(pm.layer_names()):  # blocks hold (B, C, N, D)
        assert torch.equal(feats[name], rearrange(ref[i], "b c n d -> b n (c d)"))
    with torch.no_grad():
        assert torch.equal(pm.module(x), out)
    gappy = x.clone()
    gappy[0, :5, 1] = float("nan")  # NaN = unobserved, through the model's own mask
    with torch.no_grad():
        assert torch.isfinite(pm.module(gappy)).all()
    with pytest.raises(ValueError, match="set --context 64"):
        pm.module(torch.randn(B, 50, C))
    with pytest.raises(ValueError, match="built for 3 channels, the data has 1"):
        pm.module(torch.randn(B, T, 1))


@needs_hf
def test_patchtsmixer_taps_every_block_like_hooks():
    pm = patchtsmixer(context_length=T, num_input_channels=C, patch_length=8, patch_stride=8,
                      d_model=16, num_layers=3)
    hf = pm.module.model
    names = pm.layer_names()
    assert names == [f"model.encoder.mlp_mixer_encoder.mixers.{i}" for i in range(3)]
    x = _x(1)
    out, ref = _hooked(hf.encoder.mlp_mixer_encoder.mixers,
                       lambda: hf(past_values=x).last_hidden_state)
    feats = _tap(pm, x)
    for i, name in enumerate(names):
        assert torch.equal(feats[name], rearrange(ref[i], "b c n d -> b n (c d)"))
    with torch.no_grad():
        assert torch.equal(pm.module(x), out)


@needs_hf
def test_timesfm_taps_every_block_like_hooks():
    pytest.importorskip("transformers.models.timesfm")
    pm = timesfm(context_length=T, horizon_length=8, patch_length=8, hidden_size=16,
                 intermediate_size=16, head_dim=8, num_attention_heads=2, num_hidden_layers=3)
    hf = pm.module.model
    assert pm.layer_names() == [f"model.layers.{i}" for i in range(3)]
    x = _x(2)
    series = rearrange(x, "b t c -> (b c) t")

    def native():
        return hf(past_values=series, past_values_padding=torch.zeros_like(series).long(),
                  freq=torch.zeros(len(series), 1, dtype=torch.long)).last_hidden_state

    out, ref = _hooked(hf.layers, native)
    feats = _tap(pm, x)
    for i, name in enumerate(pm.layer_names()):
        assert torch.equal(feats[name], rearrange(ref[i], "(b c) n d -> b n (c d)", c=C))
    with torch.no_grad():
        assert torch.equal(pm.module(x), out)
        short = pm.module(x[:, 3:])  # 61 steps: left-padded to 64, padding marked
    assert short.shape == out.shape


@pytest.mark.skipif(not HAS_CHRONOS, reason="chronos-forecasting not installed")
def test_chronos_bolt_taps_every_block_like_hooks():
    pm = chronos_bolt(d_model=16, d_ff=32, num_layers=2, num_decoder_layers=1, num_heads=2,
                      d_kv=8, chronos_config=dict(context_length=T, input_patch_size=8,
                                                  input_patch_stride=8))
    hf = pm.module.model
    assert pm.layer_names() == ["model.encoder.block.0", "model.encoder.block.1"]
    x = _x(3)
    out, ref = _hooked(hf.encoder.block, lambda: hf.encode(rearrange(x, "b t c -> (b c) t"))[0])
    feats = _tap(pm, x)
    for i, name in enumerate(pm.layer_names()):
        assert torch.equal(feats[name], rearrange(ref[i], "(b c) n d -> b n (c d)", c=C))
    with torch.no_grad():
        assert torch.equal(pm.module(x), out)


@pytest.mark.skipif(not HAS_MOMENT, reason="momentfm not installed (it pins transformers 4.33;"
                    " run this file in an environment of its own)")
def test_moment_taps_every_block_like_hooks():
    pm = moment(seq_len=T, patch_len=8, d_model=16, d_ff=32, num_layers=2, num_heads=2, d_kv=8)
    inner = pm.module.model
    assert pm.layer_names() == ["model.encoder.block.0", "model.encoder.block.1"]
    x = _x(4)
    mask = torch.ones(B, T, dtype=torch.long)
    out, ref = _hooked(inner.encoder.block,
                       lambda: inner(x_enc=x.transpose(1, 2), input_mask=mask).embeddings)
    feats = _tap(pm, x)
    for i, name in enumerate(pm.layer_names()):  # MOMENT folds channels into the batch
        assert torch.equal(feats[name], rearrange(ref[i], "(b c) n d -> b n (c d)", c=C))
    with torch.no_grad():
        assert torch.equal(pm.module(x), out)
    with pytest.raises(ValueError, match=f"set --context {T}"):
        pm.module(torch.randn(B, T - 8, C))


@needs_hf
def test_random_init_is_seeded_and_names_are_checked():
    kw = dict(context_length=T, num_input_channels=C, patch_length=8, patch_stride=8,
              d_model=16, num_hidden_layers=1, num_attention_heads=2, ffn_dim=32)
    a, b, c = load_public("patchtst", seed=1, **kw), patchtst(seed=1, **kw), patchtst(seed=2, **kw)
    wa, wb, wc = (m.module.model.encoder.layers[0].ff[0].weight for m in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)
    with pytest.raises(ValueError, match="available: patchtst"):
        load_public("gpt")


@needs_hf
def test_interventions_reach_patchtst_blocks():
    """HF blocks return tuples: a patch rebuilds them, and each block's output carries the
    whole residual stream, so patching any block restores all of the difference."""
    pm = patchtst(context_length=T, num_input_channels=C, patch_length=8, patch_stride=8,
                  d_model=16, num_hidden_layers=2, num_attention_heads=2, ffn_dim=32)
    clean, corrupt = _x(4), _x(5)
    last = pm.layer_names()[-1]
    bad = cache_activations(pm.module, last, corrupt)
    with torch.no_grad():
        y_corrupt = pm.module(corrupt)
        with intervene(pm.module, {last: patch(bad[last])}):
            assert torch.allclose(pm.module(clean), y_corrupt, atol=1e-6)
    eff = patching_effect(pm.module, pm.taps, clean, corrupt, time_dim=2)
    assert list(eff.tap.values) == pm.layer_names()
    assert abs(eff.values - 1).max() < 1e-5


def test_missing_package_names_the_extra():
    from tslayers.probing.public_models import _require

    with pytest.raises(ImportError, match=r"pip install 'tslayers\[models\]'"):
        _require("no_such_package_xyz")


@pytest.mark.skipif(not HAS_CHRONOS, reason="chronos-forecasting not installed")
def test_chronos_t5_taps_every_block_like_hooks():
    pm = chronos(d_model=16, d_ff=32, num_layers=2, num_decoder_layers=1, num_heads=2, d_kv=8,
                 chronos_config=dict(context_length=T, n_tokens=64))
    names = pm.layer_names()
    assert names == ["model.model.encoder.block.0", "model.model.encoder.block.1"]
    from chronos import ChronosPipeline

    pipeline = ChronosPipeline(tokenizer=pm.module.tokenizer, model=pm.module.model)
    x = _x(6)
    out, ref = _hooked(pm.module.model.model.encoder.block,
                       lambda: pipeline.embed(rearrange(x, "b t c -> (b c) t"))[0])
    feats = _tap(pm, x)
    assert feats[names[0]].shape == (B, T + 1, C * 16)  # T tokens + EOS
    for i, name in enumerate(names):
        assert torch.equal(feats[name], rearrange(ref[i], "(b c) n d -> b n (c d)", c=C))
    with torch.no_grad():
        assert torch.equal(pm.module(x), out)
