"""``pretrain``: one config in, one run directory out; and the ``tslayers pretrain`` command.

Run directory::

    config.yaml                 resolved config (n_channels filled in from the data)
    checkpoints/best.ckpt       lowest val/loss;  checkpoints/last.ckpt  latest state
    logs/{csv,tb}/version_N/    CSV metrics and TensorBoard events, one version per attempt
    encoder/                    TemporalEncoder.save_pretrained
    objective/                  save_objective (heads; JEPA's target encoder)
    metrics.json                final validation metrics
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import lightning as L
import torch
import xarray as xr
from lightning.pytorch.callbacks import Callback

from tslayers.config import load_config, save_config, to_dict
from tslayers.model import EncoderConfig, TemporalEncoder
from tslayers.objectives import Objective, build_objective, save_objective

from .config import PretrainConfig
from .loop import ResumableLoader, build_trainer
from .module import LitPretrainer


def build_models(encoder_cfg: EncoderConfig, config: PretrainConfig
                 ) -> tuple[TemporalEncoder, Objective]:
    """A fresh encoder and its attached objective (JEPA's target starts as a copy)."""
    encoder = TemporalEncoder(encoder_cfg)
    objective = build_objective(config.objective, encoder_cfg)
    objective.attach(encoder)
    return encoder, objective


def resolve_resume(resume: str | None, run_dir: Path) -> Path | None:
    """None | "auto" (last.ckpt of this run if present) | a checkpoint path."""
    if resume is None:
        return None
    if resume == "auto":
        last = run_dir / "checkpoints" / "last.ckpt"
        return last if last.is_file() else None
    path = Path(resume)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint to resume from '{path}' does not exist")
    return path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=True)


def check_checkpoint(path: Path, module: L.LightningModule) -> None:
    """Refuse, with a readable message, a checkpoint of another architecture or objective."""
    ckpt = load_checkpoint(path)
    state, own = ckpt.get("state_dict", {}), module.state_dict()
    bad = sorted(k for k in set(own) | set(state)
                 if k not in own or k not in state or own[k].shape != state[k].shape)
    if bad:
        theirs = ckpt.get("hyper_parameters", {}).get("config", {})
        raise ValueError(
            f"checkpoint '{path}' does not fit this run's model (mismatched keys {bad[:4]}); "
            f"it was written for encoder={theirs.get('encoder')} objective="
            f"{(theirs.get('objective') or {}).get('name')}. Resume with the config it was "
            "trained with, or start a fresh run directory.")


def export_pretrained(ckpt_path: Path, encoder_cfg: EncoderConfig, config: PretrainConfig,
                      run_dir: Path) -> None:
    """Write ``encoder/`` and ``objective/`` from a checkpoint (full weights whatever the
    strategy sharded during training)."""
    state = load_checkpoint(ckpt_path)["state_dict"]
    encoder, objective = build_models(encoder_cfg, config)
    for prefix, module in (("encoder.", encoder), ("objective.", objective)):
        module.load_state_dict({k[len(prefix):]: v for k, v in state.items()
                                if k.startswith(prefix)})
    encoder.save_pretrained(run_dir / "encoder")
    save_objective(objective, run_dir / "objective")


def pretrain(config: PretrainConfig, out_dir: str | Path | None = None,
             resume: str | Path | None = None, callbacks: list[Callback] | None = None,
             dataset: xr.Dataset | None = None) -> Path:
    """Pretrain an encoder with ``config.objective`` on ``config.data``; returns the run dir.

    ``resume`` (or ``config.train.resume``): a checkpoint path or "auto". ``callbacks`` are
    added to the Trainer's. ``dataset``: an in-memory dataset to use instead of loading
    ``config.data.name`` (e.g. only the official train split of a UCR set).
    """
    from tslayers.data import SeriesDataModule

    config = copy.deepcopy(config)
    run_dir = Path(out_dir or config.run_dir)
    cfg = config.train
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    data = SeriesDataModule(config.data, dataset=dataset)
    data.setup("fit")
    config.encoder.n_channels = data.n_channels  # channel-mixing heads depend on it
    if config.data.context < config.encoder.patch_len:
        raise ValueError(f"data.context={config.data.context} is shorter than one patch "
                         f"(encoder.patch_len={config.encoder.patch_len})")
    if data.val_windows is None or len(data.val_windows) == 0:
        raise ValueError("the validation split holds no window; raise data.val_fraction or use "
                         "more/longer series")
    encoder, objective = build_models(config.encoder, config)
    module = LitPretrainer(encoder, objective, cfg, config=to_dict(config))
    ckpt = resolve_resume(str(resume) if resume else cfg.resume, run_dir)
    if ckpt is not None:
        check_checkpoint(ckpt, module)
    save_config(config, run_dir / "config.yaml")

    trainer = build_trainer(cfg, run_dir, callbacks=callbacks)
    train_loader = ResumableLoader(data.train_dataloader(), seed=cfg.seed)
    trainer.fit(module, train_dataloaders=train_loader, val_dataloaders=data.val_dataloader(),
                ckpt_path=ckpt)
    last = run_dir / "checkpoints" / "last.ckpt"
    trainer.save_checkpoint(last)  # the final state, whatever the step cadence
    final = trainer.validate(module, dataloaders=data.val_dataloader(), verbose=False)
    if trainer.is_global_zero:
        export_pretrained(last, config.encoder, config, run_dir)
        best = trainer.checkpoint_callback
        metrics = {k: float(v) for k, v in (final[0] if final else {}).items()}
        metrics["global_step"] = trainer.global_step
        if best is not None and best.best_model_score is not None:
            metrics["best/val_loss"] = float(best.best_model_score)
        (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    trainer.strategy.barrier("export")
    return run_dir


def pretrain_command(args: Any) -> int:
    """``tslayers pretrain CONFIG [key.sub=value ...] [--out DIR]``."""
    config = load_config(PretrainConfig, args.config, list(args.overrides or []))
    run_dir = pretrain(config, out_dir=args.out)
    print(f"pretrained {config.objective.name} encoder: {run_dir / 'encoder'} "
          f"(metrics in {run_dir / 'metrics.json'})")
    return 0
