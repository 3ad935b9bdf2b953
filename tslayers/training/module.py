"""``LitPretrainer``: encoder + objective as a LightningModule.

Randomness is a function of the step: each training step reseeds from (seed, global step,
rank) before the objective draws masks, crops or dropout, so a resumed run draws exactly what
an uninterrupted one would. Validation reseeds per batch from a fixed seed, so validation
metrics of different checkpoints (or of an untrained model) see identical masks and views.
"""

from __future__ import annotations

import warnings
from typing import Any

import lightning as L
import torch

from tslayers.io import CommandError
from tslayers.model import TemporalEncoder
from tslayers.objectives import Objective, effective_rank

from .config import TrainConfig
from .loop import ResumableLoader, configure_adamw_cosine


class DivergenceError(CommandError):
    """Training produced a non-finite loss or weights; the last good checkpoint is kept."""


def step_seed(seed: int, step: int, rank: int = 0) -> int:
    return (seed * 1_000_003 + step * 7919 + rank * 104_729) % (2**63 - 1)


class LitPretrainer(L.LightningModule):
    """Trains ``encoder`` with ``objective``; logs ``train/*`` and ``val/*`` metrics and the
    effective rank (RankMe) of pooled validation embeddings.

    A fresh objective must have been attached (``objective.attach(encoder)``: JEPA copies the
    encoder into its target); a loaded one keeps its own state.
    """

    def __init__(self, encoder: TemporalEncoder, objective: Objective, train: TrainConfig,
                 config: dict[str, Any] | None = None):
        super().__init__()
        self.encoder = encoder
        self.objective = objective
        self.train_cfg = train
        if not objective.uses_mask_token:
            # a parameter that never gets a gradient breaks DDP ("parameters that were not
            # used"); frozen, it is simply not synchronised (its value is still saved)
            encoder.mask_token.requires_grad_(False)
        if config is not None:  # the resolved run config, plain python, kept in checkpoints
            self.save_hyperparameters({"config": config})
        self._val_embeddings: list[torch.Tensor] = []

    def _resumable_loader(self) -> ResumableLoader | None:
        loader = self.trainer.train_dataloader if self._trainer is not None else None
        return loader if isinstance(loader, ResumableLoader) else None

    # ------------------------------------------------------------------ training
    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        loader = self._resumable_loader()
        if loader is not None:
            loader.mark()  # this batch counts as consumed once a checkpoint sees it

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        torch.manual_seed(step_seed(self.train_cfg.seed, self.global_step, self.global_rank))
        out = self.objective(self.encoder, batch)
        self._check_finite(out.loss)
        self.log_dict({f"train/{k}": v.float() for k, v in out.metrics.items()},
                      prog_bar=False, batch_size=len(batch["x"]))
        self.log("train/lr", self.lr_schedulers().get_last_lr()[0], batch_size=1)
        self.log("loss", out.loss.detach(), prog_bar=True, logger=False, batch_size=1)
        return out.loss

    def _check_finite(self, loss: torch.Tensor) -> None:
        """Stop, on every rank alike, before a non-finite loss reaches the weights."""
        bad = (~torch.isfinite(loss.detach())).float()
        if self.trainer.world_size > 1:
            bad = self.trainer.strategy.reduce(bad, reduce_op="max")
        if bad.item() > 0:
            raise DivergenceError(
                f"training diverged at step {self.global_step}: loss = {loss.item():.6g}"
                f"{' on some rank' if self.trainer.world_size > 1 else ''}; the last good "
                "checkpoint is kept (checkpoints/last.ckpt). Lower train.lr, keep "
                "train.grad_clip > 0 or check the data for extreme values, then resume with "
                "train.resume=auto")

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Record the data position (``pretrain`` restores it: Lightning skips restoring loader
        states in ``max_epochs`` runs); refuse to overwrite a good checkpoint with non-finite
        weights."""
        loader = self._resumable_loader()
        if loader is not None:
            checkpoint["tslayers"] = {"batches_done": loader.done}
        bad = [k for k, v in checkpoint["state_dict"].items()
               if v.is_floating_point() and not torch.isfinite(v).all()]
        if bad:
            raise DivergenceError(
                f"training diverged at step {self.global_step}: weights {bad[:3]} became "
                "non-finite; the last good checkpoint is kept (checkpoints/last.ckpt). Lower "
                "train.lr or keep train.grad_clip > 0, then resume with train.resume=auto")

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        super().optimizer_step(*args, **kwargs)
        self.objective.after_step(self.encoder, (self.global_step + 1) / self._total_steps())

    def _total_steps(self) -> int:
        if self.trainer.max_steps > 0:
            return self.trainer.max_steps
        return max(1, int(self.trainer.estimated_stepping_batches))

    # ------------------------------------------------------------------ validation
    def on_validation_epoch_start(self) -> None:
        self._val_embeddings = []

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            torch.manual_seed(step_seed(self.train_cfg.seed + 1, batch_idx, self.global_rank))
            out = self.objective(self.encoder, batch)
        self.log_dict({f"val/{k}": v.float() for k, v in out.metrics.items()}, on_epoch=True,
                      sync_dist=True, batch_size=len(batch["x"]), prog_bar=False)
        kept = sum(len(e) for e in self._val_embeddings)
        if out.embeddings is not None and kept < self.train_cfg.max_val_embeddings:
            self._val_embeddings.append(out.embeddings.detach().float())

    def on_validation_epoch_end(self) -> None:
        if not self._val_embeddings:
            return
        emb = torch.cat(self._val_embeddings)[: self.train_cfg.max_val_embeddings]
        if not torch.isfinite(emb).all():  # else the rank's SVD fails with a cryptic message
            raise DivergenceError(
                f"training diverged by step {self.global_step}: validation embeddings are "
                "non-finite (the weights hold NaN/inf); the last good checkpoint is kept "
                "(checkpoints/last.ckpt). Lower train.lr or keep train.grad_clip > 0, then "
                "resume with train.resume=auto")
        rank = effective_rank(emb)
        self.log("val/effective_rank", rank, sync_dist=True)
        threshold = self.train_cfg.collapse_rank_fraction * emb.shape[1]
        collapsing = self.objective.monitors_collapse and rank < threshold
        if collapsing and not self.trainer.sanity_checking:
            warnings.warn(
                f"step {self.global_step}: effective rank of pooled embeddings is {rank:.1f} "
                f"< {threshold:.1f} ({self.train_cfg.collapse_rank_fraction} x d_model): the "
                f"{self.objective.config.name} objective may be collapsing", stacklevel=1)
        self._val_embeddings = []

    # ------------------------------------------------------------------ optimisation
    def configure_optimizers(self) -> dict[str, Any]:
        return configure_adamw_cosine([self.encoder, self.objective], self.train_cfg,
                                      self._total_steps())
