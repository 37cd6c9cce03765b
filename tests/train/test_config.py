"""conf/train.yaml composes, documents every trainer key, and matches TrainerConfig."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from benchmark.train import TrainerConfig, TrainerConfigError

CONF = Path(__file__).resolve().parents[2] / "conf"


@pytest.fixture
def composed():
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        yield compose(
            "train",
            overrides=["model=tiny_swinunetr", "trainer.epochs=3"],
            return_hydra_config=True,
        )
    GlobalHydra.instance().clear()


def test_train_yaml_composes_into_trainer_config(composed):
    assert composed.model.name == "tiny_swinunetr" and composed.data.name == "phantom"
    tcfg = TrainerConfig.from_mapping(composed.trainer)
    assert tcfg.epochs == 3 and tcfg.poly_exponent == 0.9 and tcfg.patch_size is None
    # run folder is fixed per model/data/seed so that re-running a command resumes it
    assert composed.hydra.run.dir == "outputs/train/tiny_swinunetr_phantom_seed0"


def test_every_trainer_key_is_in_the_yaml_and_commented():
    text = (CONF / "train.yaml").read_text()
    keys = set(yaml.safe_load(text)["trainer"])
    assert keys == {f.name for f in dataclasses.fields(TrainerConfig)}
    section = text.split("\ntrainer:\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert len(section) == len(keys)
    assert all("#" in line for line in section), [line for line in section if "#" not in line]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"epochs": 0}, r"trainer\.epochs must be an int >= 1, got 0"),
        (
            {"optimizer": "lion"},
            r"trainer\.optimizer='lion' is unknown; use one of \['adamw', 'sgd'\]",
        ),
        ({"foreground_fraction": 1.5}, r"trainer\.foreground_fraction must lie in \[0, 1\]"),
        ({"patch_size": [64, 64]}, r"trainer\.patch_size must be null"),
        ({"flip_axes": [3]}, r"trainer\.flip_axes must hold spatial axes"),
        ({"epoch": 3}, r"unknown trainer key\(s\) \['epoch'\]"),
    ],
)
def test_invalid_values_name_the_key(values, message):
    with pytest.raises(TrainerConfigError, match=message):
        TrainerConfig.from_mapping(values)
