"""Training under faults: resume on an epoch boundary, divergence, SIGTERM, existing runs."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml

from tslayers.cli import main
from tslayers.config import from_dict, save_config
from tslayers.training import PretrainConfig, pretrain
from tslayers.training.module import DivergenceError

ROOT = Path(__file__).resolve().parents[2]


def tiny(objective: str = "reconstruct", **train) -> dict:
    """~84 training windows, batch 32: 3 batches per epoch, so step 6 ends epoch 2."""
    return {
        "data": {"name": "synthetic/mixture", "params": {"n_series": 40, "length": 128},
                 "context": 64, "stride": 32, "batch_size": 32},
        "encoder": {"patch_len": 8, "d_model": 16, "n_layers": 2, "n_heads": 2},
        "objective": {"name": objective, "horizon": 16},
        "train": {"max_steps": 8, "val_check_interval": 4, "ckpt_every_n_steps": 2,
                  "log_every_n_steps": 1, "warmup_steps": 2, "progress_bar": False,
                  "limit_val_batches": 1, **train},
    }


class Kill(L.Callback):
    def __init__(self, at: int):
        self.at = at

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if trainer.global_step == self.at:
            raise RuntimeError("simulated crash")


class Poison(L.Callback):
    """Turn one weight into NaN after optimizer step ``at``."""

    def __init__(self, at: int):
        self.at = at

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if trainer.global_step == self.at:
            with torch.no_grad():
                module.encoder.embed.proj.weight[0, 0] = float("nan")


def _ckpt_step(path: Path) -> int:
    return int(torch.load(path, map_location="cpu", weights_only=True)["global_step"])


def _encoder_state(run: Path) -> dict:
    from tslayers.model import TemporalEncoder

    return TemporalEncoder.from_pretrained(run / "encoder").state_dict()


@pytest.mark.parametrize("length", [{"max_steps": 8}, {"max_steps": -1, "max_epochs": 3}])
def test_resume_from_a_checkpoint_on_an_epochs_last_batch_is_bit_identical(tmp_path, length):
    """max_epochs runs matter too: there Lightning never restores the loader's state."""
    cfg = from_dict(PretrainConfig, tiny(**length))
    full = pretrain(cfg, out_dir=tmp_path / "full")
    with pytest.raises(RuntimeError, match="simulated crash"):
        pretrain(cfg, out_dir=tmp_path / "cut", callbacks=[Kill(at=7)])
    assert _ckpt_step(tmp_path / "cut" / "checkpoints" / "last.ckpt") == 6  # end of epoch 2
    pretrain(cfg, out_dir=tmp_path / "cut", resume="auto")
    a, b = _encoder_state(full), _encoder_state(tmp_path / "cut")
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_non_finite_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
    cfg = from_dict(PretrainConfig, tiny())
    with pytest.raises(DivergenceError, match=r"diverged at step 5: loss = nan"):
        pretrain(cfg, out_dir=tmp_path, callbacks=[Poison(at=5)])
    last = tmp_path / "checkpoints" / "last.ckpt"
    assert _ckpt_step(last) == 4
    state = torch.load(last, map_location="cpu", weights_only=True)["state_dict"]
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


def test_non_finite_weights_are_never_checkpointed(tmp_path):
    cfg = from_dict(PretrainConfig, tiny())
    with pytest.raises(DivergenceError, match=r"step 4: weights \['encoder.embed.proj.weight'"):
        pretrain(cfg, out_dir=tmp_path, callbacks=[Poison(at=4)])  # 4 is a checkpoint step
    assert _ckpt_step(tmp_path / "checkpoints" / "last.ckpt") == 2


def test_non_finite_weights_before_validation_are_named_not_an_svd_error(tmp_path):
    cfg = from_dict(PretrainConfig, tiny("contrastive", ckpt_every_n_steps=3))
    with pytest.raises(DivergenceError, match=r"by step 4: validation embeddings are non-fin"):
        pretrain(cfg, out_dir=tmp_path, callbacks=[Poison(at=4)])  # validation at step 4
    assert _ckpt_step(tmp_path / "checkpoints" / "last.ckpt") == 3


