"""Objectives: the masks, the losses' pairings, EMA, units, and that each loss falls."""

import math

import pytest
import torch
from objective_batches import sine_batch, tiny_encoder_config

from tslayers.model import TemporalEncoder
from tslayers.objectives import (
    ForecastObjective,
    ObjectiveConfig,
    build_objective,
    ema_momentum,
    info_nce,
    load_objective,
    masked_patch_mse,
    sample_patch_mask,
    save_objective,
    token_info_nce,
)
from tslayers.probing import LayerTaps


def tiny_encoder(**kw) -> TemporalEncoder:
    torch.manual_seed(0)
    return TemporalEncoder(tiny_encoder_config(**kw))


# ---------------------------------------------------------------------------- config and masks


@pytest.mark.parametrize("kw, match", [
    ({"name": "diffusion"}, "unknown; choose one of contrastive, forecast"),
    ({"mask_ratio": 0.0}, "strictly between 0 and 1"),
    ({"mask_ratio": 1.0}, "strictly between 0 and 1"),
    ({"mask_ratio": -0.2}, "strictly between 0 and 1"),
    ({"name": "forecast", "loss": "smooth_l1"}, "not available for forecast"),
    ({"temperature": 0.0}, "temperature"),
])
def test_bad_objective_config_is_a_clear_error(kw, match):
    with pytest.raises(ValueError, match=match):
        ObjectiveConfig(**kw)


def test_random_mask_has_exact_count_and_block_mask_is_contiguous():
    torch.manual_seed(0)
    m = sample_patch_mask(64, 20, 0.3, "random")
    assert (m.sum(1) == 6).all()
    b = sample_patch_mask(64, 20, 0.4, "block", block_len=4)
    assert b.any(1).all() and (~b).any(1).all()
    assert (b.float().mean() - 0.4).abs() < 0.1
    # runs of masked patches: interior runs are whole blocks (multiples of 4)
    for row in b.int().tolist():
        runs, cur = [], 0
        for i, v in enumerate(row + [0]):
            if v:
                cur += 1
            elif cur:
                runs.append((i - cur, cur))
                cur = 0
        assert all(n % 4 == 0 for s, n in runs if s > 0 and s + n < 20)
    assert not sample_patch_mask(8, 2, 0.9).all(1).any()  # never masks a whole row


# ---------------------------------------------------------------------------- reconstruct


def test_masked_patch_mse_ignores_visible_and_unobserved():
    target = torch.randn(2, 5, 4)
    observed = torch.ones(2, 5, 4)
    observed[0, 1, :2] = 0
    mask = torch.zeros(2, 5, dtype=torch.bool)
    mask[:, 1] = True
    pred = target + 100.0 * (~mask)[..., None]  # wrong everywhere except masked patches
    pred[0, 1, :2] += 50.0  # wrong on unobserved entries of a masked patch
    assert masked_patch_mse(pred, target, observed, mask) == 0
    pred[1, 1, 3] += 2.0
    assert masked_patch_mse(pred, target, observed, mask) == pytest.approx(4.0 / 6)


def test_reconstruct_gradient_reaches_only_masked_patches():
    enc = tiny_encoder()
    obj = build_objective(ObjectiveConfig(name="reconstruct", mask_ratio=0.5),
                          tiny_encoder_config())
    batch = sine_batch(b=3, t=64)
    fixed = torch.zeros(6, 8, dtype=torch.bool)
    fixed[:, 2:5] = True
    obj.sample_mask = lambda n, p, device: fixed
    seen = {}

    def keep(module, inputs, output):
        output.retain_grad()
        seen["pred"] = output

    obj.head.register_forward_hook(keep)
    out = obj(enc, batch)
    out.loss.backward()
    grad = seen["pred"].grad.abs().sum(-1)  # (B', P)
    assert (grad[~fixed] == 0).all() and (grad[fixed] > 0).all()
    assert out.metrics["mse_visible"] > 0  # visible error exists but is not trained on


# ---------------------------------------------------------------------------- contrastive


