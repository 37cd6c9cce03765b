"""Public verbs: ``quantize``, ``calibrate``, ``save_ranges``/``load_ranges`` and the reports.

Typical use (one sweep point)::

    qmodel = quantize(model, QuantSpec("w4a4", "adaptive", "percentile"))
    path = cache / f"{model_name}_{spec.calibration_key()}_{calib_id}.pt"
    if path.exists():
        load_ranges(qmodel, path)
    else:
        calibrate(qmodel, calibration_patches(dataset, n=16, roi_size=roi))
        save_ranges(qmodel, path)
    print(quantization_table(qmodel).to_string())

Layer selection: every module whose exact type has a quantized counterpart (Conv2d/3d,
ConvTranspose2d/3d, Linear, MONAI SABlock/WindowAttention, nn.MultiheadAttention), minus the
``exclude`` name patterns and ``exclude_types``, restricted to ``include`` patterns when given
(fnmatch on the dotted module name, e.g. ``decoder.*``). ``keep_first_last`` additionally keeps the
first and last selected conv/linear layers (in registration order: the stem conv and, for
nnU-Net/MONAI networks, the segmentation head) in float32.
"""

from __future__ import annotations

import copy
import fnmatch
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

import pandas as pd
import torch
from torch import nn

from benchmark.quant.attention import ATTENTION_CLASSES, QuantAttention
from benchmark.quant.errors import (
    CalibrationError,
    NoQuantizableLayerError,
    QuantError,
    RangesMismatchError,
)
from benchmark.quant.modules import LAYER_CLASSES, QuantLayer
from benchmark.quant.quantizer import ActivationQuantizer, check_finite
from benchmark.quant.spec import QuantSpec

__all__ = [
    "quantize",
    "calibrate",
    "save_ranges",
    "load_ranges",
    "copy_ranges",
    "quantization_table",
    "quantized_layer_names",
    "FloatCast",
]

TABLE_COLUMNS = [
    "module",
    "op_type",
    "weight_scheme",
    "activation_scheme",
    "w_bits",
    "a_bits",
    "execution",
    "calibrated",
]


class FloatCast(nn.Module):
    """Runs ``module`` fully cast to ``dtype``; inputs are cast in and outputs back to float32.

    A full cast, not ``torch.autocast``: autocast keeps normalisations, softmax and reductions in
    float32 and picks per-op precisions that differ between CPU and CUDA and between torch
    releases, so it would measure a device-dependent mix. A full cast stores every weight and
    activation in ``dtype`` and runs every op in it, which is what a half-precision deployment
    does, and it is the same function on every device.

    One exception, for speed only: PyTorch's CPU float16 3D convolutions are about ten times
    slower than float32 ones (a tiny U-Net window takes seconds), which would make float16 the
    cost of every CPU sweep. On CPU inputs float16 is therefore emulated: the same float16
    weights held in float32, and the output of every leaf module rounded to float16 (overflow
    to inf included), with the arithmetic inside each module in float32, as float16 GPU kernels
    accumulate in float32. ``emulate_on_cpu=False`` runs the real float16 kernels instead.

    Args:
        module: the network (already converted with ``.to(dtype)``).
        dtype: ``torch.float16`` or ``torch.bfloat16``.
        emulate_on_cpu: emulate float16 on CPU inputs as described above.
    """

    def __init__(self, module: nn.Module, dtype: torch.dtype, emulate_on_cpu: bool = True) -> None:
        super().__init__()
        self.module = module
        self.dtype = dtype
        self.emulate_on_cpu = emulate_on_cpu
        # Not a submodule: built on first CPU use, kept out of state_dict() and .to().
        self._emulation: list[nn.Module] = []

    def _emulated(self) -> nn.Module:
        if not self._emulation:
            shadow = copy.deepcopy(self.module).float()
            for leaf in shadow.modules():
                if next(leaf.children(), None) is None:
                    leaf.register_forward_hook(_round_output_to(self.dtype))
            self._emulation.append(shadow.to("cpu"))
        return self._emulation[0]

    def forward(self, *args, **kwargs):
        cast_in = _map_tensors(args, lambda t: t.to(self.dtype) if t.is_floating_point() else t)
        tensors = [t for t in _flatten(cast_in) if isinstance(t, torch.Tensor)]
        on_cpu = bool(tensors) and all(t.device.type == "cpu" for t in tensors)
        if self.emulate_on_cpu and self.dtype == torch.float16 and on_cpu:
            self._emulated().train(self.training)
            as_float = _map_tensors(cast_in, lambda t: t.float() if t.is_floating_point() else t)
            out = self._emulated()(*as_float, **kwargs)
        else:
            out = self.module(*cast_in, **kwargs)
        return _map_tensors(out, lambda t: t.float() if t.is_floating_point() else t)

    def extra_repr(self) -> str:
        return f"dtype={self.dtype}, emulate_on_cpu={self.emulate_on_cpu}"


