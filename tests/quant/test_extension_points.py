"""Extension points: a granularity policy, an observer and an algorithm each added by one
registration; weight transforms invalidate the cache; straight-through rounding and learnable
scales let gradients through a quantized conv."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from benchmark.quant import (
    ALGORITHMS,
    OBSERVERS,
    POLICIES,
    Algorithm,
    QuantSpec,
    calibrate,
    float_reference,
    load_ranges,
    make_learnable,
    quantization_table,
    quantize,
    register_algorithm,
    register_observer,
    register_policy,
    save_ranges,
)
from benchmark.quant.granularity import PerOutputChannel, PerTensor
from benchmark.quant.modules import QuantLayer
from benchmark.quant.observers import Observer
from benchmark.quant.observers.minmax import MinMaxObserver
from benchmark.quant.policies import OP_KINDS, GranularityPolicy
from benchmark.quant.quantizer import ActivationQuantizer
from benchmark.quant.weight_quantizer import WeightQuantizer

QUANT = Path(__file__).resolve().parents[2] / "benchmark" / "quant"
CONF = Path(__file__).resolve().parents[2] / "conf"


def _batches(n=3, size=8, seed=3):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(1, 1, size, size, size, generator=g) for _ in range(n)]


@pytest.mark.parametrize(
    ("group", "registry"),
    [("granularity", POLICIES), ("observer", OBSERVERS), ("algorithm", ALGORITHMS)],
)
def test_every_conf_option_is_registered_and_every_entry_has_a_conf_option(group, registry):
    options = {p.stem for p in (CONF / group).glob("*.yaml")}
    if group == "algorithm":  # compositions and option variants have files of their own
        assert set(registry.names()) <= options
        return
    extra = {"none"} if group == "observer" else set()
    assert options == set(registry.names()) | extra


def test_layers_do_not_test_granularity_names():
    for module in (
        "modules.py",
        "attention.py",
        "operands.py",
        "quantizer.py",
        "weight_quantizer.py",
    ):
        text = (QUANT / module).read_text()
        for name in POLICIES.names():
            assert f'"{name}"' not in text, f"{module} names the granularity {name!r}"


def test_policy_tables_cover_every_operator_kind():
    for name in POLICIES.names():
        policy = POLICIES.get(name)
        if policy.precision_kind != "cast":
            assert set(policy.table) == set(OP_KINDS), name


@pytest.fixture
def registered():
    """Entries registered by a test, removed afterwards."""
    added = []
    yield added
    for registry, name in added:
        registry.unregister(name)


def test_a_new_policy_is_one_registration(tiny_segnet, registered):
    policy = GranularityPolicy(
        name="weights_per_channel",
        description="per-channel weights, per-tensor activations",
        precision_kind="scaled",
        table=dict.fromkeys(OP_KINDS, (PerOutputChannel(), PerTensor())),
    )
    registered.append((POLICIES, register_policy(policy).name))
    qmodel = calibrate(quantize(tiny_segnet, QuantSpec("w4a4", "weights_per_channel")), _batches())
    table = quantization_table(qmodel)
    assert set(table["weight_scheme"]) == {"per_axis0/static/symmetric"}
    assert {s.split("/")[0] for s in table["activation_scheme"]} == {"per_tensor"}
    assert set(table["execution"]) == {"integer-factorizable"}


def test_a_new_observer_is_one_registration(tiny_segnet, registered):
    @register_observer
    class MeanMinMax(Observer):
        """Per-batch min/max averaged over batches (the base class's combine)."""

        name = "mean_minmax"
        estimate = MinMaxObserver.estimate

    registered.append((OBSERVERS, "mean_minmax"))
    batches = _batches()
    qmodel = calibrate(quantize(tiny_segnet, QuantSpec("w8a8", observer="mean_minmax")), batches)
    lows = [float(x.min()) for x in batches]
    torch.testing.assert_close(float(qmodel.body[0].input_quant.lo), sum(lows) / 3)


class _ClipShrinkCorrect(Algorithm):
    """A small real method using all three hooks: clip weights at ``k`` standard deviations,
    shrink static activation ranges by ``shrink``, and correct the head's bias for the mean
    error of the quantized output (empirical bias correction)."""

    name = "clip_shrink_correct"
    needs_data = True

    def transform_weights(self, qmodel, batches):
        k = self.options["k"]
        for module in qmodel.modules():
            if isinstance(module, QuantLayer):
                module.weight_quant.transforms.append(
                    lambda w, k=k: w.clamp(-k * w.std(), k * w.std())
                )

    def adjust_ranges(self, qmodel, batches):
        for quantizer in qmodel.modules():
            if isinstance(quantizer, ActivationQuantizer) and quantizer.lo is not None:
                shrink = self.options["shrink"]
                quantizer.set_range(
                    quantizer.lo * shrink, quantizer.hi * shrink, quantizer.resolved_mapping
                )

    def optimise(self, qmodel, batches):
        with torch.no_grad():
            quantized = torch.cat([qmodel(x) for x in batches])
            with float_reference(qmodel):
                reference = torch.cat([qmodel(x) for x in batches])
            qmodel.head.bias += (reference - quantized).mean(dim=(0, 2, 3, 4))


def test_algorithm_hooks_run_in_order_and_take_effect(tiny_segnet, registered):
    registered.append((ALGORITHMS, register_algorithm(_ClipShrinkCorrect).name))
    batches = _batches()
    options = {"k": 1.5, "shrink": 0.5}
    spec = QuantSpec(
        "w4a4", "per_channel_token", algorithm="clip_shrink_correct", algorithm_options=options
    )
    assert spec.to_dict()["algorithm_options"] == "k=1.5,shrink=0.5"
    qmodel = calibrate(quantize(tiny_segnet, spec), batches)
    plain = calibrate(quantize(tiny_segnet, QuantSpec("w4a4", "per_channel_token")), batches)
    # 1. the weights were quantized after clipping
    weight = tiny_segnet.body[2].weight
    clipped = weight.clamp(-1.5 * weight.std(), 1.5 * weight.std())
    reference = WeightQuantizer(4, qmodel.body[2].weight_quant.granularity, "symmetric", "minmax")
    assert torch.equal(qmodel.body[2].weight_quant(weight), reference(clipped))
    # 2. ranges were observed behind the clipped weights, then halved
    assert bool((qmodel.body[2].input_quant.hi > 0).all())
    assert not torch.equal(qmodel.body[2].input_quant.hi, plain.body[2].input_quant.hi)
    # 3. the bias correction removed the mean output error on the calibration data
    with torch.no_grad():
        error = torch.cat([qmodel(x) for x in batches]) - torch.cat(
            [tiny_segnet(x) for x in batches]
        )
        before = torch.cat([plain(x) for x in batches]) - torch.cat(
            [tiny_segnet(x) for x in batches]
        )
    assert float(error.mean(dim=(0, 2, 3, 4)).abs().max()) < 1e-5
    assert float(before.mean(dim=(0, 2, 3, 4)).abs().max()) > 1e-3


def test_unknown_algorithm_and_options_are_refused():
    with pytest.raises(ValueError, match="QuantSpec.algorithm='no_such_method'"):
        QuantSpec("w4a4", algorithm="no_such_method")
    with pytest.raises(ValueError, match="algorithm='none'"):
        QuantSpec("fp32", algorithm="clip_shrink_correct")


def test_transform_added_after_the_first_forward_is_used(tiny_segnet):
    qmodel = calibrate(quantize(tiny_segnet, QuantSpec("w4a4")), _batches())
    x = _batches(1, seed=9)[0]
    quantizer = qmodel.head.weight_quant
    with torch.no_grad():
        first = qmodel(x)
        quantizer.transforms.append(lambda w: w * 0.25)
        scaled = qmodel(x)
        quantizer.transforms[0] = lambda w: -w
        negated = qmodel(x)
        quantizer.transforms.clear()
        back = qmodel(x)
    assert not torch.equal(scaled, first) and not torch.equal(negated, scaled)
    assert torch.equal(back, first)
    fresh = WeightQuantizer(4, quantizer.granularity, "symmetric", "minmax")
    assert torch.equal(quantizer(qmodel.head.weight), fresh(qmodel.head.weight))


def test_straight_through_gradients_reach_inputs_and_learnable_scales():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv3d(2, 3, 3, padding=1)).eval()
    x = torch.randn(2, 2, 6, 6, 6)
    spec = QuantSpec("w4a4", "per_channel_token", act_mapping="symmetric")
    qmodel = calibrate(quantize(model, spec), [x])
    with torch.no_grad():
        frozen = qmodel(x)
    params = make_learnable(qmodel)
    layer = qmodel[0]
    assert len(params) == 4 and isinstance(layer.input_quant.scale, nn.Parameter)
    inputs = (x * 1.5).requires_grad_()  # some values beyond the calibrated range: clipped
    out = qmodel(inputs)
    with torch.no_grad():
        assert torch.equal(qmodel(x), frozen)  # learnable, not yet trained: the same function
    out.square().sum().backward()
    assert inputs.grad is not None and bool(inputs.grad.abs().sum() > 0)
    for p in (layer.input_quant.scale, layer.weight_quant.scale, layer.weight):
        assert p.grad is not None and bool(p.grad.abs().sum() > 0)
    # straight through inside the grid, zero where the input was clipped
    quantizer = layer.input_quant
    probe = (x * 1.5).requires_grad_()
    quantizer(probe).sum().backward()
    hi = (quantizer.scale * quantizer.qmax).detach()
    inside = (probe.abs() <= hi * (1 - 1e-3)).detach()
    # values up to half a step beyond the grid still round onto it
    outside = (probe.abs() >= hi * (quantizer.qmax + 1) / quantizer.qmax).detach()
    # (x s^-1) s is 1 within float32 rounding of the reciprocal
    inside_grad = probe.grad[inside]
    torch.testing.assert_close(inside_grad, torch.ones_like(inside_grad), rtol=1e-6, atol=0)
    assert bool((probe.grad[outside] == 0).all())
    assert bool(outside.any())


