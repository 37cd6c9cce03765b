"""What the closed-form algorithms do to the W4A4 per-tensor logit error of the tiny networks on
held-out random inputs, relative to round to nearest (``none``). Each test prints its numbers;
the assertions state only what was measured to hold (the lists in each test name the methods
that do *not* help, which is a finding too)."""

from __future__ import annotations

import pytest
import torch

from benchmark.models import build_model, load_model_config, load_weights
from benchmark.quant import QuantSpec, calibrate, quantize


def _model(name: str) -> torch.nn.Module:
    cfg = load_model_config(name)
    model = build_model(cfg, 1, 9).eval()
    return load_weights(model, cfg).eval() if cfg.checkpoint == "shipped" else model


def _batches(n: int, size: int, seed: int) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(1, 1, size, size, size, generator=generator) for _ in range(n)]


def logit_errors(name, algorithms, size, n_calib, n_held):
    """Mean squared logit error vs float per algorithm, W4A4 per tensor."""
    model = _model(name)
    calib, held = _batches(n_calib, size, seed=0), _batches(n_held, size, seed=100)
    with torch.no_grad():
        reference = [model(x) for x in held]
    errors = {}
    for algorithm in algorithms:
        spec = QuantSpec("w4a4", "per_tensor", algorithm=algorithm)
        qmodel = calibrate(quantize(model, spec), calib)
        with torch.no_grad():
            mse = [
                float((qmodel(x) - r).pow(2).mean()) for x, r in zip(held, reference, strict=True)
            ]
        errors[algorithm] = sum(mse) / len(mse)
    print(name, {k: round(v, 4) for k, v in errors.items()})
    return errors


@pytest.mark.slow
def test_nnunet_small_inputs_only_bias_correction_helps():
    # measured over seeds 0, 1, 2 of this setting: bias correction lowers the error every time,
    # equalization raises it every time (reparam and smoothquant in two of three)
    errors = logit_errors(
        "tiny_nnunet", ["none", "equalization", "bias_correction"], size=32, n_calib=4, n_held=2
    )
    assert errors["bias_correction"] < errors["none"] < errors["equalization"]


@pytest.mark.slow
def test_nnunet_methods_reduce_the_error_at_the_roi_size():
    # measured over seeds 0, 1, 2 of this setting: every method below lowers the error (reparam
    # the most); on phantom CT patches of the same size reparam raises it and equalization is
    # neutral, so these gains depend on the input distribution
    algorithms = ["none", "equalization", "reparam", "smoothquant", "bias_correction"]
    errors = logit_errors("tiny_nnunet", algorithms, size=64, n_calib=4, n_held=2)
    for algorithm in algorithms[1:]:
        assert errors[algorithm] < errors["none"], algorithm
    assert errors["reparam"] < 0.95 * errors["none"]


@pytest.mark.slow
def test_swinunetr_methods_reduce_the_error():
    # measured over seeds 0 and 1 of this setting: smoothquant, hadamard and bias correction
    # lower the error both times; reparam lowers it at seed 0 and raises it at seed 1 (not
    # asserted); on phantom CT patches hadamard is neutral and reparam and equalization raise it
    algorithms = ["none", "smoothquant", "hadamard", "bias_correction"]
    errors = logit_errors("tiny_swinunetr", [*algorithms, "reparam"], 64, n_calib=4, n_held=2)
    for algorithm in algorithms[1:]:
        assert errors[algorithm] < errors["none"], algorithm
