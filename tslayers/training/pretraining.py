"""``pretrain``: one config in, one run directory out; and the ``tslayers pretrain`` command.

The run folder is locked while a run writes it (``tslayers.io.lock_output``); a folder that
holds another run is refused unless the run is a compatible resume or ``--overwrite`` is given.
SIGTERM or Ctrl-C saves ``checkpoints/last.ckpt`` and exits non-zero (143 for SIGTERM); a
non-finite loss or weights stop training with the step named and the last good checkpoint kept.

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
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
import xarray as xr
import yaml
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities.exceptions import SIGTERMException

from tslayers.config import save_config, to_dict
from tslayers.io import LOCK_FILE, CommandError, atomic_write, launch_rank, lock_output
from tslayers.model import EncoderConfig, TemporalEncoder
from tslayers.objectives import Objective, build_objective, save_objective

from .config import PretrainConfig
from .loop import ResumableLoader, build_trainer, quiet_lightning
from .module import LitPretrainer

# train.* keys a run may change and still resume: length, hardware, logging cadence
RESUMABLE_CHANGES = frozenset({
    "max_steps", "max_epochs", "max_time", "resume", "progress_bar", "log_every_n_steps",
    "devices", "accelerator", "strategy", "num_nodes", "precision", "limit_val_batches",
    "val_check_interval", "ckpt_every_n_steps", "max_val_embeddings"})
_RUN_OUTPUTS = ("config.yaml", "checkpoints", "encoder", "objective", "metrics.json", "logs")


class Terminated(CommandError):
    """The run was stopped by SIGTERM/SIGINT after saving a resumable checkpoint."""

    exit_code = 143  # 128 + SIGTERM, what shells report for a terminated process


class _CheckpointOnInterrupt(Callback):
    """On SIGTERM (Lightning's SIGTERMException) or Ctrl-C, write ``last.ckpt`` so that
    ``train.resume=auto`` continues from the step reached, not from the last cadence save."""

    def __init__(self, path: Path):
        self.path, self.saved = path, False

    def on_exception(self, trainer: L.Trainer, module: L.LightningModule,
                     exception: BaseException) -> None:
        fitting = trainer.state.fn == "fit"  # also mid-validation: weights are post-step
        if isinstance(exception, (SIGTERMException, KeyboardInterrupt)) and fitting:
            trainer.save_checkpoint(self.path)
            self.saved = True


def build_models(encoder_cfg: EncoderConfig, config: PretrainConfig
                 ) -> tuple[TemporalEncoder, Objective]:
    """A fresh encoder and its attached objective (JEPA's target starts as a copy)."""
    encoder = TemporalEncoder(encoder_cfg)
    objective = build_objective(config.objective, encoder_cfg)
    objective.attach(encoder)
    return encoder, objective


def config_differences(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two resolved run configs, leaving out what a
    resumed run may change (``RESUMABLE_CHANGES`` under ``train``, and ``out``)."""
    diffs = []
    for key in sorted(set(old) | set(new)):
        where = f"{prefix}{key}"
        if where == "out" or (prefix == "train." and key in RESUMABLE_CHANGES):
            continue
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            diffs += config_differences(a, b, f"{where}.")
        elif a != b and not (isinstance(a, (list, tuple)) and isinstance(b, (list, tuple))
                             and list(a) == list(b)):
            diffs.append(f"{where}: {a!r} -> {b!r}")
    return diffs


def _saved_config(run_dir: Path) -> dict[str, Any] | None:
    try:
        saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return None
    return saved if isinstance(saved, dict) else None


def can_resume(run_dir: str | Path, config: PretrainConfig) -> bool:
    """Whether ``pretrain(config, run_dir)`` would continue the run in ``run_dir``: it holds
    ``checkpoints/last.ckpt``, ``train.resume`` is "auto" and its config fits this one (for
    ``stages.run_stage(..., resumable=...)``). ``n_channels`` is filled from the data at run
    time, so it is not compared here."""
    run_dir = Path(run_dir)
    if config.train.resume != "auto" or not (run_dir / "checkpoints" / "last.ckpt").is_file():
        return False
    saved = _saved_config(run_dir)
    if saved is None:
        return False
    new = to_dict(config)
    new["encoder"]["n_channels"] = (saved.get("encoder") or {}).get("n_channels")
    return not config_differences(saved, new)


def _check_existing_run(run_dir: Path, new: dict[str, Any], resuming: bool,
                        overwrite: bool) -> None:
    """Refuse to write over another run unless this is a compatible resume or ``overwrite``
    (then the old run is moved aside to ``<name>.overwritten-<time>``, never deleted)."""
    present = [p for p in run_dir.iterdir() if p.name not in (LOCK_FILE, "_stage_started.json")]
    if not present:
        return
    if overwrite:
        aside = run_dir.with_name(f"{run_dir.name}.overwritten-{time.strftime('%Y%m%d-%H%M%S')}")
        aside.mkdir()
        for p in present:
            p.rename(aside / p.name)
        print(f"pretrain: --overwrite: the previous run was moved to {aside}", flush=True)
        return
    saved = _saved_config(run_dir)
    if saved is None:
        if not any(p.name in _RUN_OUTPUTS for p in present):
            raise ValueError(f"output folder '{run_dir}' already holds other files "
                             f"({', '.join(sorted(p.name for p in present)[:4])}); choose an "
                             "empty or new --out, or pass --overwrite to move them aside")
        raise ValueError(f"'{run_dir}' holds a pretraining run without its config.yaml; pass "
                         "--overwrite to move it aside, or choose another --out")
    diffs = config_differences(saved, new)
    if diffs:
        raise ValueError(f"'{run_dir}' holds a pretraining run of another config ("
                         f"{'; '.join(diffs[:4])}{'; ...' if len(diffs) > 4 else ''}); pass "
                         "--overwrite to replace it (the old run is moved aside) or choose "
                         "another --out")
    trained = [p for p in ("checkpoints/last.ckpt", "checkpoints/best.ckpt",
                           "encoder/model.safetensors") if (run_dir / p).is_file()]
    if not resuming and trained:  # a run that died before its first checkpoint may restart
        raise ValueError(f"'{run_dir}' already holds a pretraining run of this config; continue "
                         "it with train.resume=auto, or pass --overwrite to start again")


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


def check_checkpoint(path: Path, module: L.LightningModule) -> dict[str, Any]:
    """Refuse, with a readable message, a checkpoint of another architecture or objective;
    return the loaded checkpoint."""
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
    return ckpt


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
             dataset: xr.Dataset | None = None, overwrite: bool = False) -> Path:
    """Pretrain an encoder with ``config.objective`` on ``config.data``; returns the run dir.

    ``resume`` (or ``config.train.resume``): a checkpoint path or "auto". ``callbacks`` are
    added to the Trainer's. ``dataset``: an in-memory dataset to use instead of loading
    ``config.data.name`` (e.g. only the official train split of a UCR set). The run folder is
    locked while training; a folder holding another run is refused unless this is a
    compatible resume or ``overwrite`` (the old run is then moved aside).

    Raises :class:`Terminated` (after saving ``last.ckpt``) on SIGTERM/Ctrl-C and
    ``DivergenceError`` when the loss or the weights become non-finite.
    """
    run_dir = Path(out_dir or config.run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise ValueError(f"output '{run_dir}' is a file, not a folder; name a folder (--out)")
    with lock_output(run_dir, "tslayers pretrain"):
        return _pretrain(config, run_dir, resume, callbacks, dataset, overwrite)


def _pretrain(config: PretrainConfig, run_dir: Path, resume: str | Path | None,
              callbacks: list[Callback] | None, dataset: xr.Dataset | None,
              overwrite: bool) -> Path:
    from tslayers.data import SeriesDataModule

    config = copy.deepcopy(config)
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
    if launch_rank() == 0:
        _check_existing_run(run_dir, to_dict(config), ckpt is not None, overwrite)
    batches_done = None
    if ckpt is not None:
        batches_done = check_checkpoint(ckpt, module).get("tslayers", {}).get("batches_done")
    if launch_rank() == 0:
        save_config(config, run_dir / "config.yaml")

    last = run_dir / "checkpoints" / "last.ckpt"
    on_interrupt = _CheckpointOnInterrupt(last)
    train_loader = ResumableLoader(data.train_dataloader(), seed=cfg.seed)
    if batches_done is not None:  # Lightning does not restore it in max_epochs runs
        train_loader.done = int(batches_done)
    try:
        with quiet_lightning():
            trainer = build_trainer(cfg, run_dir, callbacks=[*(callbacks or []), on_interrupt])
            trainer.fit(module, train_dataloaders=train_loader,
                        val_dataloaders=data.val_dataloader(), ckpt_path=ckpt)
            trainer.save_checkpoint(last)  # the final state, whatever the step cadence
            final = trainer.validate(module, dataloaders=data.val_dataloader(), verbose=False)
    except SIGTERMException:  # a SystemExit: left alone, the process would exit 0
        saved = f"saved {last}" if last.is_file() else "no checkpoint was written"
        raise Terminated(f"pretraining stopped by SIGTERM at step {trainer.global_step}; "
                         f"{saved}; rerun the same command with train.resume=auto to "
                         "continue") from None
    if trainer.is_global_zero:
        export_pretrained(last, config.encoder, config, run_dir)
        best = trainer.checkpoint_callback
        metrics = {k: float(v) for k, v in (final[0] if final else {}).items()}
        metrics["global_step"] = trainer.global_step
        if best is not None and best.best_model_score is not None:
            metrics["best/val_loss"] = float(best.best_model_score)
        atomic_write(run_dir / "metrics.json", json.dumps(metrics, indent=2))
    trainer.strategy.barrier("export")
    return run_dir


def run_pretrain_command(config: PretrainConfig, args: Any) -> int:
    """The heavy half of ``tslayers pretrain`` (the config is already loaded and valid)."""
    run_dir = pretrain(config, out_dir=args.out, overwrite=bool(getattr(args, "overwrite", False)))
    print(f"pretrained {config.objective.name} encoder: {run_dir / 'encoder'} "
          f"(metrics in {run_dir / 'metrics.json'})")
    return 0
