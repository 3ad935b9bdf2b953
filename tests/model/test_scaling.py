"""Instance scaling on hostile input: infinities, huge values, flat contexts."""

import numpy as np
import torch

from tslayers.model import EncoderConfig, TemporalEncoder
from tslayers.objectives import ObjectiveConfig, build_objective


def _encoder(**kw) -> TemporalEncoder:
    torch.manual_seed(0)
    return TemporalEncoder(EncoderConfig(n_channels=2, patch_len=8, d_model=16, n_layers=2,
                                         n_heads=2, **kw)).eval()


def test_infinities_count_as_missing_like_nan():
    enc = _encoder()
    x = torch.randn(2, 32, 2)
    with_inf, with_nan = x.clone(), x.clone()
    with_inf[0, 5, 0], with_inf[1, 9, 1] = float("inf"), float("-inf")
    with_nan[0, 5, 0], with_nan[1, 9, 1] = float("nan"), float("nan")
    a, b = enc(with_inf), enc(with_nan)
    assert torch.isfinite(a.tokens).all()
    torch.testing.assert_close(a.tokens, b.tokens, rtol=0, atol=0)
    torch.testing.assert_close(a.patched.observed, b.patched.observed, rtol=0, atol=0)


def test_huge_values_are_scaled_like_ordinary_ones():
    enc = _encoder()
    x = torch.randn(1, 32, 2, dtype=torch.float64)
    huge = enc.patchify((x * 1e20).float())
    small = enc.patchify(x.float())
    ref = (x - x.mean(1, keepdim=True)) / x.std(1, unbiased=False, keepdim=True)  # numpy-free
    assert torch.isfinite(huge.scale).all() and float(huge.scale.min()) > 1e19
    torch.testing.assert_close(huge.values, small.values, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(small.values.reshape(2, -1).T,
                               ref[0].float(), rtol=1e-5, atol=1e-5)


def test_flat_context_scale_is_relative_to_the_level():
    enc = _encoder()
    x = torch.full((1, 32, 2), 50.0)
    x[0, :, 1] = 0.0  # all zero: nothing to normalise
    p = enc.patchify(x)
    np.testing.assert_allclose(p.scale[0, 0].numpy(), [0.5, 1.0], rtol=1e-6)  # 1% of |50|
    assert p.values.abs().max() == 0


def test_forecast_targets_after_a_flat_context_keep_their_size():
    """Old floor sqrt(var + 1e-5): a step of 1 after a flat context became a target of ~316."""
    torch.manual_seed(0)
    cfg = EncoderConfig(n_channels=1, patch_len=8, d_model=16, n_layers=1, n_heads=2)
    enc = TemporalEncoder(cfg)
    obj = build_objective(ObjectiveConfig(name="forecast", horizon=4), cfg)
    x = torch.full((4, 32, 1), 100.0)
    future = torch.full((4, 4, 1), 101.0)
    future[0, 0, 0] = float("inf")  # missing, not a target
    out = obj(enc, {"x": x, "future": future})
    assert torch.isfinite(out.loss)
    # targets are (101 - 100) / (0.01 * 100) = 1: the loss stays of order one
    assert float(out.metrics["mse"]) < 10
