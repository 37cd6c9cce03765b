"""One traced forward: every matmul-like op, the module that ran it, and the layer data flow.

The module tree does not say which compute ops a model performs: attention written as
``torch.einsum`` or ``F.scaled_dot_product_attention`` inside a custom module, a functional
convolution, a layer that is never called. :func:`trace` therefore runs one example forward
under a ``TorchFunctionMode`` with a forward hook on every module, and labels each tensor it
sees:

- ``activation``: derived from the model input (not from parameters and buffers alone);
- ``from_input``: derived from the model input with no quantizable layer in between;
- ``producers``: the quantizable layers whose outputs reach the tensor with no other
  quantizable layer in between;
- ``quantized``: the output of a quantizer module, or a layout view of one (``view``,
  ``transpose``, ``chunk``, a product with a Python scalar, ...), so that an op whose operands
  all carry it computes on quantized values.

Each matmul-like op (:data:`MATMUL_OPS`) is recorded as an :class:`Op` of the innermost module
executing it, labelled ``<op>_<i>`` (``i`` counts that module's matmul-like ops within one call).
Ops a torch function runs internally are not seen (a mode sees the outermost call only), so
``nn.MultiheadAttention`` shows as one ``multi_head_attention_forward``.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass, field, replace

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_leaves
from torch.utils.weak import WeakTensorKeyDictionary

from benchmark.quant.quantizer import ActivationQuantizer
from benchmark.quant.weight_quantizer import WeightQuantizer

__all__ = ["MATMUL_OPS", "ATTENTION_OPS", "Op", "Trace", "trace", "op_name", "operand_slots"]

#: ops that sum products of two operands (what a quantized kernel would compute)
MATMUL_OPS = frozenset(
    {
        "conv1d",
        "conv2d",
        "conv3d",
        "conv_transpose1d",
        "conv_transpose2d",
        "conv_transpose3d",
        "linear",
        "bilinear",
        "matmul",
        "rmatmul",
        "mm",
        "bmm",
        "baddbmm",
        "addmm",
        "addbmm",
        "einsum",
        "tensordot",
        "scaled_dot_product_attention",
        "multi_head_attention_forward",
    }
)
#: the matmul-like ops that attention written in functional form uses
ATTENTION_OPS = frozenset(
    {"matmul", "rmatmul", "mm", "bmm", "baddbmm", "einsum", "scaled_dot_product_attention"}
)
# ops that move values without changing them (a quantized operand stays quantized)
_LAYOUT_OPS = frozenset(
    {
        "get",
        "getitem",
        "view",
        "reshape",
        "permute",
        "transpose",
        "t",
        "contiguous",
        "chunk",
        "split",
        "unbind",
        "unsqueeze",
        "squeeze",
        "flatten",
        "unflatten",
        "expand",
        "expand_as",
        "movedim",
        "narrow",
        "select",
        "clone",
        "detach",
        "to",
        "float",
    }
)
_SCALAR_OPS = frozenset({"mul", "div", "truediv"})  # by a Python number: the grid scales


@dataclass(frozen=True)
class _Label:
    activation: bool = False
    from_input: bool = False
    producers: frozenset[str] = frozenset()
    quantized: bool = False


@dataclass(frozen=True)
class Op:
    """One matmul-like op of one module call.

    Attributes:
        module: dotted name of the innermost module running it (``""``: the model itself).
        op: normalised function name (``einsum``, ``matmul``, ``conv3d``, ...).
        label: ``<op>_<i>``, unique within one call of the module.
        activations: per operand, whether it derives from the model input.
        quantized: every operand came out of a quantizer.
        ndims: per operand, its number of dimensions.
        reduce_axes: per operand, the axis the op sums over (``None`` where not defined).
        equation: the einsum equation, else ``None``.
    """

    module: str
    op: str
    label: str
    activations: tuple[bool, ...]
    quantized: bool
    ndims: tuple[int, ...]
    reduce_axes: tuple[int | None, ...]
    equation: str | None = None

    @property
    def functional_attention(self) -> bool:
        """An attention-style product of activations only (no weight operand)."""
        return self.op in ATTENTION_OPS and bool(self.activations) and all(self.activations)


@dataclass
class Trace:
    """What one forward executed.

    Attributes:
        ops: every matmul-like op in execution order.
        calls: per module name, the ops of each of its calls.
        executed: names of the modules that ran, in order of first call.
        first: traced layers whose input derives from the model input with no traced layer in
            between (registration order).
        last: traced layers whose output reaches the model output with no traced layer in
            between (registration order).
    """

    ops: list[Op] = field(default_factory=list)
    calls: dict[str, list[list[Op]]] = field(default_factory=dict)
    executed: list[str] = field(default_factory=list)
    first: list[str] = field(default_factory=list)
    last: list[str] = field(default_factory=list)


def op_name(func) -> str:
    """``torch.Tensor.__matmul__`` -> ``matmul``, ``F.conv3d`` -> ``conv3d``."""
    return getattr(func, "__name__", str(func)).strip("_")


def operand_slots(op: str, args: tuple, kwargs: dict) -> list[tuple[object, int]]:
    """``(container, index)`` of each operand of a matmul-like call; the container is ``args``
    or the list einsum got its operands in, so callers can read and replace them."""
    if op == "einsum":
        if len(args) == 2 and isinstance(args[1], (list, tuple)):
            return [(args[1], i) for i in range(len(args[1]))]
        return [(args, i) for i in range(1, len(args))]
    if op in ("baddbmm", "addmm", "addbmm"):
        return [(args, 1), (args, 2)]
    if op == "rmatmul":
        return [(args, 1), (args, 0)]
    if op in ("scaled_dot_product_attention", "multi_head_attention_forward"):
        return [(args, i) for i in range(min(3, len(args)))]
    return [(args, i) for i in range(min(2, len(args)))]


def _reduce_axes(op: str, operands: list, equation: str | None) -> tuple[int | None, ...]:
    ndims = [t.ndim if isinstance(t, torch.Tensor) else 0 for t in operands]
    if op == "einsum" and equation is not None and len(operands) == 2:
        return einsum_reduce_axes(equation, ndims)
    if op in ("matmul", "rmatmul", "mm", "bmm", "baddbmm", "addmm", "addbmm") and len(ndims) == 2:
        return (-1, -2 if ndims[1] > 1 else -1)
    if op == "scaled_dot_product_attention":
        return (-1, -1, -2)[: len(ndims)]
    return tuple(None for _ in ndims)


def einsum_reduce_axes(equation: str, ndims: list[int]) -> tuple[int | None, ...]:
    """The (first) summed axis of each of two einsum operands, ``None`` if nothing is summed."""
    equation = equation.replace(" ", "")
    inputs, arrow, output = equation.partition("->")
    specs = inputs.split(",")
    if not arrow:
        letters = re.sub(r"[^a-zA-Z]", "", inputs)
        output = "".join(sorted(c for c in set(letters) if letters.count(c) == 1))
    summed = (set(specs[0]) & set(specs[1])) - set(output) - {"."}
    axes: list[int | None] = []
    for spec, ndim in zip(specs, ndims, strict=True):
        head, _, tail = spec.partition("...")
        axis = next((i - ndim for i, c in enumerate(head) if c in summed), None)
        if axis is None:
            axis = next((j - len(tail) for j, c in enumerate(tail) if c in summed), None)
        axes.append(axis)
    return tuple(axes)


class _Recorder(TorchFunctionMode):
    """Labels every tensor an op returns and records the matmul-like ops."""

    def __init__(self, result: Trace) -> None:
        super().__init__()
        self.result = result
        self.labels = WeakTensorKeyDictionary()
        self.stack: list[list] = []  # [module name, ops of this call]

    def label(self, tensor: torch.Tensor) -> _Label | None:
        return self.labels.get(tensor)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        name = op_name(func)
        if name in MATMUL_OPS and self.stack:
            self._record(name, args, kwargs)
        inputs = [t for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
        labels = [self.labels.get(t) for t in inputs]
        if any(labels):
            self._propagate(name, args, inputs, labels, out)
        return out

    def _record(self, name: str, args: tuple, kwargs: dict) -> None:
        module, ops = self.stack[-1]
        operands = [container[i] for container, i in operand_slots(name, args, kwargs)]
        operands = [t for t in operands if isinstance(t, torch.Tensor)]
        labels = [self.labels.get(t) for t in operands]
        equation = args[0] if name == "einsum" and isinstance(args[0], str) else None
        op = Op(
            module=module,
            op=name,
            label=f"{name}_{len(ops)}",
            activations=tuple(bool(lab and lab.activation) for lab in labels),
            quantized=bool(labels) and all(lab is not None and lab.quantized for lab in labels),
            ndims=tuple(t.ndim for t in operands),
            reduce_axes=_reduce_axes(name, operands, equation),
            equation=equation,
        )
        ops.append(op)
        self.result.ops.append(op)

    def _propagate(self, name, args, inputs, labels, out) -> None:
        known = [lab for lab in labels if lab is not None]
        scalar = name in _SCALAR_OPS and len(inputs) == 1
        keeps = (name in _LAYOUT_OPS or scalar) and len(known) == len(labels)
        merged = _Label(
            activation=any(lab.activation for lab in known),
            from_input=any(lab.from_input for lab in known),
            producers=frozenset().union(*(lab.producers for lab in known)),
            quantized=keeps and all(lab.quantized for lab in known),
        )
        outputs = [t for t in tree_leaves(out) if isinstance(t, torch.Tensor)]
        if not outputs and args and isinstance(args[0], torch.Tensor):
            outputs = [args[0]]  # in place (__setitem__, copy_)
        for tensor in outputs:
            self.labels[tensor] = merged


def _tensors(value) -> list[torch.Tensor]:
    return [t for t in tree_leaves(value) if isinstance(t, torch.Tensor)]


def trace(model: nn.Module, example: torch.Tensor, layers: Collection[str] = ()) -> Trace:
    """Run ``model(example)`` once in eval mode without autograd and report what it executed
    (eval mode: inference's control flow, and no batch-norm statistics are updated).

    Args:
        model: any module (float or quantized).
        example: an input of the shape the model runs at (zeros are enough: only the data
            flow is read, never the values).
        layers: names of the modules the data flow is reported between (``first``/``last``).
    """
    result = Trace()
    recorder = _Recorder(result)
    layers = set(layers)
    order = {name: i for i, (name, _) in enumerate(model.named_modules())}
    first: set[str] = set()
    handles = []
    was_training = model.training

    def pre(name):
        def hook(module, args):
            if name not in result.calls:
                result.executed.append(name)
                result.calls[name] = []
            ops: list[Op] = []
            result.calls[name].append(ops)
            recorder.stack.append([name, ops])
            if name in layers and any(
                (lab := recorder.label(t)) is not None and lab.from_input for t in _tensors(args)
            ):
                first.add(name)

        return hook

    def post(name):
        def hook(module, args, output):
            recorder.stack.pop()
            if isinstance(module, (ActivationQuantizer, WeightQuantizer)):
                source = [recorder.label(t) for t in _tensors(args)]
                base = next((lab for lab in source if lab is not None), _Label())
                for tensor in _tensors(output):
                    recorder.labels[tensor] = replace(base, quantized=True)
            if name in layers:
                for tensor in _tensors(output):
                    lab = recorder.label(tensor) or _Label()
                    recorder.labels[tensor] = replace(
                        lab, from_input=False, producers=frozenset({name})
                    )

        return hook

    try:
        for name, module in model.named_modules():
            handles.append(module.register_forward_pre_hook(pre(name)))
            handles.append(module.register_forward_hook(post(name), always_call=True))
        recorder.labels[example] = _Label(activation=True, from_input=True)
        model.eval()
        with torch.no_grad(), recorder:
            output = model(example)
        last = set()
        for tensor in _tensors(output):
            lab = recorder.label(tensor)
            if lab is not None:
                last |= lab.producers
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    result.first = sorted(first, key=order.__getitem__)
    result.last = sorted(last, key=order.__getitem__)
    return result
