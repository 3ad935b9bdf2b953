"""Resumable stages: skip intact outputs, redo stale or damaged ones without losing them."""

from pathlib import Path

from tslayers.stages import fingerprint, run_stage, stage_status


def _work(calls):
    def work(d):
        calls.append(d)
        (d / "a.txt").write_text("result")
        (d / "sub").mkdir()
        (d / "sub" / "b.bin").write_bytes(b"\x00\x01")
    return work


def test_skip_then_detect_damage_and_config_change(tmp_path):
    calls, d, key = [], tmp_path / "stage", fingerprint({"lr": 1})
    assert run_stage("s", d, key, _work(calls), log=lambda m: None)
    assert stage_status(d, key) == "done"
    assert not run_stage("s", d, key, _work(calls), log=lambda m: None)
    assert len(calls) == 1
    (d / "sub" / "b.bin").write_bytes(b"\x00\x02")  # damage one output
    assert stage_status(d, key) == "damaged"
    assert run_stage("s", d, key, _work(calls), log=lambda m: None)
    assert len(calls) == 2 and stage_status(d, key) == "done"
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("stage.damaged-")]
    assert len(aside) == 1 and (aside[0] / "sub" / "b.bin").read_bytes() == b"\x00\x02"
    other = fingerprint({"lr": 2})
    assert stage_status(d, other) == "stale"


def test_half_written_stage_without_marker_is_damaged(tmp_path):
    d = tmp_path / "stage"
    d.mkdir()
    (d / "partial.txt").write_text("x")
    assert stage_status(d, "k") == "damaged"
    assert stage_status(tmp_path / "absent", "k") == "missing"


def _quiet(msg):
    pass


def test_interrupted_stage_is_resumed_in_place_when_it_can_resume(tmp_path):
    d, key, calls = tmp_path / "stage", fingerprint({"lr": 1}), []

    def crash(d):
        (d / "checkpoint").write_text("step 4")
        raise RuntimeError("killed")

    try:
        run_stage("s", d, key, crash, log=_quiet)
    except RuntimeError:
        pass
    assert stage_status(d, key) == "interrupted"
    assert stage_status(d, fingerprint({"lr": 2})) == "stale"

    def resume(d):
        calls.append((d / "checkpoint").read_text())  # sees what the killed run left
        (d / "result").write_text("done")

    assert run_stage("s", d, key, resume, log=_quiet,
                     resumable=lambda d: (d / "checkpoint").is_file())
    assert calls == ["step 4"] and stage_status(d, key) == "done"
    assert not [p for p in tmp_path.iterdir() if p.name != "stage"]  # nothing moved aside
    assert not (d / "_stage_started.json").exists()


def test_interrupted_stage_that_cannot_resume_is_moved_aside(tmp_path):
    d, key = tmp_path / "stage", fingerprint({"lr": 1})
    try:
        run_stage("s", d, key, lambda d: (d / "x").write_text("1") and 1 / 0, log=_quiet)
    except ZeroDivisionError:
        pass
    assert run_stage("s", d, key, _work([]), log=_quiet, resumable=False)
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("stage.interrupted-")]
    assert len(aside) == 1 and (aside[0] / "x").read_text() == "1"


def test_other_ranks_never_move_or_mark(tmp_path, monkeypatch):
    d, key = tmp_path / "stage", fingerprint({"lr": 1})
    d.mkdir()
    (d / "in-progress.txt").write_text("rank 0 is writing this")  # looks damaged
    monkeypatch.setenv("RANK", "1")
    ran = []
    assert not run_stage("s", d, key, ran.append, log=_quiet)  # not all_ranks: rank 0's job
    assert run_stage("s", d, key, ran.append, log=_quiet, all_ranks=True)
    assert ran == [d] and (d / "in-progress.txt").is_file()
    assert not (d / "_stage.json").exists() and list(tmp_path.iterdir()) == [d]


def test_stage_inputs_hash_follows_file_contents(tmp_path):
    from tslayers.stages import stage_inputs_hash

    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "w.bin").write_bytes(b"1")
    (tmp_path / "r.nc").write_bytes(b"a")
    paths = [tmp_path / "run", tmp_path / "r.nc"]
    h = stage_inputs_hash(paths)
    (tmp_path / "run" / "_stage.json").write_text("{}")  # bookkeeping does not count
    assert stage_inputs_hash(paths) == h
    (tmp_path / "run" / "w.bin").write_bytes(b"2")  # e.g. a non-deterministic retrain
    assert stage_inputs_hash(paths) != h
    (tmp_path / "run" / "w.bin").write_bytes(b"1")
    assert stage_inputs_hash(paths) == h
    assert stage_inputs_hash(paths[::-1]) != h


def _rank_main(rank: int, port: int, folder: str, seconds: float) -> None:
    """One of two processes: a process group with a short timeout, then a rank-0-only stage
    that takes longer than that timeout."""
    import datetime
    import os
    import time

    import torch.distributed as dist

    os.environ["RANK"] = str(rank)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=2, timeout=datetime.timedelta(seconds=seconds))
    key = fingerprint({"stage": 1})
    run_stage("probe", Path(folder) / "probe", key, lambda d: time.sleep(3 * seconds),
              log=_quiet)
    dist.barrier()  # both ranks got past the stage
    dist.destroy_process_group()


def test_other_ranks_wait_for_a_rank0_stage_longer_than_the_group_timeout(tmp_path):
    """Under DDP only rank 0 probes while the others wait; that wait must outlast the training
    process group's timeout (a plain barrier on it times out, and under NCCL aborts the job)."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.start_processes(_rank_main, args=(port, str(tmp_path), 2.0), nprocs=2,
                       start_method="spawn")  # raises if a rank failed (e.g. timed out)
    assert stage_status(tmp_path / "probe", fingerprint({"stage": 1})) == "done"
