"""Resumable stages: skip work whose outputs exist and are intact, redo anything damaged.

A finished stage leaves ``_stage.json`` in its folder with a fingerprint of the config that made
it and a SHA-256 of every output file. A later run skips the stage only when the fingerprint
matches and every file still hashes the same; otherwise the old folder is moved aside (never
silently reused, never deleted) and the stage runs again.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

MARKER = "_stage.json"


def fingerprint(obj: Any) -> str:
    """Stable hash of a JSON-able description of what a stage computes."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _file_hash(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def stage_status(directory: Path, key: str) -> str:
    """'done', 'missing', 'stale' (other config) or 'damaged' (a file changed or vanished)."""
    marker = directory / MARKER
    if not marker.is_file():
        return "missing" if not directory.exists() or not any(directory.iterdir()) else "damaged"
    try:
        info = json.loads(marker.read_text())
    except (json.JSONDecodeError, OSError):
        return "damaged"
    if info.get("fingerprint") != key:
        return "stale"
    for rel, digest in info.get("files", {}).items():
        path = directory / rel
        if not path.is_file() or _file_hash(path) != digest:
            return "damaged"
    return "done"


def mark_done(directory: Path, key: str, extra: dict | None = None) -> None:
    """Record the fingerprint and the hash of every file now in ``directory``."""
    files = {
        str(p.relative_to(directory)): _file_hash(p)
        for p in sorted(directory.rglob("*"))
        if p.is_file() and p.name != MARKER
    }
    tmp = directory / (MARKER + ".tmp")
    tmp.write_text(json.dumps({"fingerprint": key, "files": files, **(extra or {})}, indent=1))
    tmp.replace(directory / MARKER)


def run_stage(
    name: str,
    directory: Path,
    key: str,
    work: Callable[[Path], Any],
    log: Callable[[str], None] = print,
) -> bool:
    """Run ``work(directory)`` unless a valid result is there. Returns True when it ran."""
    directory = Path(directory)
    status = stage_status(directory, key)
    if status == "done":
        log(f"[{name}] up to date, skipped ({directory})")
        return False
    if status in ("stale", "damaged"):
        aside = directory.with_name(f"{directory.name}.{status}-{time.strftime('%Y%m%d-%H%M%S')}")
        log(f"[{name}] previous output is {status}: moved to {aside.name}, recomputing")
        shutil.move(str(directory), str(aside))
    directory.mkdir(parents=True, exist_ok=True)
    log(f"[{name}] running -> {directory}")
    t0 = time.perf_counter()
    work(directory)
    mark_done(directory, key, {"seconds": round(time.perf_counter() - t0, 2)})
    log(f"[{name}] done in {time.perf_counter() - t0:.1f}s")
    return True
