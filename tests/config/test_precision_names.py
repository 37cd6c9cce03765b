"""The config's precision parser is the quant engine's: every conf/precision file parses, one
spelling per point, and block formats need granularity=per_block."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from benchmark.config import GRANULARITIES, OBSERVERS, ConfigError, bits, validate
from benchmark.quant import QuantSpec

CONF = Path(__file__).resolve().parents[2] / "conf"


def _compose(*overrides: str):
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        return compose("config", overrides=list(overrides))


@pytest.mark.parametrize("path", sorted((CONF / "precision").glob("*.yaml")), ids=lambda p: p.stem)
def test_config_bits_agree_with_the_spec(path):
    name = OmegaConf.load(path).name
    spec = QuantSpec(name)
    if spec.is_float:
        assert bits(name) == ({"fp32": 32}.get(name, 16),) * 2
    else:
        assert bits(name) == (spec.w_bits, spec.a_bits)


@pytest.mark.parametrize("name", ["w08a08", "W8A8", "w8a8 ", "int8", "mxfp5"])
def test_other_spellings_are_refused(name):
    with pytest.raises(ConfigError, match="precision.name"):
        bits(name)


def test_registered_names_are_config_choices():
    assert {"histogram", "none"} <= set(OBSERVERS)
    assert {"per_block", "none", "adaptive"} <= set(GRANULARITIES)


def test_block_precisions_take_per_block():
    validate(_compose("precision=mxfp4", "granularity=per_block"))
    with pytest.raises(ConfigError, match="granularity=per_block"):
        validate(_compose("precision=nvfp4", "granularity=adaptive"))
    with pytest.raises(ConfigError, match="per_tensor or per_channel_token|adaptive"):
        validate(_compose("precision=w8a8", "granularity=per_block"))