def _round_output_to(dtype: torch.dtype):
    def hook(module: nn.Module, inputs, output):
        return _map_tensors(output, lambda t: t.to(dtype).float() if t.is_floating_point() else t)

    return hook


def _flatten(obj) -> list:
    if isinstance(obj, (list, tuple)):
        return [x for o in obj for x in _flatten(o)]
    if isinstance(obj, dict):
        return [x for o in obj.values() for x in _flatten(o)]
    return [obj]


def _map_tensors(obj, fn):
    if isinstance(obj, torch.Tensor):
        return fn(obj)
    if isinstance(obj, (list, tuple)):
        return type(obj)(_map_tensors(o, fn) for o in obj)
    if isinstance(obj, dict):
        return {k: _map_tensors(v, fn) for k, v in obj.items()}
    return obj


def _handlers(spec: QuantSpec) -> dict[type, type]:
    handlers = dict(LAYER_CLASSES)
    if spec.quantize_attention:
        handlers.update(ATTENTION_CLASSES)
    return handlers


def _select(model: nn.Module, spec: QuantSpec) -> tuple[list[str], list[tuple[str, str]]]:
    """Names to quantize, and ``(name, reason)`` for candidates kept in float32."""
    handlers = _handlers(spec)
    candidates = [n for n, m in model.named_modules() if type(m) in handlers and n]
    chosen, skipped = [], []
    for name in candidates:
        type_name = type(model.get_submodule(name)).__name__
        if spec.include and not any(fnmatch.fnmatchcase(name, p) for p in spec.include):
            skipped.append((name, "not in include"))
        elif any(fnmatch.fnmatchcase(name, p) for p in spec.exclude):
            skipped.append((name, "exclude pattern"))
        elif type_name in spec.exclude_types:
            skipped.append((name, "exclude_types"))
        else:
            chosen.append(name)
    if spec.keep_first_last:
        layers = [n for n in chosen if type(model.get_submodule(n)) in LAYER_CLASSES]
        for name in {layers[0], layers[-1]} if layers else set():
            chosen.remove(name)
            skipped.append((name, "keep_first_last"))
    return chosen, skipped


def quantize(model: nn.Module, spec: QuantSpec) -> nn.Module:
    """A fake-quantized copy of ``model`` for ``spec``; ``model`` itself is not modified.

    Args:
        model: any ``nn.Module`` (in eval mode for inference).
        spec: the quantization point.

    Returns:
        ``fp32``: a deep copy. ``fp16``/``bf16``: a :class:`FloatCast` around a cast copy.
        ``wNaM``: a deep copy whose selected layers are swapped for their quantized classes;
        static activation ranges still need :func:`calibrate` or :func:`load_ranges`.

    Raises:
        NoQuantizableLayerError: no layer left after selection (the message lists candidates).
        NonFiniteError: a selected layer's weight holds NaN/Inf.
    """
    if not isinstance(spec, QuantSpec):
        raise TypeError(
            f"spec must be a QuantSpec, got {type(spec).__name__}; build one with QuantSpec(...)"
        )
    qmodel = copy.deepcopy(model)
    if spec.is_float:
        if spec.precision != "fp32":
            qmodel = FloatCast(qmodel.to(spec.float_dtype), spec.float_dtype)
        qmodel.quant_spec = spec
        qmodel.quant_skipped = []
        return qmodel
    chosen, skipped = _select(qmodel, spec)
    if not chosen:
        found = [f"{n} ({r})" for n, r in skipped] or ["none"]
        raise NoQuantizableLayerError(
            f"no layer of {type(model).__name__} is quantized by {spec.precision}/{spec.granularity}; "
            f"supported types: {', '.join(t.__name__ for t in _handlers(spec))}; candidates: "
            f"{', '.join(found)}. Relax include/exclude/exclude_types or check the model."
        )
    handlers = _handlers(spec)
    for name in chosen:
        module = qmodel.get_submodule(name)
        for param_name, param in module.named_parameters(recurse=False):
            check_finite(param, f"parameter {name}.{param_name} of {type(model).__name__}")
        module.__class__ = handlers[type(module)]
        module.quant_init(spec, name)
    qmodel.quant_spec = spec
    qmodel.quant_skipped = skipped
    return qmodel


