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

Non-finite values at inference are errors, not silently quantized: a quantized model checks
its inputs, and when its output holds NaN/Inf it runs the input once more with every quantizer
checking its own input, so the error names the first operand that received one (a
``NonFiniteError``). The checks read the model's input and output only (a small fraction of
the activations) unless something is wrong; fp16/bf16 casts are exempt, since overflow to inf
is what a half-precision deployment does.

``calibrate`` runs the spec's algorithm (:mod:`benchmark.quant.algorithms`) around the range
calibration: weight transforms before it, range adjustments and data-driven optimisation after.
"""

from __future__ import annotations

import copy
import fnmatch
from collections.abc import Iterable

import pandas as pd
import torch
from torch import nn

from benchmark.quant.attention import QuantAttention
from benchmark.quant.errors import CalibrationError, NoQuantizableLayerError
from benchmark.quant.floatcast import FloatCast, flatten
from benchmark.quant.handlers import handlers as handler_classes
from benchmark.quant.modules import LAYER_CLASSES, QuantLayer
from benchmark.quant.quantizer import check_finite
from benchmark.quant.ranges import (
    activation_quantizers,
    copy_ranges,
    load_ranges,
    save_ranges,
    spec_algorithms,
    spec_of,
)
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


def _handlers(spec: QuantSpec) -> dict[type, type]:
    return handler_classes(spec.quantize_attention)


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
    qmodel.register_forward_pre_hook(_check_inputs)
    qmodel.register_forward_hook(_check_output)
    return qmodel


def _check_inputs(module: nn.Module, args: tuple) -> None:
    """Forward pre-hook of a quantized model: its tensor inputs must be finite."""
    for index, arg in enumerate(args):
        if isinstance(arg, torch.Tensor) and arg.is_floating_point():
            check_finite(arg, f"input {index} of the quantized {type(module).__name__}")


def _check_output(module: nn.Module, args: tuple, output) -> None:
    """Forward hook: a non-finite output arose inside; rerun once with every quantizer
    checking its input, so that the error names the first operand that saw NaN/Inf."""
    outputs = [t for t in flatten(output) if isinstance(t, torch.Tensor) and t.is_floating_point()]
    if all(bool(torch.isfinite(t).all()) for t in outputs):
        return
    quantizers = list(activation_quantizers(module).values())
    try:
        for quantizer in quantizers:
            quantizer.check_inputs = True
        with torch.no_grad():
            module.forward(*args)
    finally:
        for quantizer in quantizers:
            quantizer.check_inputs = False
    for tensor in outputs:
        check_finite(
            tensor,
            f"output of the quantized {type(module).__name__} (after the last quantized operand)",
        )


def calibrate(qmodel: nn.Module, batches: Iterable[torch.Tensor]) -> nn.Module:
    """Collect static activation ranges by running ``batches`` through ``qmodel``.

    Runs in eval mode under ``torch.no_grad``; activations pass through unquantized while ranges
    are collected, then ranges are frozen. Calling it again recalibrates from scratch. The
    spec's algorithms run their hooks before and after, in the order of the composition: every
    weight transform, then range calibration, then every range adjustment, then every
    optimisation (``none`` has none); when one reads the batches they are passed as a list, so
    ``batches`` is then held in memory.

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
    spec = spec_of(qmodel)
    if spec.is_float:
        return qmodel
    algorithms = spec_algorithms(spec)
    for algorithm in algorithms:
        algorithm.prepare(qmodel)
    if any(algorithm.needs_data for algorithm in algorithms):
        batches = list(batches)
    was_training = qmodel.training
    qmodel.eval()
    try:
        for algorithm in algorithms:
            algorithm.transform_weights(qmodel, batches)
        _calibrate_ranges(qmodel, batches)
        for algorithm in algorithms:
            algorithm.adjust_ranges(qmodel, batches)
        for algorithm in algorithms:
            algorithm.optimise(qmodel, batches)
    finally:
        qmodel.train(was_training)
    return qmodel


def _calibrate_ranges(qmodel: nn.Module, batches: Iterable[torch.Tensor]) -> None:
    """Observe ``batches`` (in eval mode, without autograd) and freeze the static ranges."""
    quantizers = activation_quantizers(qmodel)
    device = next((p.device for p in qmodel.parameters()), torch.device("cpu"))
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


def quantization_table(qmodel: nn.Module) -> pd.DataFrame:
    """Which module is quantized how: one row per layer or attention matmul.

    Columns: ``module``, ``op_type``, ``weight_scheme``, ``activation_scheme`` (``granularity/
    static|dynamic/mapping``), ``w_bits``, ``a_bits``, ``execution`` (``integer-factorizable``,
    ``integer-factorizable per kernel position``, ``simulation-only``, or ``float32 (<reason>)``
    for skipped candidates and ``fp16``/``bf16``/``fp32`` casts), ``calibrated``.
    """
    spec = spec_of(qmodel)
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
