"""Registry: YAML validation, errors naming the bad key/name, building, published parameter counts."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from benchmark.models import (
    ModelConfigError,
    UnknownModelError,
    available_models,
    build_model,
    count_parameters,
    load_model_config,
)
from benchmark.models.__main__ import registry_table
from benchmark.models.registry import CONFIG_KEYS, model_config_dir

CONTRACT_NAMES = {
    "nnunet",
    "stunet_b",
    "stunet_l",
    "stunet_h",
    "swinunetr",
    "unetr",
    "medformer",
    "tiny_nnunet",
    "tiny_stunet",
    "tiny_swinunetr",
    "tiny_unetr",
    "tiny_medformer",
}
# Published parameter counts in millions (BTCV setting: 1 input channel, 14 classes).
PUBLISHED = {
    "nnunet": 26.9,
    "stunet_b": 58.3,
    "stunet_l": 440.3,
    "stunet_h": 1457.3,
    "swinunetr": 62.2,
    "unetr": 92.4,
    "medformer": 36.6,
}
TINY = sorted(n for n in CONTRACT_NAMES if n.startswith("tiny_"))


def test_registry_holds_the_contract_names():
    assert set(available_models()) == CONTRACT_NAMES


@pytest.mark.parametrize("name", sorted(CONTRACT_NAMES))
def test_config_has_exactly_the_contract_keys_and_name_is_stem(name):
    cfg = load_model_config(name)
    assert list(cfg.keys()) == list(CONFIG_KEYS)
    assert cfg.name == name


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_full_size_parameter_count_within_5_percent_of_published(name):
    cfg = load_model_config(name)
    assert cfg.published_params_m == PUBLISHED[name]
    model = build_model(cfg, in_channels=1, num_classes=14, device="meta")
    assert all(p.is_meta for p in model.parameters())
    params_m = count_parameters(model) / 1e6
    assert abs(params_m - PUBLISHED[name]) / PUBLISHED[name] < 0.05, params_m


@pytest.mark.parametrize("name", TINY)
def test_tiny_model_is_small_and_maps_a_patch_to_class_logits(name):
    cfg = load_model_config(name)
    assert 1e5 < count_parameters(build_model(cfg, 1, 3, device="meta")) < 4.5e6
    size = tuple(cfg.patch_size)
    if name in ("tiny_nnunet", "tiny_medformer", "tiny_unetr"):
        # 32 per axis keeps this fast where the architecture allows it (UNETR: a 32^3 position
        # embedding); SwinUNETR and STU-Net need 64, since a 1^3 bottleneck cannot be instance-normalised.
        size = (32, 32, 32)
        if name == "tiny_unetr":
            cfg.net.img_size = list(size)
    model = build_model(cfg, in_channels=1, num_classes=3).eval()
    with torch.inference_mode():
        out = model(torch.randn(1, 1, *size))
    assert out.shape == (1, 3, *size)
    assert torch.isfinite(out).all()


def test_build_passes_dataset_channels_and_classes():
    model = build_model("tiny_nnunet", in_channels=2, num_classes=5, device="meta")
    state = model.state_dict()
    first = next(k for k in state if k.endswith("weight") and state[k].ndim == 5)
    assert state[first].shape[1] == 2
    last = [k for k in state if k.startswith("decoder.seg_layers") and k.endswith("weight")][-1]
    assert state[last].shape[0] == 5


def test_unknown_model_name_suggests_the_closest_and_lists_available():
    with pytest.raises(
        UnknownModelError, match=r"'tiny_nnunt'.*Did you mean 'tiny_nnunet'\?.*Available: .*unetr"
    ):
        load_model_config("tiny_nnunt")


def _write_variant(tmp_path: Path, name: str, **changes) -> Path:
    cfg = json.loads(json.dumps(load_model_config("tiny_nnunet")))
    cfg.update(changes)
    cfg["name"] = name
    (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(cfg))
    return tmp_path


def test_unknown_yaml_key_is_named(tmp_path):
    folder = _write_variant(tmp_path, "bad", dropout=0.1)
    with pytest.raises(ModelConfigError, match=r"bad\.yaml: unknown key\(s\) \['dropout'\]"):
        load_model_config("bad", conf_dir=folder)


def test_bad_enum_value_is_named_with_allowed_values(tmp_path):
    folder = _write_variant(tmp_path, "bad", family="rnn")
    with pytest.raises(
        ModelConfigError, match=r"family='rnn' is not one of \['cnn', 'hybrid', 'transformer'\]"
    ):
        load_model_config("bad", conf_dir=folder)


def test_name_must_equal_file_stem(tmp_path):
    shutil.copy(model_config_dir() / "tiny_nnunet.yaml", tmp_path / "renamed.yaml")
    with pytest.raises(ModelConfigError, match="must equal the file stem 'renamed'"):
        load_model_config("renamed", conf_dir=tmp_path)


def test_unknown_net_argument_is_reported_with_the_model_name():
    cfg = load_model_config("tiny_nnunet")
    cfg.net.widths = 3
    with pytest.raises(ModelConfigError, match=r"model 'tiny_nnunet': cannot build .*widths"):
        build_model(cfg, 1, 2, device="meta")


def test_unimportable_target_is_named():
    cfg = load_model_config("tiny_nnunet")
    cfg.net._target_ = "benchmark.models.nnunet.no_such_builder"
    with pytest.raises(ModelConfigError, match="has no attribute 'no_such_builder'"):
        build_model(cfg, 1, 2, device="meta")


def test_registry_table_reports_difference_to_published():
    table = registry_table().set_index("name")
    assert set(table.index) == CONTRACT_NAMES
    row = table.loc["unetr"]
    assert row.diff_pct == pytest.approx(100 * (row.params_m - 92.4) / 92.4, abs=0.1)
    assert pd.isna(table.loc["tiny_nnunet"].published_m) and pd.isna(
        table.loc["tiny_nnunet"].diff_pct
    )