def test_straight_through_without_learnable_scales(tiny_segnet):
    qmodel = calibrate(quantize(tiny_segnet, QuantSpec("w8a8")), _batches())
    x = _batches(1)[0].requires_grad_()
    qmodel(x).sum().backward()
    assert bool(x.grad.abs().sum() > 0)
    with torch.no_grad():
        assert torch.equal(qmodel(x.detach()), qmodel(x.detach().clone()))


class _Record(Algorithm):
    """Appends ``(name, hook)`` to a shared log, so the order of a composition is visible."""

    log: list = []

    def transform_weights(self, qmodel, batches):
        self.log.append((self.name, "transform_weights", dict(self.options)))

    def adjust_ranges(self, qmodel, batches):
        self.log.append((self.name, "adjust_ranges", dict(self.options)))

    def optimise(self, qmodel, batches):
        self.log.append((self.name, "optimise", dict(self.options)))


def test_composed_algorithms_run_each_hook_in_order_with_their_own_options(tiny_segnet, registered):
    first = type("First", (_Record,), {"name": "record_first"})
    second = type("Second", (_Record,), {"name": "record_second"})
    for cls in (first, second):
        registered.append((ALGORITHMS, register_algorithm(cls).name))
    _Record.log.clear()
    spec = QuantSpec(
        "w8a8",
        algorithm=["record_second", "record_first"],
        algorithm_options={"record_first": {"k": 1}, "record_second.k": 2},
    )
    assert spec.algorithm == "record_second+record_first"
    assert spec.to_dict()["algorithm_options"] == "record_first.k=1,record_second.k=2"
    calibrate(quantize(tiny_segnet, spec), _batches())
    assert _Record.log == [
        ("record_second", "transform_weights", {"k": 2}),
        ("record_first", "transform_weights", {"k": 1}),
        ("record_second", "adjust_ranges", {"k": 2}),
        ("record_first", "adjust_ranges", {"k": 1}),
        ("record_second", "optimise", {"k": 2}),
        ("record_first", "optimise", {"k": 1}),
    ]
    assert QuantSpec("w8a8", algorithm="record_first+record_second") == QuantSpec(
        "w8a8", algorithm=("record_first", "record_second")
    )
    with pytest.raises(ValueError, match="'<method>.<option>'"):
        QuantSpec("w8a8", algorithm="record_first+record_second", algorithm_options={"k": 1})
    listed = QuantSpec("w8a8", algorithm="record_first", algorithm_options={"k": [2, 4, 8]})
    assert hash(listed) == hash(
        QuantSpec("w8a8", algorithm="record_first", algorithm_options={"k": (2, 4, 8)})
    )
    assert listed.to_dict()["algorithm_options"] == "k=2/4/8"
    with pytest.raises(ValueError, match="cannot be composed"):
        QuantSpec("w8a8", algorithm="none+record_first")


