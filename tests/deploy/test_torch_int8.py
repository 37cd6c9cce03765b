"""PyTorch x86 INT8: FX graph mode with the x86 observers, real quantized kernels, eager fallback,
and the same through PyTorch's QAT flow."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.ao.nn import quantized as nnq
from torch.ao.quantization import HistogramObserver, MinMaxObserver

from benchmark.deploy.ort_quant import needs_reduce_range
from benchmark.deploy.torch_int8 import TorchPredictor, TorchQat, op_counts, quantize_convs
from benchmark.quant.algorithms.qat import distillation_loss


def _input_qparams(qmodel: nn.Module) -> tuple[float, int]:
    """Scale and zero point of the first ``quantize_per_tensor`` of an FX-converted model."""
    node = next(n for n in qmodel.graph.nodes if n.target == torch.quantize_per_tensor)
    _, scale, zero_point, _ = node.args
    return float(getattr(qmodel, scale.target)), int(getattr(qmodel, zero_point.target))


def test_fx_flow_with_histogram_activations_and_per_channel_weights(
    tiny_unet, calibration_batches, test_inputs
):
    qmodel = quantize_convs(tiny_unet, calibration_batches)
    assert qmodel.int8_flow == "fx"
    convs = {n: m for n, m in qmodel.named_modules() if isinstance(m, nnq.Conv3d)}
    assert set(convs) == {"enc.0", "down.0", "head"}  # ConvTranspose3d stays float
    weight = convs["enc.0"].weight()
    assert weight.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric)
    assert weight.q_per_channel_scales().numel() == tiny_unet.enc[0].out_channels
    # the stem's input range is the histogram observer's, not min/max
    reduce = needs_reduce_range()
    histogram, minmax = HistogramObserver(reduce_range=reduce), MinMaxObserver(reduce_range=reduce)
    for batch in calibration_batches:
        histogram(batch)
        minmax(batch)
    scale, zero_point = _input_qparams(qmodel)
    expected_scale, expected_zp = histogram.calculate_qparams()
    assert scale == float(expected_scale) and zero_point == int(expected_zp)
    assert scale != float(minmax.calculate_qparams()[0])
    out = TorchPredictor(qmodel, threads=1)(test_inputs.numpy())
    ref = tiny_unet(test_inputs).detach().numpy()
    assert np.mean(out.argmax(1) == ref.argmax(1)) > 0.95


class _ShapeDependent(nn.Module):
    """Pads by the input's size in Python (as MONAI's SwinUNETR does): FX cannot trace it."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv3d(1, 4, 3, padding=1)
        self.head = nn.Conv3d(4, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] % 2:
            x = nn.functional.pad(x, (0, 1))
        return self.head(torch.relu(self.conv(x)))


def test_untraceable_networks_fall_back_to_eager_mode(calibration_batches, test_inputs):
    torch.manual_seed(0)
    model = _ShapeDependent().eval()
    qmodel = quantize_convs(model, calibration_batches, keep_float=["head"])
    assert qmodel.int8_flow == "eager"
    counts = op_counts(qmodel).set_index("op_type")["count"]
    assert counts["Conv3d:int8"] == 1 and counts["Conv3d"] == 1
    out = TorchPredictor(qmodel, threads=1)(test_inputs.numpy())
    ref = model(test_inputs).detach().numpy()
    # a mean, not a max: the histogram observer clips outliers by design, and how far depends
    # on the activation grid (7-bit without VNNI, 8-bit with it)
    assert np.abs(out - ref).mean() < 0.05 * np.abs(ref).mean()
    assert np.mean(out.argmax(1) == ref.argmax(1)) > 0.98


def _int8_distillation(qmodel: nn.Module, model: nn.Module, x: torch.Tensor) -> float:
    """Per-voxel KL of the INT8 model's class probabilities from the FP32 model's."""
    out = torch.from_numpy(TorchPredictor(qmodel, threads=1)(x.numpy()))
    return float(distillation_loss(out, model(x).detach()))


def test_the_qat_flow_fine_tunes_towards_fp32_then_runs_integer_kernels(
    tiny_unet, calibration_batches
):
    patches = torch.cat(calibration_batches)
    # the same flow and ranges, with weights that (practically) do not move
    frozen = quantize_convs(tiny_unet, calibration_batches, qat=TorchQat(32, 1e-12))
    tuned = quantize_convs(tiny_unet, calibration_batches, qat=TorchQat(32, 1e-3))
    assert tuned.int8_flow == frozen.int8_flow == "fx+qat"
    counts = op_counts(tuned).set_index("op_type")["count"]
    assert counts["Conv3d:int8"] == 3 and counts["ConvTranspose3d"] == 1
    assert _int8_distillation(tuned, tiny_unet, patches) < _int8_distillation(
        frozen, tiny_unet, patches
    )
    assert all(p.grad is None for p in tiny_unet.parameters())  # the FP32 model is not trained
    static = quantize_convs(tiny_unet, calibration_batches, qat=TorchQat(0, 1e-3))
    assert static.int8_flow == "fx"  # no steps: static PTQ


def test_the_qat_flow_falls_back_to_eager_mode_too(calibration_batches, test_inputs):
    torch.manual_seed(0)
    model = _ShapeDependent().eval()
    qmodel = quantize_convs(model, calibration_batches, qat=TorchQat(4, 1e-4))
    assert qmodel.int8_flow == "eager+qat"
    assert op_counts(qmodel).set_index("op_type")["count"]["Conv3d:int8"] == 2
    out = TorchPredictor(qmodel, threads=1)(test_inputs.numpy())
    ref = model(test_inputs).detach().numpy()
    # moving-average ranges clip the test inputs' rarest values: bound the mean error
    assert np.abs(out - ref).mean() < 0.05 * np.abs(ref).mean()
