"""QuantSpec parsing, validation messages, result-row dictionary and calibration key."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from benchmark.quant import QuantSpec, QuantSpecError, parse_precision


@pytest.mark.parametrize(
    ("text", "bits"),
    [
        ("fp32", (None, None)),
        ("bf16", (None, None)),
        ("w8a8", (8, 8)),
        ("W4A8", (4, 8)),
        ("w2a16", (2, 16)),
        ("w16a16", (16, 16)),
    ],
)
def test_parse_precision(text, bits):
    assert parse_precision(text) == bits


@pytest.mark.parametrize("text", ["w1a8", "w8a17", "int8", "w8", "", "w8a8x"])
def test_bad_precision_names_the_value_and_the_fix(text):
    with pytest.raises(QuantSpecError, match="precision=") as info:
        QuantSpec(text)
    assert "wNaM" in str(info.value) or "2..16" in str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"granularity": "per_group"}, "granularity"),
        ({"observer": "kl_entropy"}, "observer"),
        ({"act_mapping": "unsigned"}, "act_mapping"),
        ({"percentile": 40.0}, "percentile"),
        ({"position_scales": "smooth"}, "position_scales"),
        ({"mse_grid": 1}, "mse_grid"),
    ],
)
def test_invalid_fields_raise_with_allowed_values(kwargs, field):
    with pytest.raises(QuantSpecError, match=field):
        QuantSpec("w8a8", **kwargs)


def test_properties_to_dict_and_key():
    spec = QuantSpec.from_strings("w4a8", "adaptive", "percentile", exclude=("head",))
    assert (spec.w_bits, spec.a_bits, spec.is_float) == (4, 8, False)
    row = spec.to_dict()
    assert row["w_bits"] == 4 and row["a_bits"] == 8 and row["exclude"] == "head"
    assert row["position_scales"] == "dynamic" and row["act_mapping"] == "asymmetric"
    assert all(isinstance(v, (str, int, float, bool, type(None))) for v in row.values())
    assert (
        spec.calibration_key()
        == QuantSpec("w4a8", "adaptive", "percentile", exclude=["head"]).calibration_key()
    )
    assert spec.calibration_key() != QuantSpec("w4a8", "adaptive", "minmax").calibration_key()
    assert QuantSpec("bf16").float_dtype is torch.bfloat16
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.precision = "w8a8"


def test_from_config_groups_and_unknown_keys():
    spec = QuantSpec.from_config(
        {"name": "w8a8"}, {"name": "adaptive"}, {"name": "percentile", "percentile": 99.9}
    )
    assert spec.percentile == 99.9 and spec.granularity == "adaptive"
    with pytest.raises(QuantSpecError, match="unknown QuantSpec option"):
        QuantSpec.from_config("w8a8", "adaptive", {"name": "minmax", "bins": 3})
