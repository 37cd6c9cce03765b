"""Which convolutions run in INT8: ``all``, ``min_channels:N`` or ``latency_aware``.

An integer convolution is not faster everywhere. ONNX Runtime's 3D ``QLinearConv`` costs about
the same per output voxel whatever the channel count, so a narrow convolution at full resolution
(the first stage of an nnU-Net: 1 -> 8 or 8 -> 8 channels over 64^3 voxels) is several times
slower in INT8 than in float, while a wide one is several times faster. A policy decides per
layer:

* ``all``: every convolution of the quantized op types is INT8 (the plain ``quantize_static``);
* ``min_channels:N``: convolutions with fewer than ``N`` input or output channels stay float;
* ``latency_aware``: each convolution *shape* of the model (op, channels, kernel, stride,
  groups, input size) is timed once alone on the runtime at hand in float and in INT8
  (:mod:`.layer_costs`); a layer stays float where INT8 was slower by more than ``margin``
  (a fraction of the float time: single-layer timings on a shared machine are noisy, and at
  equal cost INT8 still halves the weights and keeps integer chains unbroken), or where the
  runtime has no integer kernel for it at all (then INT8 only adds quantize/dequantize).

Layers are identified by name in their own graph (ONNX node names, torch module names); the
decision depends only on the shape, so one cost table serves every graph of the same network.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import onnx
from onnx import shape_inference

__all__ = [
    "ConvShape",
    "LayerChoice",
    "LayerPolicy",
    "parse_policy",
    "onnx_conv_layers",
    "choose_layers",
    "float_layers",
    "CONV_OPS",
]

#: ONNX op types the policies decide on (MatMul/Gemm of transformer blocks are always INT8).
CONV_OPS = ("Conv", "ConvTranspose")


@dataclass(frozen=True)
class ConvShape:
    """What the cost of one convolution depends on.

    Attributes:
        op: ``Conv`` or ``ConvTranspose``.
        in_channels, out_channels: channel counts.
        kernel, stride: per spatial axis.
        groups: convolution groups.
        spatial: input size ``(D, H, W)`` at batch 1.
        padding: ONNX ``pads`` (begin and end per axis), or the torch padding twice.
    """

    op: str
    in_channels: int
    out_channels: int
    kernel: tuple[int, ...]
    stride: tuple[int, ...]
    groups: int
    spatial: tuple[int, ...]
    padding: tuple[int, ...]

    @property
    def key(self) -> str:
        """A stable text key (cost caches are JSON)."""

        def join(v: tuple[int, ...]) -> str:
            return "x".join(str(i) for i in v)

        return (
            f"{self.op}:{self.in_channels}->{self.out_channels}:k{join(self.kernel)}"
            f":s{join(self.stride)}:g{self.groups}:p{join(self.padding)}:in{join(self.spatial)}"
        )

    @property
    def min_channels(self) -> int:
        return min(self.in_channels, self.out_channels)


@dataclass(frozen=True)
class LayerPolicy:
    """A parsed ``deploy.layer_policy`` value (see the module docstring)."""

    kind: str
    min_channels: int = 0

    @property
    def name(self) -> str:
        return f"min_channels:{self.min_channels}" if self.kind == "min_channels" else self.kind


def parse_policy(text: str) -> LayerPolicy:
    """``all``, ``latency_aware`` or ``min_channels:N`` (``N >= 1``).

    Raises:
        ValueError: any other text, naming the allowed forms.
    """
    text = str(text).strip()
    if text in ("all", "latency_aware"):
        return LayerPolicy(text)
    head, _, tail = text.partition(":")
    if head == "min_channels" and tail.isdigit() and int(tail) >= 1:
        return LayerPolicy("min_channels", int(tail))
    raise ValueError(
        f"layer policy {text!r} is not one of 'all', 'latency_aware', 'min_channels:N' (N >= 1)"
    )


@dataclass(frozen=True)
class LayerChoice:
    """The decision for one layer.

    Attributes:
        layer: node or module name.
        shape: its :class:`ConvShape`.
        int8: quantized (``True``) or kept in float.
        reason: why, with the measured times for ``latency_aware``.
        float_ms, int8_ms: the measured single-layer times (NaN when not measured).
    """

    layer: str
    shape: ConvShape
    int8: bool
    reason: str
    float_ms: float = float("nan")
    int8_ms: float = float("nan")


def _attr(node: onnx.NodeProto, name: str, default: list[int]) -> list[int]:
    for a in node.attribute:
        if a.name == name:
            return list(a.ints) if a.ints else [int(a.i)]
    return default


def onnx_conv_layers(model_path: str | Path) -> dict[str, ConvShape]:
    """Node name -> :class:`ConvShape` of every ``Conv``/``ConvTranspose`` of an ONNX model.

    Input sizes come from ONNX shape inference, so the model needs static spatial input
    dimensions (the export's ROI); the batch axis may be symbolic.

    Raises:
        ValueError: a convolution whose input or weight shape cannot be inferred.
    """
    model = shape_inference.infer_shapes(onnx.load(str(model_path)))
    graph = model.graph
    shapes: dict[str, list[int]] = {}
    for info in (*graph.input, *graph.value_info, *graph.output):
        dims = info.type.tensor_type.shape.dim
        shapes[info.name] = [d.dim_value if d.HasField("dim_value") else -1 for d in dims]
    for init in graph.initializer:
        shapes[init.name] = list(init.dims)
    layers = {}
    for node in graph.node:
        if node.op_type not in CONV_OPS:
            continue
        x, w = shapes.get(node.input[0]), shapes.get(node.input[1])
        if x is None or w is None or any(d < 1 for d in x[1:]):
            raise ValueError(
                f"{model_path}: no static input/weight shape for {node.op_type} {node.name}; "
                "export with a fixed ROI size"
            )
        groups = _attr(node, "group", [1])[0]
        spatial_rank = len(x) - 2
        # ONNX weights: Conv [out, in/groups, *k]; ConvTranspose [in, out/groups, *k]
        out_ch = w[0] if node.op_type == "Conv" else w[1] * groups
        layers[node.name] = ConvShape(
            op=node.op_type,
            in_channels=int(x[1]),
            out_channels=int(out_ch),
            kernel=tuple(int(k) for k in w[2:]),
            stride=tuple(_attr(node, "strides", [1] * spatial_rank)),
            groups=int(groups),
            spatial=tuple(int(d) for d in x[2:]),
            padding=tuple(_attr(node, "pads", [0] * 2 * spatial_rank)),
        )
    return layers


def choose_layers(
    layers: Mapping[str, ConvShape],
    policy: LayerPolicy | str,
    costs: Mapping[str, tuple[float, float, bool]] | None = None,
    margin: float = 0.1,
) -> list[LayerChoice]:
    """Apply ``policy`` to every layer.

    Args:
        layers: layer name -> shape.
        policy: a :class:`LayerPolicy` or its text.
        costs: shape key -> ``(float_ms, int8_ms, integer_kernel)`` measured on the target
            runtime; needed by ``latency_aware``, attached to the other policies' choices.
        margin: ``latency_aware`` keeps a layer float when ``int8_ms > (1 + margin) *
            float_ms``.

    Raises:
        ValueError: ``latency_aware`` without a cost for some layer's shape.
    """
    policy = parse_policy(policy) if isinstance(policy, str) else policy
    costs = costs or {}
    choices = []
    for name, shape in layers.items():
        float_ms, int8_ms, integer = costs.get(shape.key, (float("nan"), float("nan"), False))
        if policy.kind == "all":
            int8, reason = True, "policy all"
        elif policy.kind == "min_channels":
            int8 = shape.min_channels >= policy.min_channels
            reason = (
                f"{shape.min_channels} channels >= {policy.min_channels}"
                if int8
                else f"kept float: {shape.min_channels} channels < {policy.min_channels}"
            )
        else:
            if shape.key not in costs:
                raise ValueError(f"latency_aware: no measured cost for {name} ({shape.key})")
            times = f"int8 {int8_ms:.3g} ms vs float {float_ms:.3g} ms alone"
            int8 = bool(integer) and int8_ms <= (1 + margin) * float_ms
            if not integer:
                reason = "kept float: no integer kernel on this runtime"
            elif int8:
                reason = f"int8 ({times})"
            else:
                reason = f"kept float: int8 slower by more than {margin:.0%} ({times})"
        choices.append(LayerChoice(name, shape, bool(int8), reason, float_ms, int8_ms))
    return choices


def float_layers(choices: list[LayerChoice]) -> list[str]:
    """Names of the layers a policy keeps in float (``nodes_to_exclude`` of the quantizer)."""
    return [c.layer for c in choices if not c.int8]
