"""Resumable stages: skip work whose outputs exist and are intact, resume work that was cut
short, redo anything damaged.

A stage that starts writes ``_stage_started.json`` (its fingerprint); a finished stage leaves
``_stage.json`` with the fingerprint of the config (and upstream files) that made it and a
SHA-256 of every output file. A later run:

- skips the stage when the fingerprint matches and every file still hashes the same ("done");
- continues it in place when it was interrupted under the same fingerprint and the stage says
  it can pick up from what is there (``resumable``: e.g. pretraining with ``last.ckpt``);
- otherwise moves the old folder aside (never silently reused, never deleted) and reruns it.

Under several processes (DDP launched by torchrun/SLURM/Lightning) only rank 0 keeps the books
(markers, moving aside); the other ranks run a stage's work only when it is ``all_ranks``.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import shutil
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from tslayers.io import LOCK_FILE, atomic_write, launch_rank

MARKER = "_stage.json"
STARTED = "_stage_started.json"
_BOOKKEEPING = {MARKER, STARTED, LOCK_FILE}


def fingerprint(obj: Any) -> str:
    """Stable hash of a JSON-able description of what a stage computes."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _file_hash(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def stage_inputs_hash(paths: Iterable[str | Path]) -> str:
    """One hash of the *contents* of the upstream files (or folders) a stage reads.

    Put it in the stage key, so a stage is redone when an input changes, even when the config
    that made the input did not (e.g. a non-deterministic GPU retrain). A folder counts as all
    its files (stage bookkeeping excluded), by relative name; a missing path counts as missing.
    """
    h = hashlib.sha256()
    for raw in paths:
        path = Path(raw)
        files = ([(p.relative_to(path).as_posix(), p) for p in sorted(path.rglob("*"))
                  if p.is_file() and p.name not in _BOOKKEEPING] if path.is_dir()
                 else [("", path)])
        h.update(f"<{path.name}>".encode())
        for rel, p in files:
            digest = _file_hash(p) if p.is_file() else "missing"
            h.update(f"{rel}:{digest};".encode())
    return h.hexdigest()[:16]


def _outputs(directory: Path) -> list[Path]:
    return [p for p in sorted(directory.rglob("*"))
            if p.is_file() and p.name not in _BOOKKEEPING]


def _read_json(path: Path) -> dict | None:
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def stage_status(directory: Path, key: str) -> str:
    """'done', 'missing', 'interrupted' (started with this key, never finished), 'stale'
    (made by another config) or 'damaged' (a file changed or vanished, or unknown content)."""
    directory = Path(directory)
    marker = directory / MARKER
    if not marker.is_file():
        if not directory.exists() or not _outputs(directory):
            return "missing"
        started = _read_json(directory / STARTED)
        if started is None:
            return "damaged"
        return "interrupted" if started.get("fingerprint") == key else "stale"
    info = _read_json(marker)
    if info is None:
        return "damaged"
    if info.get("fingerprint") != key:
        return "stale"
    for rel, digest in info.get("files", {}).items():
        path = directory / rel
        if not path.is_file() or _file_hash(path) != digest:
            return "damaged"
    return "done"


def mark_started(directory: Path, key: str) -> None:
    """Record that work with fingerprint ``key`` began in ``directory``."""
    atomic_write(Path(directory) / STARTED,
                 json.dumps({"fingerprint": key, "started": time.strftime("%Y-%m-%d %H:%M:%S")}))


def mark_done(directory: Path, key: str, extra: dict | None = None) -> None:
    """Record the fingerprint and the hash of every file now in ``directory``."""
    directory = Path(directory)
    files = {str(p.relative_to(directory)): _file_hash(p) for p in _outputs(directory)}
    atomic_write(directory / MARKER,
                 json.dumps({"fingerprint": key, "files": files, **(extra or {})}, indent=1))
    (directory / STARTED).unlink(missing_ok=True)


#: how long ranks > 0 may wait for rank 0's stage work (probing, reports) before giving up
STAGE_WAIT = datetime.timedelta(days=2)
_wait_groups: dict[int, Any] = {}  # id(default group) -> its long-timeout gloo twin


def _barrier() -> None:
    """Wait for every rank, for as long as a rank-0-only stage may take. The training process
    group's own timeout (minutes; under NCCL its watchdog aborts the job) is not meant for
    that, so the wait runs on a separate CPU (gloo) group with a long timeout, created on the
    first call, which every rank makes at the same point."""
    try:
        import torch.distributed as dist
    except ImportError:  # pragma: no cover - torch is a dependency
        return
    if not (dist.is_available() and dist.is_initialized()):
        return
    world = id(dist.group.WORLD)  # a re-initialised process group needs a new twin
    if world not in _wait_groups:
        _wait_groups[world] = dist.new_group(backend="gloo", timeout=STAGE_WAIT)
    dist.barrier(group=_wait_groups[world])


def run_stage(
    name: str,
    directory: Path,
    key: str,
    work: Callable[[Path], Any],
    log: Callable[[str], None] = print,
    *,
    resumable: bool | Callable[[Path], bool] = False,
    all_ranks: bool = False,
) -> bool:
    """Run ``work(directory)`` unless a valid result is there. Returns True when it ran.

    ``resumable``: whether an interrupted run of this stage (same key, no ``_stage.json``) can
    continue from the files it left (a bool, or a function of the folder, e.g. "holds
    last.ckpt"); then ``work`` runs in the same folder instead of a fresh one.
    ``all_ranks``: under several processes every rank runs ``work`` (DDP training); otherwise
    only rank 0 does and the others wait at a barrier (when a process group exists).
    """
    directory = Path(directory)
    rank = launch_rank()
    if rank != 0:  # rank 0 keeps the books; the others never move or mark anything
        _barrier()
        if stage_status(directory, key) == "done":
            return False
        if all_ranks:
            work(directory)
        _barrier()
        return all_ranks
    status = stage_status(directory, key)
    if status == "done":
        log(f"[{name}] up to date, skipped ({directory})")
        _barrier()
        return False
    can_resume = status == "interrupted" and (
        resumable(directory) if callable(resumable) else bool(resumable))
    if status == "interrupted" and can_resume:
        log(f"[{name}] was interrupted: resuming in {directory}")
    elif status in ("stale", "damaged", "interrupted"):
        aside = directory.with_name(f"{directory.name}.{status}-{time.strftime('%Y%m%d-%H%M%S')}")
        log(f"[{name}] previous output is {status}: moved to {aside.name}, recomputing")
        shutil.move(str(directory), str(aside))
    directory.mkdir(parents=True, exist_ok=True)
    mark_started(directory, key)
    _barrier()
    log(f"[{name}] running -> {directory}")
    t0 = time.perf_counter()
    work(directory)
    mark_done(directory, key, {"seconds": round(time.perf_counter() - t0, 2)})
    _barrier()
    log(f"[{name}] done in {time.perf_counter() - t0:.1f}s")
    return True
