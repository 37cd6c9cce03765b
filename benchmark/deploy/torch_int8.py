"""PyTorch's native x86 INT8: quantized ``Conv3d`` kernels (FBGEMM/oneDNN) through eager mode.

Each selected ``nn.Conv3d`` is wrapped as quantize -> ``torch.ao.nn.quantized.Conv3d`` ->
dequantize, with per-channel symmetric INT8 weights and per-tensor unsigned activations from
MinMax observers over the calibration patches (``reduce_range``: 7-bit activations, which
FBGEMM needs on CPUs without VNNI to avoid saturating its 16-bit intermediate sums).
Normalisations, activations and transposed convolutions stay float: quantizing them too was
faster but moved too many voxels (it is not offered). Eager mode needs no graph tracing, so
any network with ``Conv3d`` modules works, and it imports neither torchvision nor timm.
"""

from __future__ import annotations

import contextlib
import copy
import warnings
from collections.abc import Iterable, Iterator

import numpy as np
import pandas as pd
import torch
from torch import nn

from benchmark.deploy.latency import torch_threads
from benchmark.deploy.layer_policy import ConvShape

__all__ = [
    "unavailable_reason",
    "torch_conv_layers",
    "quantize_convs",
    "TorchPredictor",
    "op_counts",
    "ENGINE",
]

ENGINE = "x86"


def unavailable_reason() -> str | None:
    """Why PyTorch's x86 INT8 kernels cannot run here, or ``None``."""
    if ENGINE not in torch.backends.quantized.supported_engines:
        return (
            f"skipped: torch {torch.__version__} has no {ENGINE!r} quantized engine "
            f"(engines {torch.backends.quantized.supported_engines})"
        )
    return None


@contextlib.contextmanager
def _engine() -> Iterator[None]:
    previous = torch.backends.quantized.engine
    torch.backends.quantized.engine = ENGINE
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.ao.quantization's migration notices
            yield
    finally:
        torch.backends.quantized.engine = previous


class _QuantizedConv(nn.Module):
    """quantize -> conv -> dequantize around one float convolution (converted in place)."""

    def __init__(self, conv: nn.Module):
        super().__init__()
        from torch.ao.quantization import DeQuantStub, QuantStub

        self.quant, self.conv, self.dequant = QuantStub(), conv, DeQuantStub()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dequant(self.conv(self.quant(x)))


@torch.no_grad()
def torch_conv_layers(model: nn.Module, example: torch.Tensor) -> dict[str, ConvShape]:
    """Module name -> :class:`ConvShape` of every ``Conv3d``/``ConvTranspose3d``, by one forward."""
    shapes: dict[str, ConvShape] = {}
    hooks = []
    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv3d, nn.ConvTranspose3d)):

            def hook(mod: nn.Module, args: tuple, _out: object, name: str = name) -> None:
                transposed = isinstance(mod, nn.ConvTranspose3d)
                pad = tuple(int(p) for p in mod.padding)
                shapes[name] = ConvShape(
                    op="ConvTranspose" if transposed else "Conv",
                    in_channels=int(mod.in_channels),
                    out_channels=int(mod.out_channels),
                    kernel=tuple(int(k) for k in mod.kernel_size),
                    stride=tuple(int(s) for s in mod.stride),
                    groups=int(mod.groups),
                    spatial=tuple(int(d) for d in args[0].shape[2:]),
                    padding=pad + pad,
                )

            hooks.append(module.register_forward_hook(hook))
    try:
        model.eval()(example[:1])
    finally:
        for h in hooks:
            h.remove()
    return shapes


@torch.no_grad()
def quantize_convs(
    model: nn.Module, batches: Iterable[torch.Tensor], keep_float: Iterable[str] = ()
) -> nn.Module:
    """A copy of ``model`` whose ``Conv3d`` layers (except ``keep_float``) run in x86 INT8.

    Args:
        model: float network in eval mode (left untouched).
        batches: calibration inputs ``[B, C, *roi]``.
        keep_float: module names of convolutions to leave in float (a layer policy's choice).
    """
    from torch.ao.quantization import (
        MinMaxObserver,
        PerChannelMinMaxObserver,
        QConfig,
        convert,
        prepare,
    )

    keep = set(keep_float)
    qmodel = copy.deepcopy(model).eval()
    qconfig = QConfig(
        activation=MinMaxObserver.with_args(dtype=torch.quint8, reduce_range=True),
        weight=PerChannelMinMaxObserver.with_args(
            dtype=torch.qint8, qscheme=torch.per_channel_symmetric
        ),
    )
    targets = {
        id(m): m
        for name, m in qmodel.named_modules()
        if isinstance(m, nn.Conv3d) and name not in keep
    }
    wrappers = {key: _QuantizedConv(conv) for key, conv in targets.items()}
    for wrapper in wrappers.values():
        wrapper.qconfig = qconfig
    # a module may be reachable under several names (nnU-Net blocks hold each conv both as
    # ``conv`` and inside ``all_modules``): every reference is replaced by the same wrapper
    for _, parent in list(qmodel.named_modules(remove_duplicate=False)):
        for child_name, child in list(parent.named_children()):
            if id(child) in wrappers and not isinstance(parent, _QuantizedConv):
                setattr(parent, child_name, wrappers[id(child)])
    with _engine():
        prepare(qmodel, inplace=True)
        for batch in batches:
            qmodel(torch.as_tensor(batch, dtype=torch.float32))
        convert(qmodel, inplace=True)
    return qmodel.eval()


class TorchPredictor:
    """Logits for ``[B, C, *roi]`` numpy inputs from a (quantized) module on the CPU."""

    provider = f"torch-{ENGINE}"

    def __init__(self, model: nn.Module, threads: int = 0):
        self.model, self.threads = model.eval(), threads

    @torch.no_grad()
    def __call__(self, x: np.ndarray) -> np.ndarray:
        with _engine(), torch_threads(self.threads):
            out = self.model(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)))
        out = out[0] if isinstance(out, (list, tuple)) else out
        return out.float().numpy()


def op_counts(qmodel: nn.Module, used: Iterable[str] | None = None) -> pd.DataFrame:
    """Compute modules by type and arithmetic, in the columns of ``ops.optimized_op_counts``.

    Args:
        qmodel: a module from :func:`quantize_convs`.
        used: names of the convolutions the forward pass runs (from :func:`torch_conv_layers`);
            others (e.g. unused deep-supervision heads) are not counted. ``None``: all.
    """
    from torch.ao.nn import quantized as nnq

    named = dict(qmodel.named_modules())
    if used is not None:
        wanted = {n for n in used} | {n + ".conv" for n in used}
        modules = [m for n, m in named.items() if n in wanted]
    else:
        modules = list(named.values())
    counts: dict[tuple[str, str], int] = {}
    for module in modules:
        if isinstance(module, (nnq.Conv3d, nnq.Linear)):
            key = (type(module).__name__ + ":int8", "integer")
        elif isinstance(module, (nn.Conv3d, nn.ConvTranspose3d, nn.Linear)):
            key = (type(module).__name__, "float_compute")
        else:
            continue
        counts[key] = counts.get(key, 0) + 1
    rows = [
        {"op_type": op, "domain": "torch", "count": n, "kind": kind}
        for (op, kind), n in counts.items()
    ]
    return pd.DataFrame(rows, columns=["op_type", "domain", "count", "kind"])
