"""Every mistake a user can make ends as one ``tslayers X: error: ...`` line naming the fix."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tslayers.cli import main

ROOT = Path(__file__).resolve().parents[1]
GOOD = "train: {max_steps: 1}\n"


def _one_line(capsys, command="pretrain") -> str:
    err = capsys.readouterr().err
    assert err.startswith(f"tslayers {command}: error: ") and err.count("\n") == 1, err
    return err


@pytest.mark.parametrize("override, match", [
    ("encoder.d_model=-16", r"encoder.d_model=-16 is out of range: use a width >= 2"),
    ("encoder.mlp_ratio=-1", r"encoder.mlp_ratio=-1.0 is out of range: use a positive"),
    ("encoder.n_heads=3", r"encoder.n_heads=3 is out of range: use a head count that splits"),
    ("train.max_steps=-5", r"train.max_steps=-5 is out of range: use a step count >= 0"),
    ("train.weight_decay=-0.1", r"train.weight_decay=-0.1 is out of range"),
    ("data.batch_size=0", r"data.batch_size=0 is out of range: use a batch size >= 1"),
    ("data.val_fraction=0.9", r"val_fraction \+ test_fraction < 1"),
    ("train.lr=[1", r"override 'train.lr=\[1': the value is not valid YAML"),
])
def test_bad_values_are_one_line_with_the_range(tmp_path, capsys, override, match):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(GOOD)
    assert main(["pretrain", str(cfg), override, "--out", str(tmp_path / "run")]) == 1
    assert re.search(match, _one_line(capsys))
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("text, match", [
    ("train:\n  max_steps: 1\n lr: 2\n", r"not valid YAML at line 3, column 2"),
    ("train: {max_steps: [1}\n", r"not valid YAML at line 1, column \d+"),
    ("", r"is empty; write the settings you want"),
    ("# only a comment\n", r"is empty"),
    ("train:\n  lr: 0.1\n  lr: 0.2\n",
     r"duplicate key 'lr' at line 3, column 3 \(first at line 2\)"),
    ("- a\n- b\n", r"must hold a mapping"),
])
def test_bad_yaml_is_one_line_with_line_and_column(tmp_path, capsys, text, match):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(text)
    assert main(["pretrain", str(cfg), "--out", str(tmp_path / "run")]) == 1
    assert re.search(match, _one_line(capsys))


def test_out_naming_a_file_or_a_path_under_a_file(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(GOOD)
    f = tmp_path / "results.txt"
    f.write_text("x")
    assert main(["pretrain", str(cfg), "--out", str(f)]) == 1
    assert f"output '{f}' is a file, not a folder" in _one_line(capsys)
    assert main(["pretrain", str(cfg), "--out", str(f / "run")]) == 1
    err = _one_line(capsys)
    assert str(f) in err and "name a folder" in err


def test_unwritable_output_folder_names_the_path(tmp_path, capsys, monkeypatch):
    """Simulated (tests may run as root, who may write anywhere)."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text(GOOD)
    out = tmp_path / "ro"
    real_mkdir = Path.mkdir

    def mkdir(self, *a, **k):
        if self == out:
            raise PermissionError(13, "Permission denied", str(self))
        return real_mkdir(self, *a, **k)

    monkeypatch.setattr(Path, "mkdir", mkdir)
    assert main(["pretrain", str(cfg), "--out", str(out)]) == 1
    err = _one_line(capsys)
    assert f"cannot use '{out}': Permission denied; choose a folder you can write" in err


def test_config_errors_come_before_the_training_stack_is_imported(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("encoder: {d_model: -1}\n")
    code = ("import sys; from tslayers.cli import main; "
            f"rc = main(['pretrain', {str(cfg)!r}]); "
            "print(rc, 'lightning' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={"PYTHONPATH": str(ROOT)}, timeout=120)
    assert out.stdout.split() == ["1", "False"], out.stderr
