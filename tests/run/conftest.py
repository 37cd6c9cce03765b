"""Compose fixture and tiny stand-ins for the data and the network, so run_point runs in a
second on the CPU.

The stand-ins follow the contracts of benchmark.data and benchmark.models (a dataset of two
16^3 cases, a three-convolution network); the config-to-spec mapping, the quant engine, the
metrics and sliding-window inference are the real ones (the engine's calibrate and load_ranges
are only counted).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from torch import nn

import benchmark.config  # noqa: F401  (registers the schemas)
import benchmark.data
import benchmark.infer
import benchmark.models
import benchmark.quant

CONF = Path(__file__).resolve().parents[2] / "conf"


@dataclasses.dataclass
class FakeCase:
    case_id: str
    image: torch.Tensor
    label: np.ndarray
    spacing_mm: tuple[float, float, float]

    def restore(self, probs: torch.Tensor) -> torch.Tensor:
        return probs.float()


class FakeDataset:
    """Two train, one val and two test cases of a bright cube (class 1) beside a bar (class 2)."""

    name = "fake"
    labels = {0: "background", 1: "cube", 2: "bar"}
    num_classes = 3
    in_channels = 1

    def __init__(self):
        self.prepared: list[str] = []

    def split(self, name: str) -> list[str]:
        return {"train": ["t0", "t1"], "val": ["v0"], "test": ["c0", "c1"]}[name]

    def prepare(self, case_id: str) -> FakeCase:
        self.prepared.append(case_id)
        rng = np.random.default_rng(abs(hash(case_id)) % 2**32)
        label = np.zeros((16, 16, 16), dtype=np.int64)
        label[4:10, 4:10, 4:10] = 1
        label[12:14, 2:14, 6:8] = 2
        image = label.astype(np.float32) + 0.1 * rng.standard_normal(label.shape).astype(np.float32)
        return FakeCase(case_id, torch.from_numpy(image)[None], label, (2.0, 1.0, 1.0))


class FakeNet(nn.Module):
    def __init__(self, in_channels: int, num_classes: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv3d(in_channels, 4, 3, padding=1), nn.ReLU(), nn.Conv3d(4, 4, 3, padding=1)
        )
        self.head = nn.Conv3d(4, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.body(x)))


def fake_calibration_patches(
    ds, split="train", n=16, roi_size=(16, 16, 16), seed=0, batch_size=1, with_labels=False
):
    """The contract of benchmark.data.calibration_patches on random volumes."""
    assert split in ("train", "val"), split
    gen = torch.Generator().manual_seed(seed)
    images = [
        torch.randn(batch_size, 1, *roi_size, generator=gen) for _ in range(-(-n // batch_size))
    ]
    if not with_labels:
        return images
    # the stand-in's classes: bright voxels are the cube, dark ones the bar
    return [(x, (x > 0.5).long() + 2 * (x < -1.0).long()) for x in images]


class Calls:
    """Counters the tests read: how often each expensive step ran."""

    def __init__(self):
        self.calibrate = 0
        self.load_ranges = 0
        self.build = 0
        self.predict_fp32 = 0  # sliding-window predictions of the floating-point network
        self.predict_quantized = 0


@pytest.fixture
def calls() -> Calls:
    return Calls()


@pytest.fixture
def fake_layers(monkeypatch, tmp_path, calls) -> FakeDataset:
    """Replace the data and model entry points by the stand-ins above and count the engine's
    calibrations; returns the dataset."""
    dataset = FakeDataset()

    def build_model(model_cfg, in_channels, num_classes, device="cpu"):
        calls.build += 1
        return FakeNet(in_channels, num_classes)

    real_calibrate, real_load = benchmark.quant.calibrate, benchmark.quant.load_ranges

    def calibrate(qmodel, batches: Iterable[torch.Tensor]):
        calls.calibrate += 1
        return real_calibrate(qmodel, batches)

    def load_ranges(qmodel, path):
        calls.load_ranges += 1
        return real_load(qmodel, path)

    predict = benchmark.infer.predict_probabilities

    def counted_predict(model, *args, **kwargs):
        if getattr(model, "quant_spec", None) is not None:
            calls.predict_quantized += 1
        else:
            calls.predict_fp32 += 1
        return predict(model, *args, **kwargs)

    monkeypatch.setattr(benchmark.infer, "predict_probabilities", counted_predict)
    monkeypatch.setattr(benchmark.data, "open_dataset", lambda cfg: dataset, raising=False)
    monkeypatch.setattr(
        benchmark.data, "calibration_patches", fake_calibration_patches, raising=False
    )
    monkeypatch.setattr(benchmark.models, "build_model", build_model, raising=False)
    monkeypatch.setattr(benchmark.models, "load_weights", lambda model, cfg: model, raising=False)
    monkeypatch.setattr(
        benchmark.models,
        "count_parameters",
        lambda m: sum(p.numel() for p in m.parameters()),
        raising=False,
    )
    monkeypatch.setattr(benchmark.quant, "calibrate", calibrate)
    monkeypatch.setattr(benchmark.quant, "load_ranges", load_ranges)
    return dataset


@pytest.fixture
def make_cfg(tmp_path):
    """``make_cfg(*overrides)``: a composed config writing under ``tmp_path`` (fake-sized)."""

    def _make(*overrides: str, hydra_config: bool = False):
        base = [
            "model=tiny_nnunet",
            "model.checkpoint=null",
            "model.patch_size=[16,16,16]",
            f"paths.results_dir={tmp_path / 'results'}",
            f"paths.cache_dir={tmp_path / 'cache'}",
            f"paths.log_dir={tmp_path / 'outputs'}",
            "run.progress=false",
            "calibration.n=2",
        ]
        with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
            return compose(
                "config", overrides=base + list(overrides), return_hydra_config=hydra_config
            )

    return _make
