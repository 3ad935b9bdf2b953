"""The reusable training loop: optimiser + schedule, Trainer construction, resumable data order.

Shared by pretraining and alignment: build the optimiser with :func:`configure_adamw_cosine`,
the Trainer with :func:`build_trainer`, and wrap the training loader in :class:`ResumableLoader`
so a run killed mid-epoch resumes on exactly the batches it would have seen.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from torch import nn
from torch.utils.data import DataLoader

from .config import TrainConfig

NO_DECAY_NAMES = ("mask_token", "registers")


def param_groups(modules: Iterable[nn.Module], weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: decay matrices, not biases / norm gains / learned tokens; skip frozen."""
    decay, no_decay, seen = [], [], set()
    for module in modules:
        for name, p in module.named_parameters():
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            leaf = name.rsplit(".", 1)[-1]
            (no_decay if p.ndim < 2 or leaf in NO_DECAY_NAMES else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def warmup_cosine(step: int, warmup: int, total: int, min_ratio: float) -> float:
    """LR multiplier: linear warmup to 1, then cosine decay to ``min_ratio`` at ``total``."""
    if step < warmup:
        return (step + 1) / (warmup + 1)
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def configure_adamw_cosine(
    modules: Iterable[nn.Module], cfg: TrainConfig, total_steps: int
) -> dict[str, Any]:
    """AdamW + warmup/cosine LambdaLR, stepped every optimizer step, as Lightning expects it
    from ``configure_optimizers``."""
    opt = torch.optim.AdamW(param_groups(modules, cfg.weight_decay), lr=cfg.lr,
                            betas=tuple(cfg.betas))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: warmup_cosine(s, cfg.warmup_steps, total_steps, cfg.min_lr_ratio))
    return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def resolve_precision(precision: str, accelerator: str = "auto") -> str:
    """``auto`` -> bf16-mixed / 16-mixed on CUDA (by support), 32-true elsewhere."""
    if precision != "auto":
        return precision
    if accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "32-true"


def build_strategy(name: str) -> Any:
    """Strategy by name; FSDP gathers full state dicts so checkpoints load anywhere."""
    if name == "fsdp":
        from lightning.pytorch.strategies import FSDPStrategy

        from tslayers.model.layers import Block

        return FSDPStrategy(auto_wrap_policy={Block}, state_dict_type="full")
    return name


#: notices Lightning and torch print on every fit that say nothing about this run
_HARMLESS = (r".*LeafSpec.* is deprecated", r".*weights_only.*", r".*module\(s\) in eval mode",
             r".*smaller than the logging interval", r".*does not have many workers",
             r"Checkpoint directory .* exists and is not empty")


@contextlib.contextmanager
def quiet_lightning() -> Iterator[None]:
    """Lightning's banners (accelerator lines, tips, "fit stopped") and known-harmless notices
    off for the fit/validate calls inside the block; ``TSLAYERS_VERBOSE=1`` (``tslayers -v``)
    keeps them. Warnings outside the block are untouched."""
    if os.environ.get("TSLAYERS_VERBOSE"):
        yield
        return
    loggers = [logging.getLogger(n) for n in ("lightning.pytorch", "lightning.fabric")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            for message in _HARMLESS:
                warnings.filterwarnings("ignore", message=message)
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def build_trainer(
    cfg: TrainConfig,
    out_dir: str | Path,
    *,
    monitor: str = "val/loss",
    callbacks: list[Callback] | None = None,
    checkpoints: bool = True,
    loggers: bool = True,
    **overrides: Any,
) -> L.Trainer:
    """A Trainer writing ``checkpoints/{best,last}.ckpt`` and ``logs/{csv,tb}/version_N``
    under ``out_dir``.

    ``best`` tracks ``monitor`` (min) at each validation; ``last`` is rewritten every
    ``ckpt_every_n_steps`` (file names are fixed so a resumed run keeps writing the same files).
    ``checkpoints``/``loggers`` False: none of them (evaluation-only trainers); ``overrides``
    go to ``L.Trainer`` as is.
    """
    out_dir = Path(out_dir)
    ckpt_dir = out_dir / "checkpoints"
    best = ModelCheckpoint(dirpath=ckpt_dir, filename="best", monitor=monitor, mode="min",
                           save_top_k=1, auto_insert_metric_name=False,
                           enable_version_counter=False)
    last = ModelCheckpoint(dirpath=ckpt_dir, filename="last", every_n_train_steps=
                           cfg.ckpt_every_n_steps, save_top_k=1, enable_version_counter=False)
    # one version_N folder per attempt, so a resumed run never overwrites the earlier logs
    logs = [CSVLogger(out_dir / "logs", name="csv"),
            TensorBoardLogger(out_dir / "logs", name="tb", default_hp_metric=False)]
    kwargs: dict[str, Any] = dict(
        default_root_dir=out_dir,
        max_steps=cfg.max_steps,
        max_epochs=cfg.max_epochs,
        max_time=cfg.max_time,
        accelerator=cfg.accelerator,
        devices=cfg.devices,
        strategy=build_strategy(cfg.strategy),
        num_nodes=cfg.num_nodes,
        precision=resolve_precision(cfg.precision, cfg.accelerator),
        gradient_clip_val=cfg.grad_clip or None,
        accumulate_grad_batches=cfg.accumulate_grad_batches,
        val_check_interval=cfg.val_check_interval,
        check_val_every_n_epoch=None,  # validate every val_check_interval steps, across epochs
        limit_val_batches=1.0 if cfg.limit_val_batches is None else cfg.limit_val_batches,
        log_every_n_steps=cfg.log_every_n_steps,
        enable_progress_bar=cfg.progress_bar,
        enable_model_summary=False,
        deterministic=cfg.deterministic,
        num_sanity_val_steps=0,
        callbacks=[*([best, last] if checkpoints else []), *(callbacks or [])],
        enable_checkpointing=checkpoints,
        logger=logs if loggers else False,
    )
    kwargs.update(overrides)
    return L.Trainer(**kwargs)


class EpochSampler(torch.utils.data.Sampler[int]):
    """Indices of one epoch: a permutation seeded by (seed, epoch), sharded across ranks
    (padded to equal length, like DistributedSampler), from position ``start`` on."""

    def __init__(self, n: int, seed: int, epoch: int, rank: int = 0, world: int = 1,
                 start: int = 0):
        self.n, self.seed, self.epoch, self.rank, self.world, self.start = (
            n, seed, epoch, rank, world, start)

    def indices(self) -> list[int]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        perm = torch.randperm(self.n, generator=g).tolist()
        per_rank = math.ceil(self.n / self.world)
        perm = (perm * math.ceil(per_rank * self.world / max(self.n, 1)))[: per_rank * self.world]
        return perm[self.rank :: self.world]

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices()[self.start :])

    def __len__(self) -> int:
        return max(0, math.ceil(self.n / self.world) - self.start)


