"""Training: schedule, parameter groups, resumable data order, pretrain runs, kill + resume."""

import json

import lightning as L
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from tslayers.cli import main
from tslayers.config import from_dict, load_config, save_config
from tslayers.model import TemporalEncoder
from tslayers.objectives import load_objective
from tslayers.training import (
    EpochSampler,
    PretrainConfig,
    ResumableLoader,
    param_groups,
    pretrain,
    warmup_cosine,
)


def tiny(objective: str = "jepa", **train) -> dict:
    """~84 training windows of 64 steps, 3 channels: 3 batches per epoch."""
    return {
        "data": {"name": "synthetic/mixture", "params": {"n_series": 40, "length": 128},
                 "context": 64, "stride": 32, "batch_size": 32},
        "encoder": {"patch_len": 8, "d_model": 32, "n_layers": 2, "n_heads": 2},
        "objective": {"name": objective, "horizon": 16},
        "train": {"max_steps": 8, "val_check_interval": 4, "ckpt_every_n_steps": 2,
                  "log_every_n_steps": 1, "warmup_steps": 2, "progress_bar": False,
                  "limit_val_batches": 2, **train},
    }


# ---------------------------------------------------------------------------- loop pieces


def test_warmup_then_cosine_to_min_ratio():
    lr = [warmup_cosine(s, warmup=10, total=110, min_ratio=0.1) for s in range(111)]
    assert lr[0] < lr[5] < lr[9] < 1.0 and lr[10] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lr[10:], lr[11:]))
    assert lr[110] == pytest.approx(0.1) and lr[60] == pytest.approx(0.55)


def test_param_groups_decay_only_matrices_and_skip_frozen():
    enc = TemporalEncoder(from_dict(PretrainConfig, tiny()).encoder)
    frozen = nn.Linear(3, 3).requires_grad_(False)
    decay, no_decay = param_groups([enc, frozen], 0.05)
    assert all(p.ndim == 2 for p in decay["params"])
    assert any(p is enc.mask_token for p in no_decay["params"])
    n_trainable = sum(1 for _ in enc.parameters())
    assert len(decay["params"]) + len(no_decay["params"]) == n_trainable


def test_epoch_sampler_is_seeded_per_epoch_and_shards_ranks():
    a, b = EpochSampler(10, seed=1, epoch=0), EpochSampler(10, seed=1, epoch=0)
    assert list(a) == list(b) and list(a) != list(EpochSampler(10, seed=1, epoch=1))
    shards = [list(EpochSampler(10, 1, 0, rank=r, world=3)) for r in range(3)]
    assert all(len(s) == 4 for s in shards) and set(sum(shards, [])) == set(range(10))
    assert list(EpochSampler(10, 1, 0, start=4)) == list(a)[4:]


def test_resumable_loader_order_is_a_function_of_batches_done_only():
    """Order = (seed, epoch) permutation; epoch and position follow from the batch count, so
    Lightning's epoch counter (one ahead after an end-of-epoch checkpoint) cannot shift it."""
    data = list(range(20))  # 5 batches of 4 per epoch
    reference = [EpochSampler(20, 3, e).indices() for e in range(3)]
    expected = [reference[e][i:i + 4] for e in range(3) for i in range(0, 20, 4)]
    for stop in (2, 5, 7, 10):  # mid-epoch, end of epoch 0, mid-epoch 1, end of epoch 1
        loader = ResumableLoader(DataLoader(data, batch_size=4), seed=3)
        seen = []
        while len(seen) < stop:
            for b in loader:
                loader.mark()
                seen.append(b.tolist())
                if len(seen) == stop:
                    break
        again = ResumableLoader(DataLoader(data, batch_size=4), seed=3)
        again.load_state_dict(loader.state_dict())
        again.set_epoch(99)  # whatever Lightning says
        rest = []
        while len(seen) + len(rest) < 15:
            for b in again:
                again.mark()
                rest.append(b.tolist())
        assert seen + rest == expected, stop
    assert len(again) == 5


# ---------------------------------------------------------------------------- configs


def test_forecast_horizon_is_tied_to_the_data_horizon():
    cfg = from_dict(PretrainConfig, tiny("forecast"))
    assert cfg.data.horizon == 16
    bad = tiny("forecast")
    bad["data"]["horizon"] = 8
    with pytest.raises(ValueError, match="longer than data.horizon"):
        from_dict(PretrainConfig, bad)


@pytest.mark.parametrize("name", ["forecast", "reconstruct", "contrastive", "jepa"])
def test_shipped_configs_load(name):
    cfg = load_config(PretrainConfig, f"configs/pretrain/{name}.yaml")
    assert cfg.objective.name == name and cfg.data.name == "synthetic/mixture"


