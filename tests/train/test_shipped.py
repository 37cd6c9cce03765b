"""Shipped baselines: records are complete, weights load into their registry models, and
re-scoring a validation case reproduces the recorded DSC."""

from __future__ import annotations

import json
import math

import pytest

from benchmark.data import open_dataset
from benchmark.models import build_model, load_model_config, load_weights, shipped_weights_path
from benchmark.train import validate

SHIPPED = ["tiny_nnunet", "tiny_swinunetr", "tiny_stunet", "tiny_unetr", "tiny_medformer"]


def _record(name: str) -> dict:
    return json.loads(shipped_weights_path(name).with_suffix(".json").read_text())


def _model(name: str, record: dict):
    cfg = load_model_config(name)
    assert cfg.checkpoint == "shipped"
    in_channels = len(record["data_config"].get("channels", [])) or 1
    return load_weights(build_model(cfg, in_channels, record["num_classes"]), cfg).eval(), cfg


@pytest.mark.parametrize("name", SHIPPED)
def test_record_is_complete_and_weights_load(name):
    record = _record(name)
    for key in (
        "command",
        "seed",
        "epochs",
        "iterations_per_epoch",
        "train_wall_s",
        "machine",
        "torch",
        "data_config",
        "val_dsc",
        "val_mean_dsc",
        "val_dsc_per_case",
    ):
        assert record[key] is not None, key
    assert (
        record["command"].startswith("python -m benchmark.train")
        and f"model={name}" in record["command"]
    )
    assert record["model"] == name and record["dataset"] == "phantom"
    finite = [v for v in record["val_dsc"].values() if v is not None]
    assert record["val_mean_dsc"] == pytest.approx(sum(finite) / len(finite), abs=1e-3)
    assert record["val_mean_dsc"] > 0.5
    model, _ = _model(name, record)  # raises CheckpointMismatchError on any key/shape mismatch
    assert sum(p.numel() for p in model.parameters()) == record["params"]


@pytest.mark.slow
@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_weights_reproduce_the_recorded_validation_dsc(name):
    record = _record(name)
    model, cfg = _model(name, record)
    dataset = open_dataset(record["data_config"])
    case_id = record["val_cases"][0]
    result = validate(
        model,
        [dataset.prepare(case_id)],
        dataset.labels,
        roi_size=record["val_roi_size"],
        overlap=record["val_overlap"],
    )
    expected = record["val_dsc_per_case"][case_id]
    for organ, value in result.per_case[case_id].items():
        if expected[organ] is None:
            assert math.isnan(value)
        else:
            assert value == pytest.approx(expected[organ], abs=0.01), organ


#: Baselines trained to the bar the phantom allows: mean validation DSC >= 0.75 with every organ
#: found (README, "Shipped baselines"); the others are shipped at their earlier, shorter schedules.
AT_THE_BAR = ["tiny_nnunet", "tiny_swinunetr", "tiny_medformer"]


@pytest.mark.parametrize("name", AT_THE_BAR)
def test_baseline_finds_every_organ_above_the_bar(name):
    record = _record(name)
    assert record["val_mean_dsc"] >= 0.75
    missed = [organ for organ, dsc in record["val_dsc"].items() if not dsc or dsc <= 0.0]
    assert not missed, f"{name} misses {missed} on the validation cases"
