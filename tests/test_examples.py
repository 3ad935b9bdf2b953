"""examples/world_model.py end to end (quick): the claims it prints hold."""

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_world_model_example_quick(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("world_model", ROOT / "examples" /
                                                  "world_model.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    assert example.main(["--quick", "--out", str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "world_model.json").read_text())
    assert (tmp_path / "results.nc").exists() and (tmp_path / "report" / "report.md").exists()
    # a sequential model: patching a whole layer with the clean run restores the clean output
    for tap in summary["patching"].values():
        assert tap["all_steps"] == pytest.approx(1.0, abs=1e-4)
    # the GRU's last state feeds the head alone: its last step carries the whole difference
    assert summary["patching"]["rnn.layers.1"]["last_step"] == pytest.approx(1.0, abs=1e-4)
    # steering by a vector with w.v = 1 moves the decoded value at that layer by exactly alpha
    for alpha, (here, _) in summary["steering_shift"].items():
        assert here == pytest.approx(float(alpha), abs=1e-3)
    # after a few steps of history the state is decodable from the trained model
    assert summary["omega_r2_by_step"]["rnn.layers.1"][-1] > 0.9
    assert "step_target/energy" in capsys.readouterr().out
