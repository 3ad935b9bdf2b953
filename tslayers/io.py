"""Safe writes: atomic files and a lock on an output folder.

A run can be killed at any instant and several commands (or DDP ranks) may point at one
folder. Two rules keep outputs trustworthy:

- every file appears whole or not at all: it is written under a unique temporary name in the
  same folder, flushed to disk, then renamed over the target (``os.replace`` is atomic on one
  file system). Use :func:`atomic_write` for text/bytes, :func:`atomic_path` for libraries that
  write a path themselves (netCDF, safetensors, ``torch.save``);
- one command writes a folder at a time: :func:`lock_output` creates ``.tslayers.lock`` with
  ``O_EXCL`` (pid, host, command inside). A second writer fails with an error naming the holder;
  a lock left by a dead process on this host is taken over.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_write", "atomic_path", "lock_output", "CommandError", "OutputLockedError",
           "LOCK_FILE", "launch_rank"]

LOCK_FILE = ".tslayers.lock"


def _default_mode() -> int:
    """What ``open(path, "w")`` would give a new file (mkstemp makes them owner-only)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


_FILE_MODE = _default_mode()  # read once, at import: os.umask is process-wide


class CommandError(RuntimeError):
    """A failure the ``tslayers`` command reports as one line and exit status ``exit_code``
    (its message says what to do), rather than as a traceback."""

    exit_code = 1


class OutputLockedError(CommandError):
    """Another live process holds the output folder's lock."""


def _fsync_dir(directory: Path) -> None:
    """Make a rename durable (best effort: some file systems refuse to open folders)."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a fresh temporary path beside ``path``; on success it replaces ``path``.

    The temporary name is unique (two writers never share it) and keeps the target's suffix
    (some writers choose a format by suffix). On an exception the temporary file is removed
    and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{path.suffix}",
                                    dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as f:  # the library may have closed without fsync
            os.fsync(f.fileno())
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_dir(path.parent)


def atomic_write(path: str | Path, data: str | bytes, encoding: str = "utf-8") -> Path:
    """Write ``data`` (text or bytes) to ``path`` atomically; returns ``path``."""
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data.encode(encoding) if isinstance(data, str) else data)
    return path


def launch_rank() -> int:
    """0 for the process that keeps the books, > 0 for the other processes of a multi-process
    launch (torchrun, SLURM, Lightning's DDP children, other nodes); the global rank when the
    launcher gives one. Known before any process group exists, so locks and moving folders
    aside can be left to one process."""
    for var in ("RANK", "SLURM_PROCID"):
        value = os.environ.get(var, "")
        if value.isdigit():
            return int(value)
    local = os.environ.get("LOCAL_RANK", "")
    node = os.environ.get("NODE_RANK", "") or os.environ.get("GROUP_RANK", "")
    local_rank = int(local) if local.isdigit() else 0
    node_rank = int(node) if node.isdigit() else 0
    return node_rank * 1_000_000 + local_rank


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _read_holder(lock: Path) -> dict:
    try:
        return json.loads(lock.read_text())
    except (OSError, ValueError):
        return {}


@contextlib.contextmanager
def lock_output(directory: str | Path, command: str | None = None) -> Iterator[Path]:
    """Hold ``directory/.tslayers.lock`` while the block runs; yields the lock path.

    Re-entrant within one process (a study locking a stage folder its pretrain also locks).
    Processes of rank > 0 (:func:`launch_rank`) skip the lock: rank 0 holds it for the job.
    Raises :class:`OutputLockedError` naming the holder when another live process has it.
    A lock from a dead process on this host is replaced (two processes replacing the same
    stale lock at the same instant could both proceed; a lock from another host is never
    presumed dead, since its process cannot be checked from here).
    """
    directory = Path(directory)
    if launch_rank() != 0:
        yield directory / LOCK_FILE
        return
    if directory.exists() and not directory.is_dir():
        raise NotADirectoryError(20, "output path exists and is not a folder; name a folder",
                                 str(directory))
    directory.mkdir(parents=True, exist_ok=True)
    lock = directory / LOCK_FILE
    me = {"pid": os.getpid(), "host": socket.gethostname(),
          "command": command or " ".join(sys.argv), "since": time.strftime("%Y-%m-%d %H:%M:%S")}
    held_before = False
    for _ in range(3):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _read_holder(lock)
            same_host = holder.get("host") == me["host"]
            pid = int(holder.get("pid", -1)) if str(holder.get("pid", "")).isdigit() else -1
            if same_host and pid == me["pid"]:
                held_before = True  # re-entrant use by this very process
                break
            if same_host and pid > 0 and not _pid_alive(pid):
                with contextlib.suppress(FileNotFoundError):
                    lock.unlink()  # stale: its process is gone
                continue
            raise OutputLockedError(
                f"output folder '{directory}' is in use by pid {holder.get('pid', '?')} on "
                f"{holder.get('host', '?')} since {holder.get('since', '?')} "
                f"({holder.get('command', '?')}); wait for it to finish, choose another --out, "
                f"or delete '{lock}' if that process is gone") from None
        else:
            with os.fdopen(fd, "w") as f:
                json.dump(me, f)
            break
    else:
        raise OutputLockedError(f"could not take the lock '{lock}'; delete it if no tslayers "
                                "command is writing this folder")
    try:
        yield lock
    finally:
        if not held_before:
            with contextlib.suppress(OSError):
                if _read_holder(lock).get("pid") == me["pid"]:
                    lock.unlink()
