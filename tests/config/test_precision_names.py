"""Every option file of the quantization groups becomes a QuantSpec through the real mapping
(:func:`benchmark.config.build_point`), one precision parser decides the names, and block
formats need granularity=per_block."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir

from benchmark.config import GRANULARITIES, OBSERVERS, ConfigError, build_point, validate
from benchmark.points.context import spec_bits
from benchmark.quant import QuantSpec

CONF = Path(__file__).resolve().parents[2] / "conf"


def _compose(*overrides: str):
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        return compose("config", overrides=list(overrides))


def _options(group: str) -> list[Path]:
    return sorted((CONF / group).glob("*.yaml"))


def _values(path: Path) -> dict:
    values = yaml.safe_load(path.read_text())
    values.pop("defaults", None)
    return values


def _point_for(precision: str) -> list[str]:
    spec = QuantSpec(precision)
    if spec.is_float:
        return [f"precision={precision}", "granularity=none", "observer=none"]
    return [f"precision={precision}", f"granularity={spec.granularity}"]


@pytest.mark.parametrize("path", _options("precision"), ids=lambda p: p.stem)
def test_every_precision_file_maps_to_its_spec(path):
    name = _values(path)["name"]
    point = build_point(_compose(*_point_for(name)))
    assert point.spec.precision == name == path.stem
    w_bits, a_bits = spec_bits(point.spec)
    if point.spec.is_float:
        assert (w_bits, a_bits) == ((32, 32) if name == "fp32" else (16, 16))
    else:
        assert (w_bits, a_bits) == (point.spec.w_bits, point.spec.a_bits)


@pytest.mark.parametrize(
    "group, path",
    [(g, p) for g in ("granularity", "observer", "algorithm") for p in _options(g)],
    ids=lambda v: v if isinstance(v, str) else v.stem,
)
def test_every_quant_option_file_maps_to_the_spec_fields_it_sets(group, path):
    values = _values(path)
    if values["name"] == "none" and group != "algorithm":
        overrides = ["precision=fp32", "granularity=none", "observer=none"]
    elif group == "granularity" and values["name"] == "per_block":
        overrides = ["precision=mxfp8_e4m3", "granularity=per_block"]
    elif group == "observer" and values["name"] == "histogram":
        overrides = ["precision=w8a8", "granularity=per_tensor", "observer=histogram"]
    else:
        overrides = ["precision=w8a8", f"{group}={path.stem}"]
    spec = build_point(_compose(*overrides)).spec
    name = values["name"] if isinstance(values["name"], str) else "+".join(values["name"])
    assert getattr(spec, group) == ("none" if spec.is_float else name)
    for key, value in values.items():
        if key == "options":
            expected = QuantSpec("w8a8", algorithm=values["name"], algorithm_options=value)
            assert spec.algorithm_options == expected.algorithm_options
        elif key != "name":
            assert getattr(spec, key) == value, key


def test_unset_observer_fields_keep_the_engine_defaults():
    spec = build_point(_compose("precision=w8a8", "observer=minmax")).spec
    engine = QuantSpec("w8a8")
    assert (spec.percentile, spec.averaging_constant, spec.mse_grid) == (
        engine.percentile,
        engine.averaging_constant,
        engine.mse_grid,
    )


@pytest.mark.parametrize("name", ["w08a08", "W8A8", "w8a8x", "int8", "mxfp5"])
def test_other_spellings_are_refused(name):
    with pytest.raises(ConfigError, match="precision.name"):
        validate(_compose(f"precision.name={name}"))


def test_registered_names_are_config_choices():
    assert {"histogram", "none"} <= set(OBSERVERS)
    assert {"per_block", "none", "adaptive"} <= set(GRANULARITIES)


def test_block_precisions_take_per_block():
    validate(_compose("precision=mxfp4", "granularity=per_block"))
    with pytest.raises(ConfigError, match="granularity=per_block"):
        validate(_compose("precision=nvfp4", "granularity=adaptive"))
    with pytest.raises(ConfigError, match="per_tensor or per_channel_token|adaptive"):
        validate(_compose("precision=w8a8", "granularity=per_block"))