def test_info_nce_pairs_view_i_with_view_i_against_all_others():
    a = torch.eye(4) * 5
    perfect, acc = info_nce(a, a.clone(), temperature=0.1)
    assert perfect < 1e-3 and acc == 1
    swapped, acc = info_nce(a, a[[1, 0, 3, 2]], temperature=0.1)
    assert swapped > 5 and acc == 0
    # hand formula for row 0 with temperature 1: positive b0, negatives a1, b1 (not a0 itself)
    x, y = torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([[0.6, 0.8], [0.8, 0.6]])
    loss, _ = info_nce(x, y, temperature=1.0)
    sims = torch.cat([x, y]) @ torch.cat([x, y]).T
    expected = [-sims[i, j] + torch.logsumexp(torch.cat([sims[i, :i], sims[i, i + 1:]]), 0)
                for i, j in [(0, 2), (1, 3), (2, 0), (3, 1)]]
    assert loss == pytest.approx(float(torch.stack(expected).mean()), rel=1e-5)


def test_token_positives_are_the_same_absolute_patch():
    """One-hot 'time codes': token of absolute patch a is e_a in both views."""
    p, n_abs = 4, 8
    off_u, off_v = torch.tensor([0, 3, 2]), torch.tensor([2, 1, 2])
    codes = torch.eye(n_abs) * 10
    u = torch.stack([codes[o:o + p] for o in off_u])
    v = torch.stack([codes[o:o + p] for o in off_v])
    aligned = token_info_nce(u, v, off_u, off_v, temperature=0.1)
    assert aligned < 1e-3
    # if offsets were ignored (positives on the diagonal), the same tokens would score badly
    assert token_info_nce(u, v, off_v * 0, off_v * 0, temperature=0.1) > 1.0


def test_contrastive_views_are_patch_aligned_crops():
    cfg = ObjectiveConfig(name="contrastive", jitter=0.0, scale_std=0.0, time_mask=0.0,
                          crop_ratio=0.5)
    obj = build_objective(cfg, tiny_encoder_config())
    x = torch.arange(64.0).reshape(1, 64, 1).repeat(2, 1, 1)
    view = obj.augment(x, torch.tensor([0, 3]), n_crop=4)  # 4 patches of 8
    assert view.shape == (2, 32, 1)
    assert view[1, 0, 0] == 24 and view[0, -1, 0] == 31


# ---------------------------------------------------------------------------- jepa


def test_jepa_target_gets_no_gradient_and_moves_by_ema():
    enc = tiny_encoder()
    cfg = ObjectiveConfig(name="jepa", ema_start=0.9, ema_end=1.0)
    obj = build_objective(cfg, tiny_encoder_config())
    obj.attach(enc)
    for t, o in zip(obj.target.parameters(), enc.parameters()):
        assert torch.equal(t, o)
    out = obj(enc, sine_batch(b=4))
    out.loss.backward()
    assert all(p.grad is None for p in obj.target.parameters())
    assert all(p.grad is not None for p in obj.predictor.parameters())
    before = [p.clone() for p in obj.target.parameters()]
    with torch.no_grad():
        for p in enc.parameters():
            p.add_(torch.randn_like(p))
    obj.after_step(enc, progress=0.0)  # momentum = ema_start
    for t, b, o in zip(obj.target.parameters(), before, enc.parameters()):
        torch.testing.assert_close(t, 0.9 * b + 0.1 * o)
    assert ema_momentum(0.5, 0.9, 1.0) == pytest.approx(0.95)
    assert ema_momentum(1.0, 0.9, 1.0) == 1.0


# ---------------------------------------------------------------------------- forecast