def _activation_quantizers(qmodel: nn.Module) -> dict[str, ActivationQuantizer]:
    return {n: m for n, m in qmodel.named_modules() if isinstance(m, ActivationQuantizer)}


def _spec_of(qmodel: nn.Module) -> QuantSpec:
    spec = getattr(qmodel, "quant_spec", None)
    if spec is None:
        raise QuantError(
            f"{type(qmodel).__name__} was not made by benchmark.quant.quantize; call "
            "quantize(model, spec) first"
        )
    return spec


def calibrate(qmodel: nn.Module, batches: Iterable[torch.Tensor]) -> nn.Module:
    """Collect static activation ranges by running ``batches`` through ``qmodel``.

    Runs in eval mode under ``torch.no_grad``; activations pass through unquantized while ranges
    are collected, then ranges are frozen. Calling it again recalibrates from scratch.

    Args:
        qmodel: output of :func:`quantize`.
        batches: ROI-size patches ``[B, C, *roi]`` (the size sliding-window inference feeds the
            model), moved to the model's device here; from training or validation cases only.

    Returns:
        ``qmodel`` (calibrated in place).

    Raises:
        CalibrationError: no batches, or a batch that is not a tensor.
        NonFiniteError: NaN/Inf in a batch or in an intermediate activation.
    """
    spec = _spec_of(qmodel)
    quantizers = _activation_quantizers(qmodel)
    if spec.is_float:
        return qmodel
    device = next((p.device for p in qmodel.parameters()), torch.device("cpu"))
    was_training = qmodel.training
    qmodel.eval()
    count = 0
    for quantizer in quantizers.values():
        quantizer.start_observing()
    try:
        with torch.no_grad():
            for batch in batches:
                if not isinstance(batch, torch.Tensor):
                    raise CalibrationError(
                        f"calibration batch {count} is a {type(batch).__name__}, expected a tensor "
                        "[B, C, *roi]; pass images only (e.g. benchmark.data.calibration_patches)"
                    )
                check_finite(batch, f"calibration batch {count}")
                qmodel(batch.to(device))
                count += 1
        if count == 0:
            raise CalibrationError(
                "calibrate got no batches; pass a non-empty iterable of [B, C, *roi] tensors "
                "(e.g. benchmark.data.calibration_patches(dataset, n=16, roi_size=...))"
            )
        for quantizer in quantizers.values():
            quantizer.finish_observing()
    finally:
        for quantizer in quantizers.values():
            quantizer._observer = None
        qmodel.train(was_training)
    return qmodel