@pytest.mark.parametrize("override, match", [
    ("objective.name=diffusion", "unknown; choose one of"),
    ("objective.mask_ratio=0", "strictly between 0 and 1"),
    ("objective.mask_ratio=1.0", "strictly between 0 and 1"),
    ("objective.mask_rate=0.3", "Did you mean 'mask_ratio'"),
])
def test_bad_config_is_a_clear_cli_error(tmp_path, capsys, override, match):
    path = save_config(from_dict(PretrainConfig, tiny()), tmp_path / "c.yaml")
    assert main(["pretrain", str(path), override, "--out", str(tmp_path / "run")]) == 1
    assert match in capsys.readouterr().err


def test_horizon_longer_than_the_series_is_a_clear_error(tmp_path):
    cfg = from_dict(PretrainConfig, tiny("forecast"))
    cfg.data.horizon = cfg.objective.horizon = 80
    with pytest.raises(ValueError, match="no window fits"):
        pretrain(cfg, out_dir=tmp_path)


# ---------------------------------------------------------------------------- runs


class Recorder(L.Callback):
    def __init__(self):
        self.losses = {}

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.losses[trainer.global_step] = float(outputs["loss"])


class Kill(L.Callback):
    def __init__(self, at: int):
        self.at = at

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if trainer.global_step == self.at:
            raise RuntimeError("simulated crash")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("full")
    rec = Recorder()
    pretrain(from_dict(PretrainConfig, tiny()), out_dir=out, callbacks=[rec])
    return out, rec.losses


def test_killed_run_resumes_to_the_same_loss_curve(tmp_path, uninterrupted):
    """JEPA: random masks, an EMA target and a mid-epoch kill (3 batches per epoch)."""
    full_dir, full = uninterrupted
    cfg = from_dict(PretrainConfig, tiny())
    first = Recorder()
    with pytest.raises(RuntimeError, match="simulated crash"):
        pretrain(cfg, out_dir=tmp_path, callbacks=[first, Kill(at=5)])
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()  # written at step 4
    second = Recorder()
    pretrain(cfg, out_dir=tmp_path, resume="auto", callbacks=[second])
    assert sorted(second.losses) == [5, 6, 7, 8]
    assert sorted(p.name for p in (tmp_path / "logs" / "csv").iterdir()) == ["version_0",
                                                                         "version_1"]
    for step in range(1, 9):
        got = first.losses[step] if step <= 4 else second.losses[step]
        assert got == pytest.approx(full[step], rel=1e-5, abs=1e-6), step
    assert json.loads((tmp_path / "metrics.json").read_text())["global_step"] == 8
    a = TemporalEncoder.from_pretrained(full_dir / "encoder").state_dict()
    b = TemporalEncoder.from_pretrained(tmp_path / "encoder").state_dict()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)


def test_checkpoint_of_another_architecture_is_refused(tmp_path, uninterrupted):
    full_dir, _ = uninterrupted
    bad = tiny()
    bad["encoder"]["d_model"] = 64
    with pytest.raises(ValueError, match="does not fit this run's model"):
        pretrain(from_dict(PretrainConfig, bad), out_dir=tmp_path,
                 resume=full_dir / "checkpoints" / "last.ckpt")


def test_cli_run_directory_and_collapse_warning(tmp_path):
    """Contrastive, channel-mixing (n_channels comes from the data), rank threshold = d_model
    so the collapse warning must fire."""
    cfg = from_dict(PretrainConfig, tiny("contrastive", max_steps=4, collapse_rank_fraction=1.0))
    cfg.encoder.channel_mixing = True
    path = save_config(cfg, tmp_path / "c.yaml")
    out = tmp_path / "run"
    with pytest.warns(UserWarning, match="may be collapsing"):
        assert main(["pretrain", str(path), "train.seed=1", "--out", str(out)]) == 0
    for rel in ["config.yaml", "checkpoints/best.ckpt", "checkpoints/last.ckpt",
                "logs/csv/version_0/metrics.csv", "encoder/model.safetensors",
                "objective/objective.safetensors", "metrics.json"]:
        assert (out / rel).is_file(), rel
    assert any((out / "logs" / "tb").glob("version_0/events.out.tfevents*"))
    resolved = load_config(PretrainConfig, out / "config.yaml")
    assert resolved.encoder.n_channels == 3 and resolved.train.seed == 1
    enc = TemporalEncoder.from_pretrained(out / "encoder")
    obj = load_objective(out / "objective", enc.config)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["global_step"] == 4 and "val/effective_rank" in metrics
    batch = {"x": torch.randn(2, 64, 3)}
    assert torch.isfinite(obj(enc, batch).loss)
