"""Quantized drop-ins for Conv2d/Conv3d, ConvTranspose2d/3d and Linear.

A layer is quantized by swapping the class of its (deep-copied) instance for a subclass defined
here and attaching two child quantizers: ``input_quant`` (an
:class:`~benchmark.quant.quantizer.ActivationQuantizer`) and ``weight_quant`` (a cached
:class:`~benchmark.quant.weight_quantizer.WeightQuantizer`). Swapping the class instead of
wrapping the module keeps every parameter name, so checkpoints load into a quantized model
unchanged and ``named_modules`` reads the same. Only exact types are swapped: a subclass with
its own forward would lose that forward.

Each layer states its operator kind (``conv``, ``conv_1x1``, ``conv_transposed``, ``linear``)
and its operand layouts; :mod:`benchmark.quant.operands` builds the quantizers from the spec's
granularity policy and number format, so no layer tests a granularity or precision name.

What is quantized: the weight and the input of each layer; the bias stays float32 (a real
integer kernel adds it in the 32-bit accumulator), and so does the output (the next quantized
layer quantizes it as its input).

Integer-factorizable means ``y = (sum_k q_x q_w) * s_x * s_w + b`` with the scales outside the
sum, so an integer (or TF32-on-codes) kernel computes it exactly: per-tensor activations, per-voxel
activations on 1x1x1 convolutions (one scale per GEMM column), per-token activations on linear
layers, with per-tensor or per-output-channel weights. Per-input-channel conv activations scale
the summed-over index and are simulation-only.

``integer_kernels=True`` runs factorizable layers on the integer codes (float32 tensors of
integers) and applies the scales to the output (see ``benchmark.quant.factorized``); it is used
only for bits <= 8 and zero points of 0, where codes are exact in TF32 (11-bit significand) and
partial sums stay below 2^24; other layers take the plain fake-quant path.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from benchmark.quant.factorized import factorized_conv, factorized_linear
from benchmark.quant.granularity import Granularity, Layout, PerTensor, PerToken, PerVoxel
from benchmark.quant.operands import BLOCK_KINDS, activation_quantizer, weight_quantizer
from benchmark.quant.policies import CONV, CONV_1X1, CONV_TRANSPOSED, LINEAR
from benchmark.quant.quantizer import ActivationQuantizer
from benchmark.quant.weight_quantizer import WeightQuantizer

__all__ = [
    "QuantLayer",
    "QuantConv2d",
    "QuantConv3d",
    "QuantConvTranspose2d",
    "QuantConvTranspose3d",
    "QuantLinear",
    "LAYER_CLASSES",
]


class QuantLayer:
    """Mixin of the quantized layers: quantizer set-up, the fast path switch and table rows."""

    input_quant: ActivationQuantizer
    weight_quant: WeightQuantizer
    execution: str
    integer_kernels: bool

    weight_layout = Layout(out_axis=0, reduce_axis=1)
    input_layout = Layout(out_axis=None, reduce_axis=1)

    def quant_init(self, spec, name: str) -> None:
        """Attach quantizers for ``spec`` (a ``QuantSpec``); ``name`` is the module's FQN."""
        kind = self.op_kind()
        self.input_quant = activation_quantizer(spec, kind, self.input_layout, f"{name}.input")
        # the layer consumes its quantized input at once, so a shared output buffer is safe
        self.input_quant.reuse_output = True
        self.weight_quant = weight_quantizer(spec, kind, self.weight_layout, f"{name}.weight")
        self.execution = self.execution_of(self.input_quant.granularity, spec.format.activation)
        self.integer_kernels = bool(spec.integer_kernels)

    def op_kind(self) -> str:
        """The operator kind the granularity policy is looked up with."""
        raise NotImplementedError(f"{type(self).__name__} must define op_kind")

    def execution_of(self, act_gran: Granularity, fmt) -> str:
        """How a kernel could run this layer with these scales (the table's ``execution``)."""
        raise NotImplementedError(f"{type(self).__name__} must define execution_of")

    def _use_integer_path(self) -> bool:
        return (
            self.integer_kernels
            and self.execution.startswith("integer")
            and self.input_quant._observer is None
            and self.input_quant.enabled
            and self.input_quant.bits <= 8
            and self.weight_quant.bits <= 8
            # dynamic affine grids compute their codes apart from the forward's rounding, so
            # ties may round differently; they take the fake-quant path (same function)
            and not (self.input_quant.dynamic and self.input_quant.mapping == "asymmetric")
            and self.weight_quant.mapping == "symmetric"
        )

    def quant_rows(self, name: str) -> list[dict]:
        """Rows of :func:`benchmark.quant.quantization_table` for this layer."""
        return [
            {
                "module": name,
                "op_type": _float_type(self).__name__,
                "weight_scheme": self.weight_quant.scheme,
                "activation_scheme": self.input_quant.scheme,
                "w_bits": self.weight_quant.bits,
                "a_bits": self.input_quant.bits,
                "execution": self.execution,
                "calibrated": self.input_quant.calibrated,
            }
        ]


