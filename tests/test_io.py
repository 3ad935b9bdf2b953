"""Atomic writes and output-folder locks."""

import os
import subprocess
import sys
import threading

import pytest
import yaml

from tslayers.config import from_dict, save_config
from tslayers.io import LOCK_FILE, OutputLockedError, atomic_path, atomic_write, lock_output


def test_atomic_write_replaces_whole_files_and_leaves_no_temporaries(tmp_path):
    p = atomic_write(tmp_path / "sub" / "a.txt", "one")
    assert p.read_text() == "one"
    atomic_write(p, b"two")
    assert p.read_bytes() == b"two" and os.listdir(p.parent) == ["a.txt"]
    plain = p.parent / "plain.txt"
    plain.write_text("x")
    assert p.stat().st_mode == plain.stat().st_mode  # not mkstemp's owner-only mode


def test_a_failing_writer_leaves_the_old_file(tmp_path):
    p = atomic_write(tmp_path / "r.nc", "good")
    with pytest.raises(RuntimeError):
        with atomic_path(p) as tmp:
            assert tmp.parent == p.parent and tmp.suffix == ".nc" and tmp != p
            tmp.write_text("half")
            raise RuntimeError("killed mid-write")
    assert p.read_text() == "good" and os.listdir(tmp_path) == ["r.nc"]


def test_concurrent_save_config_never_collides(tmp_path):
    """The old fixed '.tmp' name made two writers rename each other's file away."""
    from tslayers.training import TrainConfig

    path, errors = tmp_path / "config.yaml", []

    def writer(seed):
        try:
            for _ in range(30):
                save_config(from_dict(TrainConfig, {"seed": seed}), path)
        except Exception as err:  # pragma: no cover - the failure being tested
            errors.append(err)

    threads = [threading.Thread(target=writer, args=(s,)) for s in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert yaml.safe_load(path.read_text())["seed"] in range(6)
    assert os.listdir(tmp_path) == ["config.yaml"]


def test_lock_names_a_live_holder_and_takes_over_a_dead_ones(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / LOCK_FILE).write_text(
            f'{{"pid": {holder.pid}, "host": "{os.uname().nodename}", '
            '"command": "tslayers probe x.yaml", "since": "today"}')
        with pytest.raises(OutputLockedError, match=f"in use by pid {holder.pid}.*tslayers probe"):
            with lock_output(tmp_path):
                pass
    finally:
        holder.kill()
        holder.wait()
    with lock_output(tmp_path, "mine") as lock:  # its process is gone: stale, taken over
        assert f'"pid": {os.getpid()}' in lock.read_text()
        with lock_output(tmp_path):  # re-entrant in one process
            pass
        assert lock.is_file()
    assert not (tmp_path / LOCK_FILE).exists()


def test_second_writer_of_a_folder_gets_one_clear_line(tmp_path, capsys):
    from tslayers.cli import main

    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / LOCK_FILE).write_text(
            f'{{"pid": {holder.pid}, "host": "{os.uname().nodename}", "command": "c"}}')
        cfg = tmp_path / "c.yaml"
        cfg.write_text("train: {max_steps: 1}\n")
        assert main(["pretrain", str(cfg), "--out", str(tmp_path)]) == 1
    finally:
        holder.kill()
        holder.wait()
    err = capsys.readouterr().err
    assert err.startswith("tslayers pretrain: error: output folder") and err.count("\n") == 1
    assert f"in use by pid {holder.pid}" in err


@pytest.mark.parametrize("env, rank", [
    ({}, 0), ({"RANK": "0", "LOCAL_RANK": "0"}, 0), ({"RANK": "3"}, 3),
    ({"SLURM_PROCID": "1"}, 1), ({"LOCAL_RANK": "1"}, 1),
    ({"NODE_RANK": "1", "LOCAL_RANK": "0"}, 1_000_000),  # rank 0 of the second node
])
def test_launch_rank_leaves_bookkeeping_to_one_process(monkeypatch, env, rank):
    from tslayers.io import launch_rank

    for var in ("RANK", "SLURM_PROCID", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK"):
        monkeypatch.delenv(var, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert launch_rank() == rank