def test_pretrain_into_a_run_of_another_config_is_refused_unless_overwrite(tmp_path, capsys):
    path = save_config(from_dict(PretrainConfig, tiny(max_steps=2)), tmp_path / "c.yaml")
    out = tmp_path / "run"
    assert main(["pretrain", str(path), "--out", str(out)]) == 0
    before = (out / "encoder" / "model.safetensors").read_bytes()
    capsys.readouterr()
    assert main(["pretrain", str(path), "encoder.d_model=32", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "another config (encoder.d_model: 16 -> 32)" in err and "--overwrite" in err
    assert err.count("\n") == 1 and err.startswith("tslayers pretrain: error: ")
    # same config without resume: refused too (it would restart from step 0 over the run)
    assert main(["pretrain", str(path), "--out", str(out)]) == 1
    assert "train.resume=auto" in capsys.readouterr().err
    assert (out / "encoder" / "model.safetensors").read_bytes() == before
    # a compatible resume that trains longer is allowed
    assert main(["pretrain", str(path), "train.resume=auto", "train.max_steps=3",
                 "--out", str(out)]) == 0
    assert _ckpt_step(out / "checkpoints" / "last.ckpt") == 3
    before = (out / "encoder" / "model.safetensors").read_bytes()
    assert main(["pretrain", str(path), "encoder.d_model=32", "--out", str(out),
                 "--overwrite"]) == 0
    assert yaml.safe_load((out / "config.yaml").read_text())["encoder"]["d_model"] == 32
    # a run that died before its first checkpoint has nothing to lose: it may start again
    for p in [*(out / "checkpoints").iterdir(), *(out / "encoder").iterdir()]:
        p.unlink()
    assert main(["pretrain", str(path), "encoder.d_model=32", "--out", str(out)]) == 0
    aside = list(tmp_path.glob("run.overwritten-*"))
    assert len(aside) == 1 and (aside[0] / "encoder" / "model.safetensors").read_bytes() == before


def test_sigterm_exits_non_zero_and_leaves_a_resumable_checkpoint(tmp_path):
    """A real process killed with SIGTERM while training: exit 143, then resume continues."""
    cfg = tiny(max_steps=100000, ckpt_every_n_steps=1, val_check_interval=100000)
    path = save_config(from_dict(PretrainConfig, cfg), tmp_path / "c.yaml")
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "tslayers.cli", "pretrain", str(path), "--out", str(out)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    last = out / "checkpoints" / "last.ckpt"
    deadline = time.time() + 120
    while not last.is_file() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert last.is_file(), proc.stderr.read() if proc.poll() is not None else "no checkpoint"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert "stopped by SIGTERM" in err and "train.resume=auto" in err
    step = _ckpt_step(last)
    assert step >= 1
    assert not (out / ".tslayers.lock").exists()
    assert main(["pretrain", str(path), "train.resume=auto", f"train.max_steps={step + 2}",
                 "--out", str(out)]) == 0
    assert _ckpt_step(last) == step + 2


class Steps(L.Callback):
    def __init__(self):
        self.steps = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.steps.append(trainer.global_step)


def test_killed_study_pretrain_stage_continues_from_its_checkpoint(tmp_path):
    """What ``tslayers run`` does per pretrain stage: the kill leaves the stage interrupted
    (no _stage.json); the rerun resumes it in place instead of moving it aside."""
    from tslayers.stages import fingerprint, run_stage, stage_status
    from tslayers.training import can_resume

    cfg = from_dict(PretrainConfig, tiny(resume="auto"))
    d, key = tmp_path / "pretrain" / "reconstruct-s0", fingerprint({"cfg": 1})
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_stage("pretrain", d, key, lambda d: pretrain(cfg, out_dir=d, callbacks=[Kill(5)]),
                  log=print)
    assert stage_status(d, key) == "interrupted" and can_resume(d, cfg)
    assert not can_resume(d, from_dict(PretrainConfig, tiny()))  # resume not asked for
    steps = Steps()
    run_stage("pretrain", d, key, lambda d: pretrain(cfg, out_dir=d, callbacks=[steps]),
              log=print, resumable=lambda d: can_resume(d, cfg))
    assert steps.steps == [5, 6, 7, 8]  # continued after the step-4 checkpoint
    assert stage_status(d, key) == "done"
    assert [p.name for p in (tmp_path / "pretrain").iterdir()] == ["reconstruct-s0"]
