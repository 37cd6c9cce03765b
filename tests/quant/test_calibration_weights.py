"""``QuantSpec.calibration_weights``: activations are observed behind quantized (default) or
float weights."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch

from benchmark.quant import QuantSpec, QuantSpecError, calibrate, quantize
from benchmark.quant.spec import _KEYED_WHEN_SET
from benchmark.quant.weight_quantizer import WeightQuantizer


def _batches() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return [torch.randn(1, 1, 8, 8, 8, generator=g) for _ in range(2)]


def _body2_input_max(model, batches, weight=None) -> torch.Tensor:
    """The largest input of ``body.2`` (after conv0 and ReLU) over the batches."""
    conv = model.body[0]
    w = conv.weight if weight is None else weight
    with torch.no_grad():
        return max(
            torch.relu(torch.nn.functional.conv3d(x, w, conv.bias, padding=1)).max()
            for x in batches
        )


@pytest.mark.parametrize("weights", ["quantized", "float"])
def test_ranges_are_observed_behind_the_chosen_weights(tiny_segnet, weights):
    spec = QuantSpec("w4a8", "per_tensor", act_mapping="auto", calibration_weights=weights)
    batches = _batches()
    qmodel = calibrate(quantize(tiny_segnet, spec), batches)
    rounded = qmodel.body[0].weight_quant(qmodel.body[0].weight)
    expected = _body2_input_max(tiny_segnet, batches, rounded if weights == "quantized" else None)
    other = _body2_input_max(tiny_segnet, batches, None if weights == "quantized" else rounded)
    hi = qmodel.body[2].input_quant.hi
    assert torch.allclose(hi, expected.reshape(hi.shape))
    assert not torch.allclose(hi, other.reshape(hi.shape))
    # after calibration the weight quantizers round again
    assert all("forward" not in vars(m) for m in qmodel.modules() if isinstance(m, WeightQuantizer))
    assert torch.equal(qmodel.body[0].weight_quant(qmodel.body[0].weight), rounded)


def test_field_enters_rows_and_keys_only_when_not_default():
    default, other = QuantSpec("w4a4"), QuantSpec("w4a4", calibration_weights="float")
    assert default.calibration_weights == "quantized"
    assert default.to_dict()["calibration_weights"] == "quantized"
    assert default.calibration_key() != other.calibration_key()
    # the default is left out of the key, so ranges files keyed before the field keep their key
    row = {k: v for k, v in default.to_dict().items() if _KEYED_WHEN_SET.get(k, object()) != v}
    assert "calibration_weights" not in row
    digest = hashlib.sha1(json.dumps(row, sort_keys=True).encode()).hexdigest()[:12]
    assert default.calibration_key() == digest
    with pytest.raises(QuantSpecError, match="calibration_weights='fp32' is not one of"):
        QuantSpec("w4a4", calibration_weights="fp32")
