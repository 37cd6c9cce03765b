"""Closed-form PTQ algorithms: each rewrite keeps the float function, acts where it claims to
(and only there), composes, and is cached with the ranges."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from benchmark.quant import (
    QuantSpec,
    calibrate,
    float_reference,
    load_ranges,
    quantize,
    save_ranges,
)
from benchmark.quant.algorithms.bias_correction import correctable_layers
from benchmark.quant.algorithms.equalization import equalization_pairs
from benchmark.quant.algorithms.graph import trace
from benchmark.quant.algorithms.hadamard import hadamard_matrix, rotation_matrix
from benchmark.quant.algorithms.reparam import reparam_pairs
from tests.quant.algorithms.nets import Hybrid, PaddedTokens, token_batches, volume_batches

CLOSED_FORM = ["equalization", "smoothquant", "hadamard", "reparam"]
ALL = [*CLOSED_FORM, "bias_correction"]


def _float_outputs(qmodel, batches):
    with torch.no_grad(), float_reference(qmodel):
        return [qmodel(x) for x in batches]


def _outputs(model, batches):
    with torch.no_grad():
        return [model(x) for x in batches]


def _assert_same_function(qmodel, model, batches, tolerance=1e-5):
    """Float outputs equal to ``tolerance`` of the output's magnitude."""
    for got, want in zip(_float_outputs(qmodel, batches), _outputs(model, batches), strict=True):
        scale = float(want.abs().max())
        assert float((got - want).abs().max()) <= tolerance * scale


@pytest.mark.parametrize("algorithm", CLOSED_FORM)
@pytest.mark.parametrize(
    ("net", "batches"),
    [(Hybrid, volume_batches), (PaddedTokens, token_batches)],
    ids=["hybrid", "padded_tokens"],
)
def test_transform_keeps_the_float_function(algorithm, net, batches):
    model = net().eval()
    spec = QuantSpec("w4a4", "per_tensor", algorithm=algorithm)
    qmodel = calibrate(quantize(model, spec), batches())
    held_out = batches(seed=11)
    _assert_same_function(qmodel, model, held_out)
    plain = calibrate(quantize(model, QuantSpec("w4a4", "per_tensor")), batches())
    # and it did rewrite something: the quantized function differs from round to nearest
    assert not torch.equal(_outputs(qmodel, held_out)[0], _outputs(plain, held_out)[0])


def test_pairs_are_found_only_where_the_rewrite_is_exact():
    model = Hybrid().eval()
    qmodel = quantize(model, QuantSpec("w4a4", "per_tensor"))
    graph = trace(qmodel, volume_batches(1)[0])
    pairs = [(type(a).__name__, b) for a, b in equalization_pairs(graph)]
    # the InstanceNorm's affine (not the stem conv) pairs with conv, the first LayerNorm with fc1;
    # fc2 (after GELU), the head (after a permute) and the stem (InstanceNorm) pair with nothing
    assert pairs == [("InstanceNorm3d", qmodel.conv), ("LayerNorm", qmodel.fc1)]
    assert correctable_layers(graph) == [qmodel.conv, qmodel.fc1, qmodel.fc2, qmodel.head]
    padded = quantize(PaddedTokens().eval(), QuantSpec("w4a4", "per_tensor"))
    ((norm, layer, shift),) = reparam_pairs(trace(padded, token_batches(1)[0]))
    assert (norm, layer, shift) == (padded.ln, padded.fc, False)


def test_smoothquant_folds_into_the_producer_and_scales_online_elsewhere():
    model = Hybrid().eval()
    spec = QuantSpec("w4a4", "per_tensor", algorithm="smoothquant")
    qmodel = calibrate(quantize(model, spec), volume_batches())
    assert qmodel.fc1.input_smoothing.identity  # folded into ln1
    assert not torch.equal(qmodel.ln1.weight, model.ln1.weight)
    assert not qmodel.fc2.input_smoothing.identity  # GELU output: divided online
    assert not qmodel.head.input_smoothing.identity  # behind a permute and a ReLU


def test_smoothquant_equalises_activation_and_weight_ranges_at_half_alpha():
    model = Hybrid().eval()
    batches = volume_batches()
    spec = QuantSpec("w4a4", "per_tensor", algorithm="smoothquant")
    qmodel = calibrate(quantize(model, spec), batches)
    seen = []
    handle = qmodel.fc2.input_quant.register_forward_pre_hook(lambda m, a: seen.append(a[0]))
    _float_outputs(qmodel, batches)
    handle.remove()
    x_range = torch.cat(seen).flatten(0, -2).abs().amax(0)
    w_range = qmodel.fc2.weight.detach().abs().amax(0)
    torch.testing.assert_close(x_range, w_range, rtol=1e-4, atol=0)  # both sqrt(max|X| max|W|)