def save_ranges(qmodel: nn.Module, path: str | os.PathLike) -> Path:
    """Write the calibrated static ranges to ``path`` (``torch.save`` of plain tensors).

    The file holds ``{"spec": spec.to_dict(), "calibration_key": ..., "ranges": {name:
    {"lo", "hi", "mapping"}}}`` and is written atomically (temp file, then rename), so a sweep can
    compute ranges once per model x spec x calibration set.

    Returns:
        The path written.
    """
    spec = _spec_of(qmodel)
    ranges = {
        name: {"lo": q.lo.cpu(), "hi": q.hi.cpu(), "mapping": q.resolved_mapping}
        for name, q in _activation_quantizers(qmodel).items()
        if not q.dynamic and q.lo is not None
    }
    payload = {"spec": spec.to_dict(), "calibration_key": spec.calibration_key(), "ranges": ranges}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(fd)
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def copy_ranges(source: nn.Module, target: nn.Module) -> nn.Module:
    """Give ``target``'s static activation quantizers the ranges of ``source``'s of the same name.

    Both are :func:`quantize` outputs of the same network with the same activation bits,
    granularity and observer; ``target`` may quantize fewer layers (a sensitivity variant
    reuses the calibration of the fully quantized model instead of calibrating again).

    Raises:
        RangesMismatchError: a static quantizer of ``target`` has no calibrated counterpart.
    """
    ranges = _activation_quantizers(source)
    for name, quantizer in _activation_quantizers(target).items():
        if quantizer.dynamic:
            continue
        origin = ranges.get(name)
        if origin is None or origin.lo is None:
            raise RangesMismatchError(f"{name} has no calibrated range in the source model")
        quantizer.set_range(origin.lo, origin.hi, origin.resolved_mapping)
    return target


def load_ranges(qmodel: nn.Module, path: str | os.PathLike) -> nn.Module:
    """Load ranges written by :func:`save_ranges` (``weights_only=True``) into ``qmodel``.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        RangesMismatchError: the file was made for another spec or another set of layers.
    """
    spec = _spec_of(qmodel)
    payload = torch.load(Path(path), map_location="cpu", weights_only=True)
    if payload.get("calibration_key") != spec.calibration_key():
        raise RangesMismatchError(
            f"{path} holds ranges for spec {payload.get('spec')}, not for {spec.to_dict()}; "
            "recalibrate or pick the file named with this spec's calibration_key()"
        )
    quantizers = _activation_quantizers(qmodel)
    ranges = payload["ranges"]
    static = {n for n, q in quantizers.items() if not q.dynamic}
    unknown = sorted(set(ranges) - static)
    if unknown:
        raise RangesMismatchError(
            f"{path} has ranges for {unknown[:5]} that {type(qmodel).__name__} does not quantize; "
            "the file belongs to another model or include/exclude setting"
        )
    for name, entry in ranges.items():
        quantizer = quantizers[name]
        device = next((b.device for b in qmodel.buffers()), torch.device("cpu"))
        quantizer.set_range(entry["lo"].to(device), entry["hi"].to(device), entry["mapping"])
    return qmodel


def quantization_table(qmodel: nn.Module) -> pd.DataFrame:
    """Which module is quantized how: one row per layer or attention matmul.

    Columns: ``module``, ``op_type``, ``weight_scheme``, ``activation_scheme`` (``granularity/
    static|dynamic/mapping``), ``w_bits``, ``a_bits``, ``execution`` (``integer-factorizable``,
    ``integer-factorizable per kernel position``, ``simulation-only``, or ``float32 (<reason>)``
    for skipped candidates and ``fp16``/``bf16``/``fp32`` casts), ``calibrated``.
    """
    spec = _spec_of(qmodel)
    rows = []
    if spec.is_float:
        handlers = _handlers(spec)
        for name, module in qmodel.named_modules():
            if type(module) in handlers:
                rows.append(
                    {
                        "module": name,
                        "op_type": type(module).__name__,
                        "weight_scheme": spec.precision,
                        "activation_scheme": spec.precision,
                        "execution": f"{spec.precision} cast",
                        "calibrated": True,
                    }
                )
        return pd.DataFrame(rows, columns=TABLE_COLUMNS)
    for name, module in qmodel.named_modules():
        if isinstance(module, (QuantLayer, QuantAttention)):
            rows.extend(module.quant_rows(name))
    for name, reason in qmodel.quant_skipped:
        rows.append(
            {
                "module": name,
                "op_type": type(qmodel.get_submodule(name)).__name__,
                "execution": f"float32 ({reason})",
            }
        )
    return pd.DataFrame(rows, columns=TABLE_COLUMNS)


def quantized_layer_names(qmodel: nn.Module) -> list[str]:
    """Dotted names of the quantized layers and attention blocks, in registration order."""
    return [
        name
        for name, module in qmodel.named_modules()
        if isinstance(module, (QuantLayer, QuantAttention))
    ]