def test_forecast_decodes_in_original_units():
    """Instance scaling makes the forecaster equivariant to affine changes of units."""
    enc = tiny_encoder().eval()
    obj = build_objective(ObjectiveConfig(name="forecast", horizon=16), tiny_encoder_config())
    x = sine_batch(b=3)["x"]
    out = enc(x)
    y = obj.decode(out.tokens, out)
    assert y.shape == (3, 16, 2)
    torch.testing.assert_close(obj.predict(enc, x), y)
    torch.testing.assert_close(obj.predict(enc, 10 * x + 3), 10 * y + 3, rtol=1e-4, atol=1e-3)
    # any layer's tokens decode through the same head
    with LayerTaps(enc, "blocks.0.out", reduce="none") as taps:
        mid = taps.run(enc, x)["blocks.0.out"]
    assert obj.decode(mid, out).shape == (3, 16, 2)


def test_quantile_forecast_predicts_the_median():
    cfg = ObjectiveConfig(name="forecast", horizon=8, loss="quantile", quantiles=[0.1, 0.5, 0.9])
    ecfg = tiny_encoder_config(channel_mixing=True)
    obj = build_objective(cfg, ecfg)
    enc = TemporalEncoder(ecfg).eval()
    x = sine_batch(b=2)["x"]
    out = enc(x)
    q = obj.scaled(out.tokens, 2)
    assert q.shape == (2, 8, 2, 3)
    median = q[..., 1] * out.patched.scale + out.patched.loc
    torch.testing.assert_close(obj.decode(out.tokens, out), median)


def objective_config(name: str, **knobs) -> ObjectiveConfig:
    """The objective with the test batches' 16-step horizon where it has one."""
    return ObjectiveConfig(name=name, **({"horizon": 16} if name == "forecast" else {}), **knobs)


def test_a_knob_of_another_objective_is_named_not_silently_ignored(recwarn):
    ObjectiveConfig(name="jepa", mask_ratio=0.5, loss="smooth_l1")  # its own knobs
    assert not recwarn.list
    with pytest.warns(UserWarning, match=r"'forecast' ignores temperature=0.2 \(contrastive\)"):
        ObjectiveConfig(name="forecast", temperature=0.2)
    with pytest.warns(UserWarning, match=r"horizon=16 \(forecast\)"):
        ObjectiveConfig(name="reconstruct", horizon=16)


# ---------------------------------------------------------------------------- learning


@pytest.mark.parametrize("name, extra, drop", [
    ("forecast", {}, 0.75),
    ("forecast", {"loss": "quantile"}, 0.75),
    ("reconstruct", {"mask_ratio": 0.3, "mask_type": "random"}, 0.6),
    ("contrastive", {}, 0.85),
    ("jepa", {"ema_start": 0.99}, 0.7),
])
def test_loss_falls_on_a_small_synthetic_problem(name, extra, drop):
    """30 AdamW steps on random sines: mean of the last 5 losses vs the first 5."""
    torch.manual_seed(0)
    ecfg = tiny_encoder_config()
    enc = TemporalEncoder(ecfg)
    obj = build_objective(objective_config(name, **extra), ecfg)
    obj.attach(enc)
    params = [p for m in (enc, obj) for p in m.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-2)
    steps, losses = 30, []
    for step in range(steps):
        out = obj(enc, sine_batch(b=16, seed=step))
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        obj.after_step(enc, step / steps)
        losses.append(out.loss.item())
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert math.isfinite(last) and last < drop * first, (first, last)


# ---------------------------------------------------------------------------- save / load


@pytest.mark.parametrize("name", ["forecast", "jepa"])
def test_save_and_load_objective(tmp_path, name):
    ecfg = tiny_encoder_config()
    obj = build_objective(objective_config(name), ecfg)
    save_objective(obj, tmp_path)
    again = load_objective(tmp_path, ecfg)
    for (k, a), (_, b) in zip(obj.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), k
    assert isinstance(load_objective(tmp_path, ecfg), type(obj))
    with pytest.raises(ValueError, match="do not fit an encoder with d_model=64"):
        load_objective(tmp_path, tiny_encoder_config(d_model=64))


def test_forecast_objective_requires_future():
    obj = ForecastObjective(ObjectiveConfig(horizon=16), tiny_encoder_config())
    with pytest.raises(ValueError, match="data.horizon = objective.horizon"):
        obj(TemporalEncoder(tiny_encoder_config()), {"x": torch.randn(2, 64, 2)})
