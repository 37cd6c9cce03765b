"""A fake dataset and network behind the real quantization engine, so a whole sensitivity run
takes seconds (the fakes of tests/run stand in for benchmark.data and benchmark.models)."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir

import benchmark.data
import benchmark.models
from tests.run.conftest import CONF, FakeDataset, FakeNet, fake_calibration_patches


@pytest.fixture
def fake_data(monkeypatch) -> FakeDataset:
    """Replace the data and model entry points (not the quantizer) by the tiny fakes."""
    dataset = FakeDataset()

    monkeypatch.setattr(benchmark.data, "open_dataset", lambda cfg: dataset)
    monkeypatch.setattr(benchmark.data, "calibration_patches", fake_calibration_patches)
    monkeypatch.setattr(
        benchmark.models, "build_model", lambda cfg, c, k, device="cpu": FakeNet(c, k)
    )
    monkeypatch.setattr(benchmark.models, "load_weights", lambda model, cfg: model)
    return dataset


@pytest.fixture
def sensitivity_cfg(tmp_path):
    """``sensitivity_cfg(*overrides)``: a composed ``task=sensitivity`` config under tmp_path."""

    def _make(*overrides: str):
        base = [
            "task=sensitivity",
            "model=tiny_nnunet",
            "model.checkpoint=null",
            "model.patch_size=[16,16,16]",
            "precision=w4a4",
            "granularity=per_tensor",
            f"paths.results_dir={tmp_path / 'results'}",
            f"paths.cache_dir={tmp_path / 'cache'}",
            f"paths.log_dir={tmp_path / 'outputs'}",
            "run.progress=false",
            "calibration.n=2",
            "evaluation.max_cases=1",
            "sensitivity.stats_patches=1",
            "sensitivity.stats_granularities=[per_tensor,adaptive]",
        ]
        with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
            return compose("config", overrides=base + list(overrides))

    return _make
