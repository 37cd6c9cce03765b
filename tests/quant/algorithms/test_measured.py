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


# Measured at the seeds below on the baselines shipped on 2026-12-08 (tiny nnU-Net with 16/32
# features in its first stages, SwinUNETR after 120 epochs); on the earlier, weaker baselines
# bias correction helped the nnU-Net and equalization hurt it, and hadamard helped the SwinUNETR:
# which closed-form method helps depends on the trained weights, so each test names its margin.


@pytest.mark.slow
def test_nnunet_small_inputs_equalization_helps_bias_correction_does_not():
    # 32^3: none 3.479, equalization 3.292 (-5.4%), bias_correction 3.489 (+0.3%, neutral)
    errors = logit_errors(
        "tiny_nnunet", ["none", "equalization", "bias_correction"], size=32, n_calib=4, n_held=2
    )
    assert errors["equalization"] < 0.97 * errors["none"]
    assert errors["bias_correction"] > 0.99 * errors["none"]


@pytest.mark.slow
def test_nnunet_equalization_and_reparam_reduce_the_error_at_the_roi_size():
    # 64^3: none 6.194, equalization 5.715 (-7.7%), reparam 6.024 (-2.7%); smoothquant and bias
    # correction within 0.3% of none (not asserted)
    algorithms = ["none", "equalization", "reparam", "smoothquant", "bias_correction"]
    errors = logit_errors("tiny_nnunet", algorithms, size=64, n_calib=4, n_held=2)
    assert errors["equalization"] < 0.95 * errors["none"]
    assert errors["reparam"] < 0.99 * errors["none"]


@pytest.mark.slow
def test_swinunetr_bias_correction_and_smoothquant_help_rotations_do_not():
    # none 4.697, bias_correction 4.114 (-12.4%), smoothquant 4.514 (-3.9%), hadamard 4.962
    # (+5.6%), reparam 4.961 (+5.6%)
    algorithms = ["none", "smoothquant", "hadamard", "bias_correction", "reparam"]
    errors = logit_errors("tiny_swinunetr", algorithms, 64, n_calib=4, n_held=2)
    assert errors["bias_correction"] < 0.95 * errors["none"]
    assert errors["smoothquant"] < 0.98 * errors["none"]
    assert errors["hadamard"] > 1.02 * errors["none"]
    assert errors["reparam"] > 1.02 * errors["none"]
