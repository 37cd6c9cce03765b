"""The closed-form algorithms on the registry's tiny networks: the float function is unchanged,
bias correction zeroes the logits' mean error, and the W4A4 per-tensor logit error they leave
on held-out inputs, measured against round to nearest (``none``)."""

from __future__ import annotations

import pytest
import torch

from benchmark.models import build_model, load_model_config, load_weights
from benchmark.quant import QuantSpec, calibrate, float_reference, quantize
from benchmark.quant.algorithms.bias_correction import correctable_layers
from benchmark.quant.algorithms.equalization import equalization_pairs
from benchmark.quant.algorithms.graph import trace

ALGORITHMS = ["equalization", "smoothquant", "hadamard", "reparam"]


def _model(name: str) -> torch.nn.Module:
    cfg = load_model_config(name)
    model = build_model(cfg, 1, 9).eval()
    return load_weights(model, cfg).eval() if cfg.checkpoint == "shipped" else model


def _batches(n: int, size: int, seed: int) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(1, 1, size, size, size, generator=generator) for _ in range(n)]


@pytest.fixture(scope="module")
def nnunet():
    return _model("tiny_nnunet")


@pytest.fixture(scope="module")
def swinunetr():
    return _model("tiny_swinunetr")


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("name", ["nnunet", pytest.param("swinunetr", marks=pytest.mark.slow)])
def test_float_function_unchanged(name, algorithm, request):
    model = request.getfixturevalue(name)
    size = 32 if name == "nnunet" else 64  # Swin's bottleneck InstanceNorm needs > 1 voxel
    batches = _batches(1, size, seed=0)
    spec = QuantSpec("w4a4", "per_tensor", algorithm=algorithm)
    qmodel = calibrate(quantize(model, spec), batches)
    x = _batches(1, size, seed=5)[0]
    with torch.no_grad():
        want = model(x)
        with float_reference(qmodel):
            got = qmodel(x)
    assert float((got - want).abs().max()) <= 1e-5 * float(want.abs().max())


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_float_function_unchanged_unetr(algorithm):
    model = _model("tiny_unetr")
    batches = _batches(1, 64, seed=0)
    spec = QuantSpec("w4a4", "per_tensor", algorithm=algorithm)
    qmodel = calibrate(quantize(model, spec), batches)
    x = _batches(1, 64, seed=5)[0]
    with torch.no_grad():
        want = model(x)
        with float_reference(qmodel):
            got = qmodel(x)
    assert float((got - want).abs().max()) <= 1e-5 * float(want.abs().max())


def test_nnunet_pairs_and_corrected_layers(nnunet):
    qmodel = quantize(nnunet, QuantSpec("w4a4", "per_tensor"))
    graph = trace(qmodel, _batches(1, 32, seed=0)[0])
    names = {m: n for n, m in qmodel.named_modules()}
    pairs = {(names[a], names[b]) for a, b in equalization_pairs(graph)}
    # norm -> LeakyReLU -> next layer only: never conv -> conv through the norm, never from an
    # encoder stage's output, which the decoder's concatenation reads too (the bottleneck's is not)
    encoder = {
        (f"encoder.stages.{i}.0.convs.0.norm", f"encoder.stages.{i}.0.convs.1.conv")
        for i in range(5)
    }
    decoder = {
        (f"decoder.stages.{i}.convs.0.norm", f"decoder.stages.{i}.convs.1.conv") for i in range(4)
    }
    upsampling = {("encoder.stages.4.0.convs.1.norm", "decoder.transpconvs.0")} | {
        (f"decoder.stages.{i}.convs.1.norm", f"decoder.transpconvs.{i + 1}") for i in range(3)
    }
    head = {("decoder.stages.3.convs.1.norm", "decoder.seg_layers.3")}
    assert pairs == encoder | decoder | upsampling | head
    corrected = {n for n, m in qmodel.named_modules() if m in correctable_layers(graph)}
    assert corrected == {f"decoder.transpconvs.{i}" for i in range(4)} | {"decoder.seg_layers.3"}


def test_bias_correction_zeroes_the_logit_mean_error(nnunet):
    batches = _batches(2, 32, seed=0)
    spec = QuantSpec("w4a4", "per_tensor", algorithm="bias_correction")
    qmodel = calibrate(quantize(nnunet, spec), batches)
    with torch.no_grad():
        error = torch.cat([qmodel(x) - nnunet(x) for x in batches])
    assert float(error.mean(dim=(0, 2, 3, 4)).abs().max()) < 1e-5
