"""Resumable stages: skip intact outputs, redo stale or damaged ones without losing them."""

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
