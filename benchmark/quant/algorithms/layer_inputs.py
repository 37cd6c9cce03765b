"""What the data-driven algorithms read from a quantized model: call order, module inputs and
outputs, and a layer written as the matrix product ``W X``.

Layer-wise methods (GPTQ, AdaRound) and block-wise ones (BRECQ, QDrop) optimise one module at
a time, on the inputs it receives in the quantized model whose earlier modules are already
optimised (so later modules see quantized predecessors). :func:`module_inputs` reruns the
calibration batches and stops each forward once the module is reached, so the rest of the
network is not computed; :func:`module_outputs` does the same after the module. A module called
several times per forward (shared weights) is seen at its first call.

:func:`input_columns` and :func:`weight_matrix` write a layer as ``Y = W X`` per group, the form
GPTQ's Hessian ``H = 2 X X^T`` is built from: Linear (``X`` = input features x tokens), Conv2d/
Conv3d by im2col (``X`` = ``C_in/groups * prod(kernel)`` patch rows x output positions, padding
mode honoured), and the non-overlapping ConvTranspose (stride = kernel, no padding or dilation:
nnU-Net's and MONAI's up-sampling), which is a per-voxel linear map from ``C_in`` to ``C_out *
prod(kernel)``. Other transposed convolutions are not written as a matrix (:func:`matrix_support`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from benchmark.quant.attention import QuantAttention
from benchmark.quant.errors import QuantError
from benchmark.quant.modules import QuantLayer

__all__ = [
    "Call",
    "model_device",
    "quant_layers",
    "forward_order",
    "module_inputs",
    "module_outputs",
    "run_call",
    "matrix_support",
    "weight_matrix",
    "set_weight_matrix",
    "input_columns",
    "with_defaults",
]

#: im2col chunks hold at most this many elements (64 MiB of float32)
CHUNK_ELEMENTS = 1 << 24

Call = tuple[tuple, dict]


class _Reached(Exception):
    """Stops a forward once the module of interest has been seen."""


def with_defaults(algorithm: str, defaults: dict, options: dict) -> dict:
    """``options`` over ``defaults``; an unknown key is an error naming the allowed ones."""
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        raise QuantError(
            f"{algorithm}: unknown option(s) {unknown}; allowed: {', '.join(sorted(defaults))}"
        )
    return {**defaults, **options}


def model_device(qmodel: nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer (CPU for an empty model)."""
    for tensor in (*qmodel.parameters(), *qmodel.buffers()):
        return tensor.device
    return torch.device("cpu")


def quant_layers(module: nn.Module) -> list[nn.Module]:
    """Quantized conv/linear layers and attention blocks under ``module`` (itself included)."""
    return [m for m in module.modules() if isinstance(m, (QuantLayer, QuantAttention))]


def forward_order(
    qmodel: nn.Module, modules: Sequence[nn.Module], batch: torch.Tensor
) -> list[nn.Module]:
    """``modules`` in the order one forward on ``batch`` first calls them; uncalled ones dropped."""
    wanted = {id(m) for m in modules}
    order: list[nn.Module] = []
    seen: set[int] = set()

    def record(module, args):
        if id(module) in wanted and id(module) not in seen:
            seen.add(id(module))
            order.append(module)

    handles = [m.register_forward_pre_hook(record) for m in modules]
    try:
        with torch.no_grad():
            qmodel(batch.to(model_device(qmodel)))
    finally:
        for handle in handles:
            handle.remove()
    return order


def _detached(obj):
    if isinstance(obj, torch.Tensor):
        return obj.detach()
    if isinstance(obj, (list, tuple)):
        return type(obj)(_detached(o) for o in obj)
    if isinstance(obj, dict):
        return {k: _detached(v) for k, v in obj.items()}
    return obj


def module_inputs(
    qmodel: nn.Module,
    module: nn.Module,
    batches: Iterable[torch.Tensor],
    consume: Callable[[Call], None] | None = None,
) -> list[Call]:
    """``(args, kwargs)`` that ``module`` receives when ``qmodel`` runs each batch.

    With ``consume`` each call is handed to it instead of being kept (GPTQ folds them into a
    Hessian); the result is then empty. Batches that never reach ``module`` add nothing.
    """
    calls: list[Call] = []

    def capture(mod, args, kwargs):
        call = (_detached(args), _detached(kwargs))
        if consume is None:
            calls.append(call)
        else:
            consume(call)
        raise _Reached

    _run_until(qmodel, module.register_forward_pre_hook(capture, with_kwargs=True), batches)
    return calls


def module_outputs(
    qmodel: nn.Module, module: nn.Module, batches: Iterable[torch.Tensor]
) -> list[object]:
    """What ``module`` returns (detached) when ``qmodel`` runs each batch."""
    outputs: list[object] = []

    def capture(mod, args, output):
        outputs.append(_detached(output))
        raise _Reached

    _run_until(qmodel, module.register_forward_hook(capture), batches)
    return outputs


