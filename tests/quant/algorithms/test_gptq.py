"""GPTQ: equal to a direct numpy implementation of the paper's update on one Linear layer;
im2col writes convolutions as ``W X``; the baked weight requantizes to the GPTQ codes; the
cached state reproduces the model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from benchmark.quant import (
    QuantError,
    QuantSpec,
    calibrate,
    float_reference,
    load_ranges,
    quantize,
    save_ranges,
)
from benchmark.quant.algorithms.layer_inputs import input_columns, weight_matrix
from benchmark.quant.weight_quantizer import WeightQuantizer


def _reference_gptq(w, x, bits, per_row, damp, act_order):
    """GPTQ (Frantar et al. 2022, Algorithm 1) without lazy batching, in float64 numpy.

    ``H = 2 X X^T``, ``H += damp * mean(diag H) I``, ``U = chol(H^-1)^T`` (upper); for each
    column ``j``: ``q_j = quant(w_j)``, ``E = (w_j - q_j) / U_jj``, ``W[:, j:] -= E U[j, j:]``.
    The grid is the symmetric min-max one of the original weight; the element of largest
    magnitude of each scale group keeps its code ``±q_max``, so the grid's range survives.
    """
    qmax = 2 ** (bits - 1) - 1
    w = w.astype(np.float64).copy()
    top = np.abs(w).max(axis=1, keepdims=True) if per_row else np.abs(w).max(keepdims=True)
    scale = (top.astype(np.float32) / np.float32(qmax)).astype(np.float64)
    scale = np.broadcast_to(scale, w.shape)
    pinned = np.abs(w) == top
    pinned_codes = np.sign(w) * qmax
    h = 2 * x @ x.T
    h += damp * np.mean(np.diag(h)) * np.eye(len(h))
    order = np.argsort(-np.diag(h), kind="stable") if act_order else np.arange(len(h))
    w, h, scale = w[:, order], h[order][:, order], scale[:, order]
    pinned, pinned_codes = pinned[:, order], pinned_codes[:, order]
    u = np.linalg.cholesky(np.linalg.inv(h)).T
    codes = np.zeros_like(w)
    for j in range(w.shape[1]):
        q = np.clip(np.round(w[:, j] / scale[:, j]), -qmax, qmax)
        q = np.where(pinned[:, j], pinned_codes[:, j], q)
        codes[:, j] = q
        error = (w[:, j] - q * scale[:, j]) / u[j, j]
        w[:, j:] -= np.outer(error, u[j, j:])
    return codes[:, np.argsort(order)]


def _linear_batches(n, features, seed):
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(features, features, generator=g)  # correlated inputs: a non-diagonal H
    return [torch.randn(16, features, generator=g) @ mix for _ in range(n)]


@pytest.mark.parametrize(
    ("granularity", "options"),
    [
        ("per_tensor", {"block_size": 5, "damp": 0.01}),
        ("per_channel_token", {"block_size": 128, "damp": 0.1, "act_order": True}),
    ],
)
def test_gptq_on_a_linear_layer_equals_the_numpy_reference(granularity, options):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(12, 5)).eval()
    batches = _linear_batches(4, 12, seed=1)
    spec = QuantSpec("w4a16", granularity, algorithm="gptq", algorithm_options=options)
    qmodel = calibrate(quantize(model, spec), batches)
    layer = qmodel[0]
    with torch.no_grad():  # clone: a layer-input quantizer reuses one output buffer
        x = torch.cat([layer.input_quant(b).clone() for b in batches]).double().numpy().T
    expected = _reference_gptq(
        model[0].weight.detach().numpy(),
        x,
        bits=4,
        per_row=granularity != "per_tensor",
        damp=options["damp"],
        act_order=options.get("act_order", False),
    )
    codes = layer.weight_quant.codes(layer.weight)[0].numpy()
    rtn = WeightQuantizer(4, layer.weight_quant.granularity, "symmetric", "minmax")
    rtn_codes = rtn.codes(model[0].weight)[0].numpy()
    assert np.array_equal(codes, expected)
    assert not np.array_equal(codes, rtn_codes)  # the update changed some codes


def _conv_model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv3d(2, 6, 3, padding=1),
        nn.LeakyReLU(0.01),
        nn.Conv3d(6, 6, 3, stride=2, padding=1, dilation=1, groups=2),
        nn.LeakyReLU(0.01),
        nn.ConvTranspose3d(6, 4, 2, stride=2),
        nn.Conv3d(4, 3, 1),
    ).eval()


def _volumes(n, seed, size=8):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(1, 2, size, size, size, generator=g) for _ in range(n)]


@pytest.mark.parametrize(
    ("layer", "shape"),
    [
        (nn.Conv3d(4, 6, 3, stride=2, padding=1, groups=2), (2, 4, 6, 5, 7)),
        (
            nn.Conv3d(
                3, 5, (3, 1, 3), dilation=(2, 1, 1), padding=(2, 0, 1), padding_mode="reflect"
            ),
            (2, 3, 6, 5, 7),
        ),
        (nn.Conv2d(3, 4, 3, stride=(1, 2)), (2, 3, 7, 9)),
        (nn.ConvTranspose3d(4, 3, 2, stride=2), (2, 4, 3, 2, 4)),
        (nn.Linear(5, 7), (2, 3, 5)),
    ],
)
def test_im2col_writes_the_layer_as_a_matrix_product(layer, shape):
    x = torch.randn(*shape)
    with torch.no_grad():
        bias = (
            layer.bias if isinstance(layer, nn.Linear) else layer.bias.view(-1, *[1] * (x.ndim - 2))
        )
        expected = layer(x) - bias
        columns = torch.cat(list(input_columns(layer, x)), dim=-1)
        product = weight_matrix(layer) @ columns  # [groups, rows, positions]
    if isinstance(layer, nn.Linear):
        got = product[0].t().reshape(expected.shape)
    elif isinstance(layer, nn.ConvTranspose3d):
        # rows (C_out, kd, kh, kw) x input voxels (b, d, h, w) -> [b, C_out, d kd, h kh, w kw]
        b, _, d, h, w = x.shape
        got = product[0].reshape(3, 2, 2, 2, b, d, h, w).permute(4, 0, 5, 1, 6, 2, 7, 3)
        got = got.reshape(expected.shape)
    else:
        groups, rows = product.shape[:2]
        out = product.reshape(groups * rows, x.shape[0], *expected.shape[2:]).transpose(0, 1)
        got = out.reshape(expected.shape)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mapping", ["symmetric", "asymmetric"])
def test_baked_weights_requantize_to_the_gptq_codes_and_beat_round_to_nearest(mapping):
    model = _conv_model()
    calib, held_out = _volumes(6, seed=1), _volumes(4, seed=2)
    qmodels = {
        alg: calibrate(
            quantize(model, QuantSpec("w3a8", algorithm=alg, weight_mapping=mapping)), calib
        )
        for alg in ("none", "gptq")
    }
    for name, layer in qmodels["gptq"].named_modules():
        if hasattr(layer, "weight_quant"):
            fresh = WeightQuantizer(3, layer.weight_quant.granularity, mapping, "minmax")
            codes = layer.weight_quant.codes(layer.weight)[0]
            assert torch.equal(fresh.codes(layer.weight)[0], codes), name
            assert torch.equal(fresh(layer.weight), layer.weight.detach()), name
    with torch.no_grad():
        errors = {
            alg: sum(float((q(x) - model(x)).square().sum()) for x in held_out)
            for alg, q in qmodels.items()
        }
    assert errors["gptq"] < 0.9 * errors["none"], errors


def test_cached_gptq_state_reproduces_the_model(tmp_path):
    model = _conv_model()
    spec = QuantSpec("w4a8", "per_channel_token", algorithm="gptq")
    calib = _volumes(3, seed=1)
    calibrated = calibrate(quantize(model, spec), calib)
    loaded = load_ranges(quantize(model, spec), save_ranges(calibrated, tmp_path / "r.pt"))
    x = _volumes(1, seed=5)[0]
    with torch.no_grad():
        assert torch.equal(loaded(x), calibrated(x))
        assert not torch.equal(
            loaded(x), calibrate(quantize(model, QuantSpec("w4a8", "per_channel_token")), calib)(x)
        )


def test_gptq_is_deterministic_and_refuses_unknown_options():
    model = _conv_model()
    calib = _volumes(3, seed=1)
    runs = [
        calibrate(quantize(model, QuantSpec("w4a8", algorithm="gptq")), calib) for _ in range(2)
    ]
    for a, b in zip(runs[0].parameters(), runs[1].parameters(), strict=True):
        assert torch.equal(a, b)
    spec = QuantSpec("w4a8", algorithm="gptq", algorithm_options={"dampening": 0.1})
    with pytest.raises(QuantError, match="unknown option"):
        calibrate(quantize(model, spec), calib)


def test_gptq_on_a_searched_weight_grid_keeps_that_grid_and_beats_its_round_to_nearest(tmp_path):
    """With ``weight_observer='mse'`` the grid searched on the original weight is frozen (a
    search on the rewritten weight would move it): every baked weight requantizes to the GPTQ
    codes on exactly the scale a fresh search of the FP32 weight finds, the held-out error is
    below round to nearest on that grid, and the cached state reproduces the model."""
    model = _conv_model()
    calib, held_out = _volumes(6, seed=1), _volumes(4, seed=2)
    qmodels = {
        alg: calibrate(
            quantize(model, QuantSpec("w3a16", algorithm=alg, weight_observer="mse")),
            calib,
        )
        for alg in ("none", "gptq")
    }
    originals = dict(model.named_modules())
    changed = 0
    for name, layer in qmodels["gptq"].named_modules():
        if not hasattr(layer, "weight_quant"):
            continue
        searched = WeightQuantizer(3, layer.weight_quant.granularity, "symmetric", "mse")
        rtn_codes, scale, _ = searched.codes(originals[name].weight)
        assert torch.equal(layer.weight_quant.scale, scale), name
        codes = layer.weight_quant.codes(layer.weight)[0]
        changed += int((codes != rtn_codes).sum())
        assert torch.equal(layer.weight_quant(layer.weight), layer.weight.detach()), name
    assert changed > 0
    with torch.no_grad():
        errors = {
            alg: sum(float((q(x) - model(x)).square().sum()) for x in held_out)
            for alg, q in qmodels.items()
        }
    assert errors["gptq"] < 0.95 * errors["none"], errors
    spec = QuantSpec("w3a16", algorithm="gptq", weight_observer="mse")
    loaded = load_ranges(quantize(model, spec), save_ranges(qmodels["gptq"], tmp_path / "r.pt"))
    with torch.no_grad():
        assert torch.equal(loaded(held_out[0]), qmodels["gptq"](held_out[0]))


def test_the_float_reference_of_a_rounded_model_is_still_the_fp32_network():
    """GPTQ bakes codes into the float weights; the methods after it (bias correction, BRECQ's
    later blocks) fit to ``float_reference``, which must compute the FP32 function, and the
    quantized forward must still use the baked weights."""
    model = _conv_model()
    calib = _volumes(3, seed=1)
    qmodel = calibrate(quantize(model, QuantSpec("w3a8", algorithm="gptq")), calib)
    x = _volumes(1, seed=5)[0]
    plain = calibrate(quantize(model, QuantSpec("w3a8")), calib)
    with torch.no_grad():
        quantized = qmodel(x)
        with float_reference(qmodel):
            assert torch.equal(qmodel(x), model(x))
        assert torch.equal(qmodel(x), quantized)
        assert not torch.equal(quantized, plain(x))
