"""Every shipped YAML config loads strictly into its dataclass (no drift between code and files)."""

from pathlib import Path

import pytest

from tslayers.align import AlignConfig
from tslayers.config import load_config
from tslayers.data import DataConfig
from tslayers.depth import DepthStudyConfig
from tslayers.probing import ProbeRunConfig
from tslayers.study import StudyConfig
from tslayers.training import PretrainConfig

ROOT = Path(__file__).resolve().parents[1] / "configs"
KINDS = {"align": AlignConfig, "pretrain": PretrainConfig, "probe": ProbeRunConfig,
         "study": StudyConfig, "data": DataConfig}


# configs/real/ is read by benchmarks/real_data.py, which validates its own sections
SHIPPED = sorted(p for p in ROOT.rglob("*.yaml") if p.parent.name != "real")


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_config_loads(path):
    kind = path.parent.name
    cls = StudyConfig if path.name == "quickstart.yaml" else KINDS[kind]
    if kind == "study" and path.name.startswith("depth"):
        cls = DepthStudyConfig  # a sweep of studies: the study itself sits under 'study:'
    assert isinstance(load_config(cls, path), cls)
