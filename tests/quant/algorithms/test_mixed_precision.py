"""Mixed precision: the budget holds, the more sensitive layer gets more bits, the choice is in
the quantization table and survives the ranges cache."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from benchmark.models.nnunet import build_nnunet
from benchmark.quant import (
    QuantError,
    QuantSpec,
    calibrate,
    load_ranges,
    quantization_table,
    quantize,
    save_ranges,
)
from benchmark.quant.algorithms.mixed_precision import allocate_bits


def _two_layers() -> nn.Module:
    """Two equal 16x16 linear layers; the first has one outlier weight, so a coarse per-tensor
    grid rounds most of its weights to zero: it is by far the more sensitive one."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 16)).eval()
    with torch.no_grad():
        model[0].weight[3, 5] = 30 * model[0].weight.abs().max()
    return model


def _tokens(n: int, seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(32, 16, generator=g) for _ in range(n)]


def _mean_bits(table) -> float:
    return float(table["w_bits"].mean())


def test_the_more_sensitive_layer_gets_more_bits_and_the_table_shows_them():
    model = _two_layers()
    options = {"bits": (4, 8), "budget": 6}
    spec = QuantSpec("w4a16", algorithm="mixed_precision", algorithm_options=options)
    qmodel = calibrate(quantize(model, spec), _tokens(4, seed=1))
    table = quantization_table(qmodel).set_index("module")
    assert table.loc["0", "w_bits"] == 8 and table.loc["2", "w_bits"] == 4
    assert int(qmodel[0].weight_bits) == 8 and qmodel[2].weight_quant.qmax == 7


@pytest.mark.parametrize("budget", [2.5, 3.0, 4.0, 6.0])
def test_mean_weight_bits_stay_within_the_budget(budget):
    torch.manual_seed(0)
    model = build_nnunet(1, 3, n_stages=2, features_per_stage=(4, 8), strides=(1, 2)).eval()
    g = torch.Generator().manual_seed(1)
    batches = [torch.randn(1, 1, 8, 8, 8, generator=g) for _ in range(2)]
    options = {"budget": budget, "bits": "2,4,8"}
    spec = QuantSpec("w4a8", algorithm="mixed_precision", algorithm_options=options)
    qmodel = calibrate(quantize(model, spec), batches)
    layers = [m for m in qmodel.modules() if hasattr(m, "weight_bits")]
    sizes = [m.weight.numel() for m in layers]
    chosen = [int(m.weight_bits) for m in layers]
    mean = sum(s * b for s, b in zip(sizes, chosen, strict=True)) / sum(sizes)
    assert mean <= budget
    assert set(chosen) <= {2, 4, 8} and len(set(chosen)) > 1
    assert chosen == [m.weight_quant.bits for m in layers]


def test_greedy_allocation_spends_the_budget_where_the_error_drops_most():
    errors = [{2: 10.0, 4: 1.0, 8: 0.0}, {2: 0.5, 4: 0.2, 8: 0.0}, {2: 3.0, 4: 0.4, 8: 0.1}]
    assert allocate_bits([100, 100, 100], errors, (2, 4, 8), 3.5) == [4, 2, 4]
    assert allocate_bits([100, 100, 100], errors, (2, 4, 8), 4.0) == [4, 4, 4]  # spare spent
    assert allocate_bits([100, 100, 100], errors, (2, 4, 8), 8.0) == [8, 8, 8]
    assert allocate_bits([100, 100, 100], errors, (2, 4, 8), 2.0) == [2, 2, 2]
    with pytest.raises(QuantError, match="below the smallest allowed width 2"):
        allocate_bits([100], errors[:1], (2, 4, 8), 1.5)


def test_chosen_bits_survive_the_ranges_cache(tmp_path):
    model = _two_layers()
    spec = QuantSpec(
        "w4a8", algorithm="mixed_precision", algorithm_options={"bits": (2, 8), "budget": 5}
    )
    calibrated = calibrate(quantize(model, spec), _tokens(3, seed=1))
    loaded = load_ranges(quantize(model, spec), save_ranges(calibrated, tmp_path / "r.pt"))
    before = quantization_table(calibrated)["w_bits"].tolist()
    assert quantization_table(loaded)["w_bits"].tolist() == before and sorted(before) == [2, 8]
    x = _tokens(1, seed=9)[0]
    with torch.no_grad():
        assert torch.equal(loaded(x), calibrated(x))
