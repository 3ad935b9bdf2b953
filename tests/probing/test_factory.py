"""load_factory: files and modules, YAML-scalar arguments, errors that name the fix."""

from __future__ import annotations

import textwrap

import pytest
from torch import nn

from tslayers.probing.factory import load_factory, parse_module_args


@pytest.fixture
def user_file(tmp_path):
    (tmp_path / "helper.py").write_text("WIDTH = 7\n")
    path = tmp_path / "world.py"
    path.write_text(textwrap.dedent("""
        from __future__ import annotations
        from dataclasses import dataclass

        import torch
        from helper import WIDTH  # a neighbour of the file
        RAN = []
        RAN.append("top level")

        @dataclass
        class Cfg:
            width: int = WIDTH

        def build(width: int = WIDTH, bias: bool = True, ckpt: str | None = None):
            return torch.nn.Linear(3, width, bias=bias)

        def not_a_model():
            return 3
    """))
    return path


def test_parse_module_args_reads_yaml_scalars():
    args = parse_module_args(["width=64", "lr=1e-3", "bias=false", "ckpt=run/last.pt",
                              "none=null", "name=[a]", "empty="])
    assert args == {"width": 64, "lr": 1e-3, "bias": False, "ckpt": "run/last.pt",
                    "none": None, "name": "[a]", "empty": ""}
    with pytest.raises(ValueError, match="key=value"):
        parse_module_args(["width"])


def test_file_factory_runs_with_arguments(user_file):
    model = load_factory(f"{user_file}:build", {"width": 5, "bias": False})
    assert isinstance(model, nn.Linear) and model.out_features == 5 and model.bias is None
    assert load_factory(f"{user_file}:build").out_features == 7  # default from the neighbour


def test_package_factory():
    model = load_factory("torch.nn:GRU", parse_module_args(["input_size=3", "hidden_size=4"]))
    assert isinstance(model, nn.GRU) and model.hidden_size == 4


def test_errors_say_what_to_change(user_file, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_factory(f"{tmp_path / 'missing.py'}:build")
    with pytest.raises(ValueError, match="callables defined there: Cfg, build, not_a_model"):
        load_factory(f"{user_file}:model")
    with pytest.raises(ValueError, match="not an nn.Module"):
        load_factory(f"{user_file}:not_a_model")
    with pytest.raises(ValueError, match=r"build\(width: .*= 7.*depth"):
        load_factory(f"{user_file}:build", {"depth": 2})
    with pytest.raises(ValueError, match="FILE.py:FACTORY"):
        load_factory(str(user_file))
    with pytest.raises(ValueError, match="cannot import"):
        load_factory("no_such_package_xyz:build")