def test_equalization_balances_the_last_conv_pair_exactly(tiny_segnet):
    spec = QuantSpec("w4a4", "per_tensor", algorithm="equalization")
    qmodel = calibrate(quantize(tiny_segnet, spec), volume_batches())
    first, second = qmodel.body[2], qmodel.head
    first_range = first.weight.detach().abs().amax(dim=(1, 2, 3, 4))
    second_range = second.weight.detach().abs().amax(dim=(0, 2, 3, 4))
    torch.testing.assert_close(first_range, second_range, rtol=1e-5, atol=0)
    before = tiny_segnet.head.weight.detach().abs().amax(dim=(0, 2, 3, 4))
    assert float(before.max() / before.min()) > float(second_range.max() / second_range.min())
    _assert_same_function(qmodel, tiny_segnet, volume_batches(seed=5))


def test_hadamard_folds_the_layernorm_and_rotates_its_readers_only():
    model = Hybrid().eval()
    qmodel = calibrate(quantize(model, QuantSpec("w4a4", algorithm="hadamard")), volume_batches())
    assert bool((qmodel.ln1.weight == 1).all()) and bool((qmodel.ln1.bias == 0).all())
    assert bool(qmodel.fc1.input_rotation.active)
    assert not bool(qmodel.fc2.input_rotation.active)
    padded = PaddedTokens().eval()
    qpadded = calibrate(quantize(padded, QuantSpec("w4a4", algorithm="hadamard")), token_batches())
    # across the zero padding the LayerNorm keeps beta / gamma as its bias
    torch.testing.assert_close(qpadded.ln.bias, padded.ln.bias / padded.ln.weight)
    options = {"scope": "all_linear"}
    spec = QuantSpec("w4a4", algorithm="hadamard", algorithm_options=options)
    every = calibrate(quantize(model, spec), volume_batches())
    assert bool(every.fc2.input_rotation.active)
    _assert_same_function(every, model, volume_batches(seed=5))


@pytest.mark.parametrize("n", [1, 2, 4, 8, 12, 20, 24, 48, 96, 192])
def test_hadamard_matrices_are_hadamard(n):
    h = hadamard_matrix(n)
    assert set(h.unique().tolist()) <= {-1.0, 1.0}
    torch.testing.assert_close(h @ h.T, n * torch.eye(n, dtype=torch.float64))


@pytest.mark.parametrize("n", [12, 36, 10])
def test_rotations_are_orthogonal_and_seeded(n):
    q = rotation_matrix(n, seed=0)
    torch.testing.assert_close(q @ q.T, torch.eye(n), atol=1e-6, rtol=0)
    assert torch.equal(q, rotation_matrix(n, seed=0))
    assert not torch.equal(q, rotation_matrix(n, seed=1))
    assert (hadamard_matrix(n) is None) == (n in (36, 10))


def test_bias_correction_zeroes_the_mean_output_error_per_channel():
    model = Hybrid().eval()
    batches = volume_batches()
    spec = QuantSpec("w4a4", "per_tensor", algorithm="bias_correction")
    corrected = calibrate(quantize(model, spec), batches)
    plain = calibrate(quantize(model, QuantSpec("w4a4", "per_tensor")), batches)
    reference = torch.cat(_outputs(model, batches))
    error = torch.cat(_outputs(corrected, batches)) - reference
    before = torch.cat(_outputs(plain, batches)) - reference
    assert float(error.mean(dim=(0, 2, 3, 4)).abs().max()) < 1e-5
    assert float(before.mean(dim=(0, 2, 3, 4)).abs().max()) > 1e-3
    # the stem feeds an InstanceNorm, which removes any bias shift: left as it was
    assert torch.equal(corrected.stem.bias, model.stem.bias)


def test_bias_correction_gives_bias_free_layers_a_bias():
    model = nn.Sequential(nn.Conv3d(1, 4, 3, padding=1, bias=False), nn.ReLU(), nn.Conv3d(4, 2, 1))
    batches = volume_batches()
    spec = QuantSpec("w4a4", "per_tensor", algorithm="bias_correction")
    qmodel = calibrate(quantize(model.eval(), spec), batches)
    assert qmodel[0].bias is not None and float(qmodel[0].bias.detach().abs().max()) > 0
    error = torch.cat(_outputs(qmodel, batches)) - torch.cat(_outputs(model, batches))
    assert float(error.mean(dim=(0, 2, 3, 4)).abs().max()) < 1e-5