class _ScaleHead(Algorithm):
    """Inserts a buffer in ``prepare`` and learns its value and a weight edit from the data."""

    name = "scale_head_test"
    needs_data = True

    def prepare(self, qmodel):
        qmodel.head.register_buffer("learned_gain", torch.ones(1))

    def optimise(self, qmodel, batches):
        with torch.no_grad():
            gain = 1.0 + float(torch.cat(batches).std())
            qmodel.head.learned_gain.fill_(gain)
            qmodel.head.weight.mul_(gain)


def test_what_an_algorithm_learns_is_cached_with_the_ranges(tiny_segnet, registered, tmp_path):
    registered.append((ALGORITHMS, register_algorithm(_ScaleHead).name))
    spec = QuantSpec("w4a4", "per_channel_token", algorithm="scale_head_test")
    batches = _batches()
    calibrated = calibrate(quantize(tiny_segnet, spec), batches)
    path = save_ranges(calibrated, tmp_path / "ranges.pt")
    loaded = load_ranges(quantize(tiny_segnet, spec), path)
    assert float(loaded.head.learned_gain) == float(calibrated.head.learned_gain) > 1.0
    with torch.no_grad():
        assert torch.equal(loaded(batches[0]), calibrated(batches[0]))
        assert not torch.equal(tiny_segnet.head.weight, loaded.head.weight)
