"""Layer-wise sensitivity rows on a three-layer network with the real quantization engine."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

import benchmark.quant as quant
from benchmark.analysis.activations import DISTRIBUTION_METRICS, SHIFT_METRICS
from benchmark.analysis.sensitivity import (
    analysis_units,
    run_sensitivity,
    variant_spec,
)
from benchmark.analysis.summary import activation_table, sensitivity_table
from benchmark.config import build_point
from benchmark.schema.sensitivity import MODES, SensitivityConfig
from tests.runs import conf_settings, context_of, run_task

LAYERS = ["encoder.stages.0.0.convs.0.conv", "encoder.stages.0.0.convs.1.conv", "decoder.seg.0"]


def test_units_group_by_name_prefix():
    assert analysis_units(LAYERS) == {name: [name] for name in LAYERS}
    assert analysis_units(LAYERS, group_depth=3) == {
        "encoder.stages.0": LAYERS[:2],
        "decoder.seg.0": LAYERS[2:],
    }
    assert list(analysis_units(LAYERS, 2, ["decoder.*"])) == ["decoder.seg"]


def test_variant_spec_quantizes_exactly_the_listed_layers(tiny_segnet):
    spec = quant.QuantSpec("w4a4", "per_tensor", keep_first_last=True)
    variant = variant_spec(spec, ["body.0"], "w4a16")
    qmodel = quant.quantize(tiny_segnet, variant)
    assert quant.quantized_layer_names(qmodel) == ["body.0"]
    assert (variant.w_bits, variant.a_bits) == (4, 16)


def test_copy_ranges_reuses_calibrated_ranges(tiny_segnet):
    spec = quant.QuantSpec("w4a4", "per_tensor")
    full = quant.quantize(tiny_segnet, spec)
    quant.calibrate(full, [torch.randn(1, 1, 8, 8, 8)])
    alone = quant.quantize(tiny_segnet, variant_spec(spec, ["body.2"]))
    quant.copy_ranges(full, alone)
    assert torch.equal(alone.body[2].input_quant.hi, full.body[2].input_quant.hi)
    uncalibrated = quant.quantize(tiny_segnet, spec)
    with pytest.raises(quant.RangesMismatchError, match="body.0"):
        quant.copy_ranges(uncalibrated, quant.quantize(tiny_segnet, spec))


def test_config_rejects_unknown_modes_and_bad_bins():
    with pytest.raises(ValueError, match="modes"):
        conf_settings(SensitivityConfig, "sensitivity", modes=["one_layer", "everything"])
    with pytest.raises(ValueError, match="kl_bins"):
        conf_settings(SensitivityConfig, "sensitivity", histogram_bins=64, kl_bins=48)
    with pytest.raises(TypeError, match="layers"):
        conf_settings(SensitivityConfig, "sensitivity", layers=[])


def test_run_sensitivity_rows(fake_data, sensitivity_cfg):
    rows = run_sensitivity(context_of(sensitivity_cfg()))
    layers = ["body.0", "body.2", "head"]
    scored = rows[rows["metric"].isin(["dsc", "nsd"])]
    # 1 case x 2 classes x 2 metrics per variant; 4 whole-model variants + 3 units x 4 modes
    assert len(scored) == 4 * (4 + len(layers) * len(MODES))
    per_unit = scored[scored["layer"].notna()]
    assert sorted(per_unit["layer"].unique()) == layers
    assert per_unit.groupby(["mode", "layer"]).size().eq(4).all()
    precisions = per_unit.groupby("mode")["precision"].unique().map(list).to_dict()
    assert precisions == {
        "one_layer": ["w4a4"],
        "all_but_one": ["w4a4"],
        "weights_only": ["w4a16"],
        "activations_only": ["w16a4"],
    }
    whole = scored[scored["layer"].isna()].groupby("mode")["precision"].first().to_dict()
    assert whole == {
        "reference": "fp32",
        "all": "w4a4",
        "weights_only": "w4a16",
        "activations_only": "w16a4",
    }
    stats = rows[rows["mode"].isin(["activation_stats", "activation_shift"])]
    assert len(stats) == len(layers) * (len(DISTRIBUTION_METRICS) + 2 * len(SHIFT_METRICS))
    table = activation_table(rows.assign(model="fake", run_id="r"))
    assert sorted(table["granularity"].unique()) == ["adaptive", "none", "per_tensor"]
    deltas = sensitivity_table(rows.assign(model="fake", run_id="r"))
    assert deltas[deltas["mode"] == "reference"]["delta"].eq(0).all()


def test_whole_model_rows_equal_the_standard_evaluation(fake_data, sensitivity_cfg):
    """`reference` and `all` are the FP32 and W4A4 runs of run_point: same ranges, same scores."""
    rows = run_sensitivity(context_of(sensitivity_cfg("sensitivity.modes=[one_layer]")))
    for point, mode in (("precision=fp32 granularity=none", "reference"), ("", "all")):
        cfg = sensitivity_cfg("task=evaluate", *point.split())
        evaluated = run_task(cfg)
        expected = evaluated[evaluated["metric"] == "dsc"].set_index(["case", "class"])["value"]
        ours = rows[(rows["mode"] == mode) & (rows["metric"] == "dsc")]
        got = ours.set_index(["case", "class"])["value"]
        pd.testing.assert_series_equal(
            got.sort_index(), expected.sort_index(), check_names=False, check_index_type=False
        )


def test_float_precision_is_refused(fake_data, sensitivity_cfg):
    with pytest.raises(ValueError, match="integer precision"):
        run_sensitivity(context_of(sensitivity_cfg("precision=fp32", "granularity=none")))


@pytest.mark.parametrize("preset", ["sensitivity_smoke", "sensitivity"])
def test_presets_validate_with_their_sensitivity_node(preset, tmp_path):
    from hydra import compose, initialize_config_dir

    from tests.run.conftest import CONF

    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        cfg = compose("config", overrides=[f"experiment={preset}", "model=tiny_nnunet"])
    point = build_point(cfg, in_sweep=True)
    assert point.task == "sensitivity"
    node = point.sensitivity
    assert node.group_depth == (3 if preset == "sensitivity_smoke" else 0)
    assert set(node.modes) == set(MODES)