def test_bias_correction_after_a_rounding_method_corrects_the_weights_that_method_chose():
    """``gptq+bias_correction``: the correction is measured on GPTQ's weights (both are
    ``optimise`` hooks, run in the composition's order), so the final model's mean output error
    is zero; measured before GPTQ rewrote the weights it would not be."""
    model = nn.Sequential(nn.Conv3d(1, 6, 3, padding=1), nn.ReLU(), nn.Conv3d(6, 3, 3, padding=1))
    batches = volume_batches()
    qmodel = calibrate(
        quantize(model.eval(), QuantSpec("w3a8", algorithm="gptq+bias_correction")), batches
    )
    gptq_only = calibrate(quantize(model, QuantSpec("w3a8", algorithm="gptq")), batches)
    assert torch.equal(qmodel[2].weight, gptq_only[2].weight)
    reference = torch.cat(_outputs(model, batches))
    error = torch.cat(_outputs(qmodel, batches)) - reference
    before = torch.cat(_outputs(gptq_only, batches)) - reference
    assert float(error.mean(dim=(0, 2, 3, 4)).abs().max()) < 1e-5
    assert float(before.mean(dim=(0, 2, 3, 4)).abs().max()) > 1e-4


def test_compositions_apply_each_method():
    model = Hybrid().eval()
    batches = volume_batches()
    spec = QuantSpec("w4a4", "per_tensor", algorithm="equalization+bias_correction")
    qmodel = calibrate(quantize(model, spec), batches)
    alone = calibrate(
        quantize(model, QuantSpec("w4a4", "per_tensor", "minmax", algorithm="equalization")),
        batches,
    )
    assert not torch.equal(qmodel.conv.weight, model.conv.weight)  # equalised
    torch.testing.assert_close(qmodel.conv.weight, alone.conv.weight)
    error = torch.cat(_outputs(qmodel, batches)) - torch.cat(_outputs(model, batches))
    assert float(error.mean(dim=(0, 2, 3, 4)).abs().max()) < 1e-5  # and bias-corrected
    rotated = QuantSpec("w4a4", "per_tensor", algorithm="smoothquant+hadamard+reparam")
    _assert_same_function(calibrate(quantize(model, rotated), batches), model, batches)


@pytest.mark.parametrize(
    "algorithm", [*ALL, "tuned_rtn", "smoothquant+hadamard", "reparam+bias_correction"]
)
def test_what_the_algorithm_learned_is_cached(algorithm, tmp_path):
    model = Hybrid().eval()
    spec = QuantSpec("w4a4", "per_tensor", algorithm=algorithm)
    calibrated = calibrate(quantize(model, spec), volume_batches())
    path = save_ranges(calibrated, tmp_path / "ranges.pt")
    loaded = load_ranges(quantize(model, spec), path)
    for want, got in zip(
        _outputs(calibrated, volume_batches(seed=7)),
        _outputs(loaded, volume_batches(seed=7)),
        strict=True,
    ):
        assert torch.equal(got, want)


def test_bad_options_are_refused_with_the_fix():
    model = Hybrid().eval()
    spec = QuantSpec("w4a4", algorithm="smoothquant", algorithm_options={"alpha": 1.5})
    with pytest.raises(ValueError, match=r"alpha=1.5 must lie in \[0, 1\]"):
        calibrate(quantize(model, spec), volume_batches())
    spec = QuantSpec("w4a4", algorithm="hadamard", algorithm_options={"scope": "everything"})
    with pytest.raises(ValueError, match="must be one of"):
        calibrate(quantize(model, spec), volume_batches())


@pytest.mark.parametrize("algorithm", ALL)
def test_calibrating_again_starts_from_the_float_model(algorithm):
    model, batches = Hybrid().eval(), volume_batches()
    spec = QuantSpec("w4a4", "per_tensor", algorithm=algorithm)
    once = calibrate(quantize(model, spec), batches)
    twice = calibrate(calibrate(quantize(model, spec), batches), batches)
    for want, got in zip(_outputs(once, batches), _outputs(twice, batches), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4 * float(want.abs().max()))


def test_tuned_rtn_is_round_to_nearest_with_searched_ranges():
    """The same numbers as asking for the ``mse`` search directly, and a smaller output error
    than min-max ranges at 4 bits on held-out inputs."""
    model = Hybrid().eval()
    tuned = calibrate(
        quantize(model, QuantSpec("w4a4", "per_tensor", "minmax", algorithm="tuned_rtn")),
        volume_batches(),
    )
    direct = calibrate(
        quantize(model, QuantSpec("w4a4", "per_tensor", "mse", weight_observer="mse")),
        volume_batches(),
    )
    plain = calibrate(quantize(model, QuantSpec("w4a4", "per_tensor", "minmax")), volume_batches())
    held_out = volume_batches(seed=11)
    want = _outputs(model, held_out)
    for got, same in zip(_outputs(tuned, held_out), _outputs(direct, held_out), strict=True):
        assert torch.equal(got, same)

    def error(qmodel):
        return sum(
            float((g - w).square().mean())
            for g, w in zip(_outputs(qmodel, held_out), want, strict=True)
        )

    assert error(tuned) < error(plain)