def _rank_world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class ResumableLoader:
    """A training loader whose order is a function of (seed, epoch) and whose position is
    saved in checkpoints, so a resumed run continues on exactly the batch it would have seen.

    The loader counts the batches trained on since the start of the run; the epoch and the
    position inside it follow from that count alone (``epoch = done // batches_per_epoch``),
    never from Lightning's epoch counter, which is one ahead after a checkpoint written on an
    epoch's last batch. Wraps a map-style ``DataLoader`` (its dataset, batch size, collate
    function and workers are reused); Lightning calls ``state_dict``/``load_state_dict``. The
    module being trained reports progress with :meth:`mark` (``LitPretrainer`` does so in
    ``on_train_batch_start``), because Lightning reads the loader ahead of training.
    """

    def __init__(self, loader: DataLoader, seed: int):
        if not hasattr(loader.dataset, "__len__") or loader.batch_size is None:
            raise ValueError("ResumableLoader needs a map-style DataLoader with a batch_size")
        self.loader, self.seed = loader, seed
        self.done = 0  # batches trained on since the run began, across epochs

    @property
    def epoch(self) -> int:
        return self.done // max(1, len(self))

    @property
    def sampler(self) -> ResumableLoader:  # Lightning's _set_sampler_epoch finds set_epoch
        return self

    def set_epoch(self, epoch: int) -> None:
        """Ignored on purpose: the epoch follows from the batches done (see the class doc)."""

    def mark(self) -> None:
        """Record that one more batch is being trained on (counted once a checkpoint sees it)."""
        self.done += 1

    def _epoch_loader(self, epoch: int, start: int) -> DataLoader:
        rank, world = _rank_world()
        bs = self.loader.batch_size
        sampler = EpochSampler(len(self.loader.dataset), self.seed, epoch, rank, world,
                               start=start * bs)
        return DataLoader(self.loader.dataset, batch_size=bs, sampler=sampler,
                          collate_fn=self.loader.collate_fn, num_workers=self.loader.num_workers,
                          pin_memory=self.loader.pin_memory, drop_last=self.loader.drop_last)

    def __iter__(self) -> Iterator[Any]:
        n = max(1, len(self))
        epoch, start = divmod(self.done, n)
        return iter(self._epoch_loader(epoch, start))

    def __len__(self) -> int:
        rank, world = _rank_world()
        n = math.ceil(len(self.loader.dataset) / world)
        bs = self.loader.batch_size
        return n // bs if self.loader.drop_last else math.ceil(n / bs)

    def state_dict(self) -> dict[str, int]:
        return {"done": self.done, "epoch": self.epoch}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if "done" in state:
            self.done = int(state["done"])
        else:  # checkpoints written before ``done`` existed: (epoch, consumed in that epoch)
            self.done = int(state["epoch"]) * len(self) + int(state["consumed"])
