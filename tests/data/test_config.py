"""DataConfig validation and the shipped conf/data files."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from benchmark.data import DataConfig, DataConfigError

CONF = Path(__file__).resolve().parents[2] / "conf" / "data"


def test_defaults_are_the_phantom():
    cfg = DataConfig.from_mapping({"name": "phantom", "format": "phantom"})
    assert cfg.root is None and cfg.target_spacing_mm == [4.0, 3.0, 3.0]
    assert cfg.split.fractions == [0.6, 0.13, 0.27]


@pytest.mark.parametrize("path", sorted(CONF.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_data_yaml_validates_and_names_itself(path):
    raw = OmegaConf.load(path)
    assert raw.name == path.stem
    if raw.format in ("nnunet_raw", "msd"):
        assert OmegaConf.is_missing(raw, "root")  # users must say where the data is
        raw.root = "/data/somewhere"
    cfg = DataConfig.from_mapping(raw)  # a DictConfig, as the runner passes it
    assert cfg.name == path.stem


@pytest.mark.parametrize("path", sorted(CONF.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_key_is_commented(path):
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#") and not line.rstrip().endswith(":"):
            assert "#" in line, f"{path.name}: key without a comment: {line!r}"


def test_missing_root_in_dictconfig_is_a_clear_error():
    raw = OmegaConf.load(CONF / "btcv.yaml")
    with pytest.raises(DataConfigError, match="root"):
        DataConfig.from_mapping(raw)


@pytest.mark.parametrize(
    "override, match",
    [
        ({"format": "dicom"}, "data.format"),
        ({"normalization": "minmax"}, "data.normalization"),
        ({"target_spacing_mm": [1.0, 1.0]}, "target_spacing_mm"),
        ({"target_spacing_mm": [1.0, -1.0, 1.0]}, "target_spacing_mm"),
        ({"split": {"fractions": [0.5, 0.5, 0.5]}}, "fractions"),
        ({"split": {"fractions": [0.0, 0.5, 0.5]}}, "fractions"),
        ({"n_cases": 0}, "n_cases"),
        ({"inplane_voxels": 8}, "inplane_voxels"),
        ({"spacing": [1, 1, 1]}, "unknown key data.spacing"),
        ({"format": "nnunet_raw"}, "data.root is required"),
        ({"expected_num_classes": 1}, "expected_num_classes"),
    ],
)
def test_bad_values_name_the_key(override, match):
    cfg = {"name": "phantom", "format": "phantom", **override}
    with pytest.raises(DataConfigError, match=match):
        DataConfig.from_mapping(cfg)
