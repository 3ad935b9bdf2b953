"""Strict YAML configs, overrides and saving."""

from dataclasses import dataclass, field

import pytest
import yaml

from tslayers.config import ConfigError, from_dict, load_config, save_config
from tslayers.model import EncoderConfig


@dataclass
class _Run:
    name: str = "x"
    seeds: list[int] = field(default_factory=lambda: [0])
    encoder: EncoderConfig = field(default_factory=EncoderConfig)


def test_unknown_key_names_key_and_allowed(tmp_path):
    with pytest.raises(ConfigError) as err:
        from_dict(_Run, {"encoder": {"d_modle": 64}})
    msg = str(err.value)
    assert "encoder.d_modle" in msg and "d_model" in msg and "n_layers" in msg


def test_overrides_and_types(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"encoder": {"d_model": 64}}))
    cfg = load_config(_Run, path, ["encoder.n_layers=3", "seeds=[1, 2]", "encoder.causal=true"])
    assert cfg.encoder.d_model == 64 and cfg.encoder.n_layers == 3 and cfg.encoder.causal is True
    assert cfg.seeds == [1, 2]
    with pytest.raises(ConfigError, match="must be an integer"):
        load_config(_Run, path, ["encoder.n_layers=2.5"])
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(_Run, tmp_path / "nope.yaml")


def test_saved_config_reloads_to_the_same_object(tmp_path):
    cfg = load_config(_Run, None, ["encoder.stride=4", "name=abc"])
    save_config(cfg, tmp_path / "resolved.yaml")
    assert load_config(_Run, tmp_path / "resolved.yaml") == cfg
