"""Alignment heads and losses against closed forms."""

import pytest
import torch

from tslayers.align.heads import (
    DynamicsAligner,
    DynamicsLossConfig,
    ForecastAligner,
    ForecastHeadConfig,
    correspondence_loss,
    quantile_loss,
    sharpened_similarity,
    spectral_descriptor,
)
from tslayers.model import EncoderConfig, TemporalEncoder


def _encoder(**kw):
    torch.manual_seed(0)
    cfg = dict(n_channels=1, patch_len=8, d_model=32, n_layers=4, n_heads=2)
    cfg.update(kw)
    return TemporalEncoder(EncoderConfig(**cfg))


def test_truncation_keeps_exactly_the_layers_and_weights():
    enc = _encoder()
    aligner = ForecastAligner(enc, layer=2, head=ForecastHeadConfig(horizon=12))
    assert aligner.encoder.n_layers == 2 and aligner.encoder.config.n_layers == 2
    own = aligner.encoder.state_dict()
    for name, value in own.items():
        assert torch.equal(value, enc.state_dict()[name]), name
    assert not any(k.startswith("blocks.2") for k in own)
    x = torch.randn(3, 48, 1)
    pred, _ = aligner(x)
    assert pred.shape == (3, 12, 1, 1)
    with pytest.raises(ValueError, match="truncate"):
        ForecastAligner(enc, layer=5, head=ForecastHeadConfig())


def test_frozen_encoder_gets_no_gradient_and_does_not_move():
    aligner = ForecastAligner(_encoder(), layer=3, head=ForecastHeadConfig(horizon=8))
    aligner.set_encoder_trainable(False)
    before = {k: v.clone() for k, v in aligner.encoder.state_dict().items()}
    opt = torch.optim.AdamW([p for p in aligner.parameters() if p.requires_grad], lr=1e-2)
    x, future = torch.randn(4, 40, 1), torch.randn(4, 8, 1)
    for _ in range(3):
        opt.zero_grad()
        aligner.loss(x, future).backward()
        opt.step()
    assert all(p.grad is None for p in aligner.encoder.parameters())
    for k, v in aligner.encoder.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert any(p.grad is not None for p in aligner.head_parameters())


def test_sharpened_similarity_is_the_specified_formula():
    f = torch.randn(2, 5, 3)
    got = sharpened_similarity(f, temperature=20.0)
    for b in range(2):
        for i in range(5):
            for j in range(5):
                cos = torch.dot(f[b, i], f[b, j]) / (f[b, i].norm() * f[b, j].norm())
                torch.testing.assert_close(got[b, i, j], torch.exp(20.0 * (cos - 1.0)))


def test_correspondence_loss_zero_when_similarities_agree():
    tokens = torch.randn(2, 6, 4)
    n = torch.nn.functional.normalize(tokens, dim=-1)
    assert correspondence_loss(tokens, n @ n.transpose(1, 2)).item() < 1e-12


def test_correspondence_gradient_matches_closed_form():
    torch.manual_seed(1)
    s = torch.randn(1, 5, 3, dtype=torch.float64, requires_grad=True)
    t = torch.rand(1, 5, 5, dtype=torch.float64)
    t = (t + t.transpose(1, 2)) / 2
    correspondence_loss(s, t.float()).backward()
    # closed form: loss = mean((G - T)^2), G = u u^T with u = s / |s| row-wise
    u = s.detach() / s.detach().norm(dim=-1, keepdim=True)
    g = u @ u.transpose(1, 2)
    du = 4.0 / g.numel() * (g - t) @ u
    ds = (du - (du * u).sum(-1, keepdim=True) * u) / s.detach().norm(dim=-1, keepdim=True)
    torch.testing.assert_close(s.grad, ds, rtol=1e-4, atol=1e-7)


def test_quantile_loss_closed_form_and_median_optimum():
    target = torch.tensor([1.0, 2.0, float("nan")])
    pred = torch.tensor([[0.0], [3.0], [5.0]])
    # pinball at q=0.9: 0.9 * (1 - 0) and 0.1 * (3 - 2), mean over the two observed points
    torch.testing.assert_close(quantile_loss(pred, target, [0.9]), torch.tensor(0.5))
    samples = torch.randn(2001)
    grid = torch.linspace(-1, 1, 201)
    losses = [quantile_loss(torch.full((2001, 1), float(g)), samples, [0.5]) for g in grid]
    assert abs(float(grid[int(torch.stack(losses).argmin())]) - float(samples.median())) < 0.02


def test_spectral_descriptor_is_translation_invariant_for_a_sine():
    t = torch.arange(64, dtype=torch.float32)
    patches = torch.sin(2 * torch.pi * t / 8).reshape(1, 8, 8)
    d = spectral_descriptor(patches, scales=(1,))
    torch.testing.assert_close(d[0, 0], d[0, 5], atol=1e-4, rtol=0)


def test_dynamics_teacher_is_frozen_and_losses_switch_off():
    enc = _encoder()
    cfg = DynamicsLossConfig(teacher_layer=2, locality_teacher="spectral", student_mask_ratio=0.3)
    aligner = DynamicsAligner(enc, cfg).train()
    x = torch.randn(3, 48, 1)
    losses = aligner.losses({"x": x})
    assert set(losses) == {"distill", "correspondence", "loss"}
    losses["loss"].backward()
    assert all(p.grad is None for p in aligner.teacher.parameters())
    assert not aligner.teacher.training
    only = DynamicsAligner(_encoder(), DynamicsLossConfig(teacher_layer=2, distill_weight=0.0))
    assert "distill" not in only.losses({"x": x})
    with pytest.raises(ValueError, match="teacher_layer=7 does not exist"):
        DynamicsAligner(enc, DynamicsLossConfig(teacher_layer=7))
    latent_cfg = DynamicsLossConfig(teacher_layer=2, locality_teacher="latent")
    lat = DynamicsAligner(_encoder(), latent_cfg)
    with pytest.raises(ValueError, match="latent states"):
        lat.losses({"x": x})
    assert torch.isfinite(lat.losses({"x": x, "latent": torch.randn(3, 48, 2)})["loss"])


def test_learned_teacher_uses_the_other_encoders_layer():
    from tslayers.probing.sources import all_layers

    student, teacher = _encoder(), _encoder(n_registers=1)
    torch.manual_seed(3)
    teacher = TemporalEncoder(teacher.config)
    cfg = DynamicsLossConfig(teacher_layer=2, locality_teacher="encoder", locality_layer=3)
    aligner = DynamicsAligner(student, cfg, teacher)
    x = torch.randn(2, 48, 1)
    got = aligner._encoder_locality(x)
    hidden, _ = all_layers(teacher.eval(), x)
    torch.testing.assert_close(got, hidden[3][:, teacher.num_prefix :])
    assert all(not p.requires_grad for p in aligner.locality_encoder.parameters())
    with pytest.raises(ValueError, match="do not line up"):
        DynamicsAligner(_encoder(), cfg, _encoder(patch_len=4))
    with pytest.raises(ValueError, match="teacher encoder"):
        DynamicsAligner(_encoder(), cfg)
