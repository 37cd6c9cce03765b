"""PyTorch's native x86 INT8: quantized ``Conv3d`` kernels (FBGEMM/oneDNN) on the CPU.

The flow is PyTorch's FX graph mode with the ``x86`` backend's own configuration
(``get_default_qconfig("x86")``): a ``HistogramObserver`` per activation (the range that
minimises the histogram's quantization error) and ``PerChannelMinMaxObserver`` weights
(symmetric INT8, one scale per output channel), calibrated on the patches, then
``convert_fx`` to ``torch.ao.nn.quantized.Conv3d`` modules that run integer kernels
(``quantized::conv3d``) eagerly, with no compiler. Activations use 7-bit ranges
(``reduce_range``) where the CPU has no VNNI (:func:`.ort_quant.needs_reduce_range`), which
FBGEMM needs there to keep its 16-bit intermediate sums from saturating.

Only ``Conv3d`` layers are quantized (each wrapped in quantize -> INT8 conv -> dequantize):
normalisations, activations and transposed convolutions stay float (quantizing them too was
faster but moved too many voxels), and a layer policy's ``keep_float`` layers stay float.

PT2E (``torch.export`` + ``X86InductorQuantizer``) is not used: with torch 2.13 it lives in
``torchao``, which is not a dependency, and its INT8 kernels appear only after
``torch.compile`` (Inductor C++ code generation). Networks FX cannot trace symbolically
(MONAI's SwinUNETR pads by input shape) fall back to eager mode with the same observers and
kernels; ``qmodel.int8_flow`` says which ran (``fx`` or ``eager``). Neither imports
torchvision or timm.

QAT through the same flow (backend ``torch_x86_int8_qat``, :class:`TorchQat`): the x86 QAT
configuration (``get_default_qat_qconfig``: moving-average min/max fake quantizers, per-channel
symmetric weights) from ``prepare_qat_fx`` (or eager ``prepare_qat``), ranges first observed on
the calibration patches, weights then fine-tuned by distillation from the FP32 logits (the
patches carry no labels here), the ranges frozen half-way as PyTorch's QAT recipe does, then
the same conversion to integer kernels.
"""

from __future__ import annotations

import contextlib
import copy
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn

from benchmark.deploy.latency import torch_threads
from benchmark.deploy.layer_policy import ConvShape
from benchmark.deploy.ort_quant import needs_reduce_range
from benchmark.models import full_resolution_logits
from benchmark.quant.algorithms.qat import distillation_loss

__all__ = [
    "unavailable_reason",
    "torch_conv_layers",
    "quantize_convs",
    "TorchQat",
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


def _qconfig(qat: bool):
    """The ``x86`` backend's default configuration (QAT: its fake-quant one), 7-bit
    activations only without VNNI."""
    from torch.ao.quantization import (
        HistogramObserver,
        QConfig,
        get_default_qat_qconfig,
        get_default_qconfig,
    )

    reduce = needs_reduce_range()
    if qat:
        default = get_default_qat_qconfig(ENGINE)
        return QConfig(
            activation=default.activation.with_args(reduce_range=reduce), weight=default.weight
        )
    default = get_default_qconfig(ENGINE)
    return QConfig(
        activation=HistogramObserver.with_args(reduce_range=reduce), weight=default.weight
    )


def _prepare_fx(model: nn.Module, example: torch.Tensor, keep: set[str], qat: bool) -> nn.Module:
    """FX graph mode: observers (QAT: fake quantizers) per the qconfig on the ``Conv3d`` layers."""
    from torch.ao.quantization import QConfigMapping
    from torch.ao.quantization.quantize_fx import prepare_fx, prepare_qat_fx

    mapping = QConfigMapping().set_global(None).set_object_type(nn.Conv3d, _qconfig(qat))
    for name in keep:
        mapping = mapping.set_module_name(name, None)
    prepare = prepare_qat_fx if qat else prepare_fx
    return prepare(copy.deepcopy(model).train(qat), mapping, example_inputs=(example,))


def _prepare_eager(model: nn.Module, keep: set[str], qat: bool) -> nn.Module:
    """Eager mode: each chosen ``Conv3d`` wrapped in quantize -> conv -> dequantize."""
    from torch.ao.quantization import prepare, prepare_qat

    qmodel = copy.deepcopy(model).train(qat)
    qconfig = _qconfig(qat)
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
    if qat:
        return prepare_qat(qmodel, inplace=True)
    return prepare(qmodel, inplace=True)


@dataclass(frozen=True)
class TorchQat:
    """Fine-tuning of PyTorch's QAT flow: ``steps`` Adam steps on the weights, one calibration
    batch each (in turn), against the FP32 model's logits (per-voxel KL, as the fake-quant
    engine's ``qat`` distils); the moving-average ranges are frozen for the last half."""

    steps: int
    lr: float


def _finetune(prepared: nn.Module, model: nn.Module, batches: list[torch.Tensor], qat: TorchQat):
    """Distil the FP32 ``model`` into the fake-quantized ``prepared`` one (see :class:`TorchQat`)."""
    from torch.ao.quantization import disable_observer

    # the modules stay in eval mode: InstanceNorm and dropout behave as at inference, and the
    # fake quantizers observe and round whatever the mode
    weights = [p for p in prepared.parameters() if p.requires_grad]
    optimiser = torch.optim.Adam(weights, lr=qat.lr)
    teachers: dict[int, torch.Tensor] = {}  # the FP32 logits of each batch, computed once
    for step in range(qat.steps):
        if step == qat.steps // 2:
            prepared.apply(disable_observer)
        index = step % len(batches)
        batch = batches[index]
        if index not in teachers:
            with torch.no_grad():
                teachers[index] = full_resolution_logits(model(batch))
        loss = distillation_loss(full_resolution_logits(prepared(batch)), teachers[index])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()


def quantize_convs(
    model: nn.Module,
    batches: Iterable[torch.Tensor],
    keep_float: Iterable[str] = (),
    qat: TorchQat | None = None,
) -> nn.Module:
    """A copy of ``model`` whose ``Conv3d`` layers (except ``keep_float``) run in x86 INT8.

    Args:
        model: float network in eval mode (left untouched).
        batches: calibration inputs ``[B, C, *roi]`` (training patches).
        keep_float: module names of convolutions to leave in float (a layer policy's choice).
        qat: fine-tune through PyTorch's QAT flow before conversion (None: static PTQ).

    Returns:
        The quantized module, with ``int8_flow`` set to ``fx`` or ``eager`` (``+qat`` after
        fine-tuning).
    """
    keep, training = set(keep_float), qat is not None and qat.steps > 0
    batches = [torch.as_tensor(b, dtype=torch.float32) for b in batches]
    if not batches:
        raise ValueError("quantize_convs needs at least one calibration batch; got none")
    from torch.ao.quantization import convert
    from torch.ao.quantization.quantize_fx import convert_fx

    with _engine():
        try:
            prepared, flow = _prepare_fx(model, batches[0], keep, training), "fx"
        except Exception:  # symbolic tracing failed (shape-dependent Python in the forward)
            prepared, flow = _prepare_eager(model, keep, training), "eager"
        prepared.eval()
        with torch.no_grad():  # ranges observed on the patches (QAT: the starting ranges)
            for batch in batches:
                prepared(batch)
        if training:
            _finetune(prepared, model, batches, qat)
        prepared.eval()
        qmodel = convert_fx(prepared) if flow == "fx" else convert(prepared, inplace=True)
    qmodel.int8_flow = flow + ("+qat" if training else "")
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
        return full_resolution_logits(out).float().numpy()


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