def _float_type(module: nn.Module) -> type:
    """The torch class a quantized layer was made from (``Conv3d`` for ``QuantConv3d``)."""
    return next(c for c in type(module).__mro__ if c in LAYER_CLASSES)


def factorizable_tag(fmt) -> str:
    """Execution tag of a layer whose scales factor out of the sum, by number format."""
    if fmt.kind in BLOCK_KINDS:
        return "block-scaled"
    return "integer-factorizable" if fmt.kind == "int" else "fp8-factorizable"


class _QuantConvBase(QuantLayer):
    def op_kind(self) -> str:
        if all(k == 1 for k in self.kernel_size):
            return CONV_1X1
        transposed = isinstance(self, nn.modules.conv._ConvTransposeNd)
        return CONV_TRANSPOSED if transposed else CONV

    def execution_of(self, act_gran: Granularity, fmt) -> str:
        factorizable = factorizable_tag(fmt)
        if isinstance(act_gran, PerTensor) or fmt.kind in BLOCK_KINDS:
            return factorizable
        if isinstance(act_gran, PerVoxel):
            transposed = isinstance(self, nn.modules.conv._ConvTransposeNd)
            pointwise = all(k == 1 for k in self.kernel_size)
            if pointwise and not transposed and all(p == 0 for p in _padding(self)):
                return factorizable
            if not transposed and not pointwise:
                return f"{factorizable} per kernel position"
        return "simulation-only"


def _padding(conv) -> tuple[int, ...]:
    if isinstance(conv.padding, str):
        return (0,) if conv.padding == "valid" else (1,)
    return tuple(conv.padding)


class _QuantConv(_QuantConvBase):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._use_integer_path() and self.execution == "integer-factorizable":
            codes, act_scale, act_zp = self.input_quant.codes(x)
            w_codes, w_scale, _ = self.weight_quant.codes(self.weight)
            # centred codes (q - z) are still integers; a zero voxel of the padding is 0
            return factorized_conv(self, codes - act_zp, act_scale, w_codes, w_scale)
        return self._conv_forward(self.input_quant(x), self.weight_quant(self.weight), self.bias)


class QuantConv2d(_QuantConv, nn.Conv2d):
    """``nn.Conv2d`` with fake-quantized input and weight."""


class QuantConv3d(_QuantConv, nn.Conv3d):
    """``nn.Conv3d`` with fake-quantized input and weight."""


class _QuantConvTranspose(_QuantConvBase):
    # ConvTranspose weights are [Cin, Cout / groups, *k]: output channels are axis 1.
    weight_layout = Layout(out_axis=1, reduce_axis=0)

    def forward(self, x: torch.Tensor, output_size: list[int] | None = None) -> torch.Tensor:
        spatial = len(self.kernel_size)
        output_padding = self._output_padding(
            x, output_size, self.stride, self.padding, self.kernel_size, spatial, self.dilation
        )
        conv = F.conv_transpose3d if spatial == 3 else F.conv_transpose2d
        return conv(
            self.input_quant(x),
            self.weight_quant(self.weight),
            self.bias,
            self.stride,
            self.padding,
            output_padding,
            self.groups,
            self.dilation,
        )


class QuantConvTranspose2d(_QuantConvTranspose, nn.ConvTranspose2d):
    """``nn.ConvTranspose2d`` with fake-quantized input and weight."""


class QuantConvTranspose3d(_QuantConvTranspose, nn.ConvTranspose3d):
    """``nn.ConvTranspose3d`` with fake-quantized input and weight."""


class QuantLinear(QuantLayer, nn.Linear):
    """``nn.Linear`` with fake-quantized input (per token) and weight (per output feature)."""

    input_layout = Layout(out_axis=None, reduce_axis=-1)

    def op_kind(self) -> str:
        return LINEAR

    def execution_of(self, act_gran: Granularity, fmt) -> str:
        if isinstance(act_gran, (PerTensor, PerToken)) or fmt.kind in BLOCK_KINDS:
            return factorizable_tag(fmt)
        return "simulation-only"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._use_integer_path():
            codes, act_scale, act_zp = self.input_quant.codes(x)
            w_codes, w_scale, _ = self.weight_quant.codes(self.weight)
            return factorized_linear(codes - act_zp, act_scale, w_codes, w_scale, self.bias)
        return F.linear(self.input_quant(x), self.weight_quant(self.weight), self.bias)


LAYER_CLASSES: dict[type, type] = {
    nn.Conv2d: QuantConv2d,
    nn.Conv3d: QuantConv3d,
    nn.ConvTranspose2d: QuantConvTranspose2d,
    nn.ConvTranspose3d: QuantConvTranspose3d,
    nn.Linear: QuantLinear,
}