def _run_until(qmodel: nn.Module, handle, batches: Iterable[torch.Tensor]) -> None:
    device = model_device(qmodel)
    try:
        with torch.no_grad():
            for batch in batches:
                try:
                    qmodel(batch.to(device))
                except _Reached:
                    pass
    finally:
        handle.remove()


def run_call(module: nn.Module, call: Call):
    """``module(*args, **kwargs)`` on copies of the tensor arguments (an in-place first op
    must not alter stored inputs)."""
    args, kwargs = call
    copy = [a.clone() if isinstance(a, torch.Tensor) else a for a in args]
    return module(*copy, **kwargs)


def _non_overlapping(layer: nn.Module) -> bool:
    return (
        tuple(layer.stride) == tuple(layer.kernel_size)
        and all(p == 0 for p in layer.padding)
        and all(d == 1 for d in layer.dilation)
        and all(p == 0 for p in layer.output_padding)
        and layer.groups == 1
    )


def matrix_support(layer: nn.Module) -> str | None:
    """``None`` if the layer can be written as ``W X``, else why not."""
    if isinstance(layer, nn.Linear):
        return None
    if isinstance(layer, nn.modules.conv._ConvTransposeNd):
        if _non_overlapping(layer):
            return None
        return "a transposed convolution with overlapping kernels (stride != kernel size)"
    if isinstance(layer, (nn.Conv2d, nn.Conv3d)):
        return None
    return f"{type(layer).__name__} is not a Linear, Conv2d/3d or ConvTranspose2d/3d layer"


def weight_matrix(layer: nn.Module, tensor: torch.Tensor | None = None) -> torch.Tensor:
    """``tensor`` (default the weight; any tensor of the weight's shape) as ``[groups, rows,
    columns]``, rows being outputs and columns the entries of :func:`input_columns`."""
    w = layer.weight if tensor is None else tensor
    if isinstance(layer, nn.Linear):
        return w.reshape(1, *w.shape)
    if isinstance(layer, nn.modules.conv._ConvTransposeNd):
        # [C_in, C_out, *k] -> rows (C_out, *k), columns C_in
        return w.movedim(0, -1).reshape(1, -1, w.shape[0])
    groups = layer.groups
    return w.reshape(groups, w.shape[0] // groups, -1)


def set_weight_matrix(layer: nn.Module, matrix: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`weight_matrix`: a tensor of the weight's shape."""
    shape = layer.weight.shape
    if isinstance(layer, nn.modules.conv._ConvTransposeNd):
        return matrix.reshape(*shape[1:], shape[0]).movedim(-1, 0)
    return matrix.reshape(shape)


def input_columns(layer: nn.Module, x: torch.Tensor) -> Iterator[torch.Tensor]:
    """The layer's input ``x`` as chunks ``[groups, columns, positions]`` of ``X``."""
    if isinstance(layer, nn.Linear):
        yield x.reshape(-1, x.shape[-1]).t().unsqueeze(0)
        return
    if isinstance(layer, nn.modules.conv._ConvTransposeNd):
        # each input voxel maps to its own output block: the columns are its channels
        yield x.movedim(1, -1).reshape(-1, x.shape[1]).t().unsqueeze(0)
        return
    yield from _conv_columns(layer, x)


def _conv_columns(layer: nn.Module, x: torch.Tensor) -> Iterator[torch.Tensor]:
    """im2col of a Conv2d/Conv3d input, in slabs of output rows along the first spatial dim."""
    pad = layer._reversed_padding_repeated_twice
    if any(pad):
        mode = "constant" if layer.padding_mode == "zeros" else layer.padding_mode
        x = F.pad(x, pad, mode=mode)
    nd = x.ndim - 2
    kernel, stride, dilation = layer.kernel_size, layer.stride, layer.dilation
    span = [(k - 1) * d + 1 for k, d in zip(kernel, dilation, strict=True)]
    out = [(x.shape[2 + i] - span[i]) // stride[i] + 1 for i in range(nd)]
    channels, groups = x.shape[1], layer.groups
    per_row = math.prod(out[1:]) * channels * math.prod(kernel)
    rows = max(1, CHUNK_ELEMENTS // per_row)
    taps = tuple(slice(None, None, d) for d in dilation)
    for b in range(x.shape[0]):
        for start in range(0, out[0], rows):
            stop = min(out[0], start + rows)
            patches = x[b, :, start * stride[0] : (stop - 1) * stride[0] + span[0]]
            for i in range(nd):
                patches = patches.unfold(1 + i, span[i], stride[i])
            patches = patches[(Ellipsis, *taps)]  # [C, *out, *kernel]
            order = (0, *range(nd + 1, 2 * nd + 1), *range(1, nd + 1))
            yield patches.permute(order).reshape(groups, channels // groups * math.prod(kernel), -1)
