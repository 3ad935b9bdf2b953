"""The command line: help on every subcommand, clear errors."""

import pytest

from tslayers.cli import COMMANDS, build_parser, main


@pytest.mark.parametrize("command", list(COMMANDS))
def test_help_for_every_subcommand(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args([command, "--help"])
    assert exit_.value.code == 0
    assert "usage: tslayers " + command in capsys.readouterr().out


def test_missing_config_is_a_clear_error(capsys, tmp_path):
    rc = main(["pretrain", str(tmp_path / "missing.yaml")])
    assert rc != 0
    assert "missing.yaml" in capsys.readouterr().err
