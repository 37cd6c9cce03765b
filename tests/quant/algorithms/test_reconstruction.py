"""BRECQ and QDrop: blocks found from the module tree; block reconstruction beats round to
nearest on held-out inputs at 4 and 3 weight bits; learned activation steps end in ordinary
buffers, so the cached state reproduces the model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from benchmark.models import build_model, load_model_config
from benchmark.models.nnunet import build_nnunet
from benchmark.quant import (
    QuantError,
    QuantSpec,
    calibrate,
    float_reference,
    load_ranges,
    quantize,
    save_ranges,
)
from benchmark.quant.algorithms.reconstruction import find_blocks, prediction_kl
from benchmark.quant.quantizer import ActivationQuantizer

FAST = {"iters": 80}
MODELS = Path(__file__).resolve().parents[3] / "conf" / "model"


def _unet() -> nn.Module:
    torch.manual_seed(0)
    return build_nnunet(
        1,
        3,
        n_stages=2,
        features_per_stage=(4, 8),
        strides=(1, 2),
        n_conv_per_stage=2,
        n_conv_per_stage_decoder=1,
    ).eval()


def _volumes(n: int, seed: int, size: int = 12) -> list[torch.Tensor]:
    """Smooth random volumes (blurred noise), so convolutions see correlated neighbours."""
    g = torch.Generator().manual_seed(seed)
    noise = [torch.randn(1, 1, size + 2, size + 2, size + 2, generator=g) for _ in range(n)]
    return [nn.functional.avg_pool3d(x, 3, stride=1) for x in noise]


def _error(model, qmodel, volumes) -> float:
    with torch.no_grad():
        return sum(float((qmodel(x) - model(x)).square().sum()) for x in volumes)


def test_blocks_of_the_tiny_nnunet_are_its_stages_upsamplings_and_heads():
    model = build_model(load_model_config("tiny_nnunet", conf_dir=MODELS), 1, 9).eval()
    qmodel = quantize(model, QuantSpec("w4a8"))
    names = {id(m): n for n, m in qmodel.named_modules()}
    blocks = [names[id(b)] for b in find_blocks(qmodel, 8)]
    assert blocks == (
        [f"encoder.stages.{i}" for i in range(5)]
        + [f"decoder.stages.{i}" for i in range(4)]
        + [f"decoder.transpconvs.{i}" for i in range(4)]
        + [f"decoder.seg_layers.{i}" for i in range(4)]
    )
    # a smaller limit splits a stage into its conv-norm-nonlinearity units
    assert names[id(find_blocks(qmodel, 1)[0])] == "encoder.stages.0.0.convs.0"


@pytest.mark.parametrize("algorithm", ["brecq", "qdrop"])
@pytest.mark.parametrize("precision", ["w4a8", "w3a8"])
def test_block_reconstruction_beats_round_to_nearest_on_held_out_inputs(algorithm, precision):
    model = _unet()
    calib, held_out = _volumes(4, seed=1), _volumes(3, seed=2)
    plain = calibrate(quantize(model, QuantSpec(precision)), calib)
    spec = QuantSpec(precision, algorithm=algorithm, algorithm_options=FAST)
    reconstructed = calibrate(quantize(model, spec), calib)
    assert _error(model, reconstructed, held_out) < 0.95 * _error(model, plain, held_out)


@pytest.mark.parametrize("algorithm", ["brecq", "qdrop"])
def test_reconstruction_on_searched_weight_grids_beats_them_and_fits_the_fp32_network(algorithm):
    """After ``tuned_rtn`` (searched weight and activation ranges) the rounding is learned on
    each searched grid, frozen; the result beats round to nearest on those grids, and the
    float reference later blocks fit to is still the FP32 network."""
    model = _unet()
    calib, held_out = _volumes(4, seed=1), _volumes(3, seed=2)
    tuned = calibrate(quantize(model, QuantSpec("w3a8", algorithm="tuned_rtn")), calib)
    spec = QuantSpec(
        "w3a8", algorithm=f"tuned_rtn+{algorithm}", algorithm_options={algorithm: FAST}
    )
    reconstructed = calibrate(quantize(model, spec), calib)
    assert _error(model, reconstructed, held_out) < 0.95 * _error(model, tuned, held_out)
    with torch.no_grad(), float_reference(reconstructed):
        assert torch.equal(reconstructed(held_out[0]), model(held_out[0]))


def test_prediction_loss_reconstructs_the_class_probabilities():
    model = _unet()
    calib, held_out = _volumes(4, seed=1), _volumes(3, seed=2)
    kl = {}
    for options in ({}, {"loss": "prediction", "iters": 40}):
        algorithm = "brecq" if options else "none"
        spec = QuantSpec("w4a4", algorithm=algorithm, algorithm_options=options)
        qmodel = calibrate(quantize(model, spec), calib)
        with torch.no_grad():
            kl[algorithm] = sum(float(prediction_kl(qmodel(x), model(x))) for x in held_out)
    assert kl["brecq"] < 0.8 * kl["none"], kl


def test_learned_steps_are_buffers_and_the_cached_state_reproduces_the_model(tmp_path):
    model = _unet()
    calib = _volumes(3, seed=1)
    spec = QuantSpec("w4a4", algorithm="qdrop", algorithm_options={"iters": 30})
    calibrated = calibrate(quantize(model, spec), calib)
    plain = calibrate(quantize(model, QuantSpec("w4a4")), calib)
    fresh = quantize(model, spec)
    assert calibrated.state_dict().keys() == plain.state_dict().keys()
    steps = {
        n: (q.scale, plain.get_submodule(n).scale)
        for n, q in calibrated.named_modules()
        if isinstance(q, ActivationQuantizer)
    }
    assert not any(isinstance(learned, nn.Parameter) for learned, _ in steps.values())
    assert any(not torch.equal(learned, calibrated_) for learned, calibrated_ in steps.values())
    loaded = load_ranges(fresh, save_ranges(calibrated, tmp_path / "r.pt"))
    x = _volumes(1, seed=9)[0]
    with torch.no_grad():
        assert torch.equal(loaded(x), calibrated(x))


def test_reconstruction_is_deterministic_and_checks_its_loss_option():
    model = _unet()
    calib = _volumes(2, seed=1)
    spec = QuantSpec("w4a8", algorithm="qdrop", algorithm_options={"iters": 20})
    first, second = (calibrate(quantize(model, spec), calib) for _ in range(2))
    for (name, a), b in zip(first.state_dict().items(), second.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    wrong = QuantSpec("w4a8", algorithm="brecq", algorithm_options={"loss": "dice"})
    with pytest.raises(QuantError, match="loss='dice' is not one of block, prediction"):
        calibrate(quantize(model, wrong), calib)
