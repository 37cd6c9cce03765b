"""Layer policies: shapes read from the graph, the three policies, measured costs and their cache."""

from __future__ import annotations

import json

import onnx
import pytest

from benchmark.deploy.layer_costs import cache_path, measure_layer_costs
from benchmark.deploy.layer_policy import (
    ConvShape,
    choose_layers,
    float_layers,
    onnx_conv_layers,
    parse_policy,
)
from benchmark.deploy.ops import executed_int8_layers
from benchmark.deploy.ort_quant import quantize_static_onnx
from benchmark.deploy.session import make_session
from benchmark.deploy.torch_int8 import torch_conv_layers


def test_policy_text_is_parsed_and_bad_text_names_the_forms():
    assert parse_policy("min_channels:16").min_channels == 16
    assert parse_policy("latency_aware").name == "latency_aware"
    for bad in ("min_channels:0", "min_channels", "fastest"):
        with pytest.raises(ValueError, match="'all', 'latency_aware', 'min_channels:N'"):
            parse_policy(bad)


def test_onnx_and_torch_graphs_give_the_same_shapes(exported, tiny_unet, calibration_batches):
    onnx_layers = onnx_conv_layers(exported.path)
    torch_layers = torch_conv_layers(tiny_unet, calibration_batches[0])
    # the tiny U-Net: 1->6 at 16^3, 6->6 stride 2, ConvTranspose 6->6 at 8^3, head 12->3
    assert sorted(s.key for s in onnx_layers.values()) == sorted(
        s.key for s in torch_layers.values()
    )
    by_op = {(s.op, s.in_channels, s.out_channels): s for s in onnx_layers.values()}
    assert by_op[("Conv", 6, 6)].stride == (2, 2, 2)
    assert by_op[("ConvTranspose", 6, 6)].spatial == (8, 8, 8)
    assert by_op[("Conv", 1, 6)].spatial == (16, 16, 16)


def _shape(cin: int, cout: int) -> ConvShape:
    return ConvShape("Conv", cin, cout, (3, 3, 3), (1, 1, 1), 1, (8, 8, 8), (1,) * 6)


def test_the_three_policies_decide_per_layer():
    layers = {"narrow": _shape(1, 8), "wide": _shape(32, 32), "mid": _shape(16, 32)}
    costs = {
        layers["narrow"].key: (1.0, 5.0, True),  # INT8 5x slower
        layers["wide"].key: (4.0, 1.0, True),  # INT8 4x faster
        layers["mid"].key: (2.0, 2.1, True),  # within the 10 % margin
    }
    assert float_layers(choose_layers(layers, "all", costs)) == []
    assert float_layers(choose_layers(layers, "min_channels:16", costs)) == ["narrow"]
    chosen = {c.layer: c for c in choose_layers(layers, "latency_aware", costs, margin=0.1)}
    assert [n for n, c in chosen.items() if not c.int8] == ["narrow"]
    assert "int8 5 ms vs float 1 ms" in chosen["narrow"].reason
    assert chosen["wide"].float_ms == 4.0 and chosen["wide"].int8_ms == 1.0
    strict = choose_layers(layers, "latency_aware", costs, margin=0.0)
    assert float_layers(strict) == ["narrow", "mid"]


def test_latency_aware_keeps_layers_without_integer_kernel_in_float():
    layers = {"up": _shape(32, 32)}
    costs = {layers["up"].key: (4.0, 1.0, False)}
    (choice,) = choose_layers(layers, "latency_aware", costs)
    assert not choice.int8 and "no integer kernel" in choice.reason
    with pytest.raises(ValueError, match="no measured cost for up"):
        choose_layers(layers, "latency_aware", {})


def test_excluded_layers_stay_float_in_the_quantized_graph(exported, calibration_batches, tmp_path):
    layers = onnx_conv_layers(exported.path)
    narrow = [n for n, s in layers.items() if s.in_channels == 1]
    path = quantize_static_onnx(
        exported.path, tmp_path / "q.onnx", calibration_batches, nodes_to_exclude=narrow
    )
    optimized = tmp_path / "q.optimized.onnx"
    make_session(path, threads=1, optimized_model_path=optimized)
    executed = executed_int8_layers(optimized, list(layers))
    assert [n for n, ran in executed.items() if not ran and layers[n].op == "Conv"] == narrow
    ops = [n.op_type for n in onnx.load(str(optimized)).graph.node]
    assert ops.count("QLinearConv") == 2  # the 6->6 and the 12->3 convolutions


def test_costs_are_measured_on_the_runtime_and_cached(tmp_path):
    shapes = [
        _shape(4, 4),
        ConvShape("ConvTranspose", 4, 4, (2, 2, 2), (2, 2, 2), 1, (4, 4, 4), (0,) * 6),
    ]
    costs = measure_layer_costs(shapes, "ort", threads=1, cache_dir=tmp_path, warmup=0, runs=2)
    conv, transposed = (costs[s.key] for s in shapes)
    assert conv[0] > 0 and conv[1] > 0 and conv[2] is True  # QLinearConv ran
    assert transposed[2] is False  # ONNX Runtime has no integer ConvTranspose kernel
    path = cache_path(tmp_path, "ort", 1)
    record = json.loads(path.read_text())
    assert record["threads"] == 1 and set(record["costs"]) == {s.key for s in shapes}
    # a second call reads the cache instead of measuring again
    record["costs"][shapes[0].key] = [123.0, 456.0, True]
    path.write_text(json.dumps(record))
    again = measure_layer_costs(shapes[:1], "ort", threads=1, cache_dir=tmp_path)
    assert again[shapes[0].key] == (123.0, 456.0, True)
    with pytest.raises(ValueError, match="runtime 'tvm'"):
        measure_layer_costs(shapes, "tvm", threads=1)
