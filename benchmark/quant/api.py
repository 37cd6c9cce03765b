"""Public verbs: ``quantize``, ``calibrate``, ``save_ranges``/``load_ranges`` and the reports.

Typical use (one sweep point)::

    example = torch.zeros(1, in_channels, *roi)
    qmodel = quantize(model, QuantSpec("w4a4", "adaptive", "percentile"), example=example)
    path = cache / f"{model_name}_{spec.calibration_key()}_{calib_id}.pt"
    if path.exists():
        load_ranges(qmodel, path)
    else:
        calibrate(qmodel, calibration_patches(dataset, n=16, roi_size=roi))
        save_ranges(qmodel, path)
    print(quantization_table(qmodel, example).to_string())

Layer selection: every module whose exact type has a quantized counterpart (Conv2d/3d,
ConvTranspose2d/3d, Linear, MONAI SABlock/WindowAttention, nn.MultiheadAttention), minus the
``exclude`` name patterns and ``exclude_types``, restricted to ``include`` patterns when given
(fnmatch on the dotted module name, e.g. ``decoder.*``).

With ``example=`` (an input of the inference shape; zeros do), ``quantize`` first traces one
forward of the float model (:mod:`benchmark.quant.tracing`) and selection follows the data flow:

- modules the forward never runs (unused deep-supervision heads) stay float32, listed
  ``float32 (unused in forward)``;
- ``keep_first_last`` keeps in float32 every conv/linear layer whose input derives from the
  model input with no other conv/linear layer in between (the stem, and e.g. SwinUNETR's
  ``encoder1`` beside its patch embedding) and every one whose output reaches the model output
  with no other in between (the segmentation head); it needs the example;
- matmuls of two activations written inline in a module's forward (``torch.einsum``, ``@``,
  ``F.scaled_dot_product_attention``: MedFormer's attention) are quantized with
  ``quantize_attention`` (:mod:`benchmark.quant.functional_attention`). Without an example they
  cannot be found and stay float32; ``quantization_table(qmodel, example)`` lists them.

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

import contextlib
import copy
import fnmatch
from collections.abc import Iterable, Iterator

import torch
from torch import nn

from benchmark.quant.errors import CalibrationError, NoQuantizableLayerError, QuantSpecError
from benchmark.quant.floatcast import FloatCast, flatten
from benchmark.quant.functional_attention import functional_handler, sites_of
from benchmark.quant.handlers import QUANTIZED
from benchmark.quant.handlers import handlers as handler_classes
from benchmark.quant.modules import LAYER_CLASSES
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
from benchmark.quant.table import TABLE_COLUMNS, quant_table_hash, quantization_table
from benchmark.quant.tracing import Trace, trace
from benchmark.quant.weight_quantizer import WeightQuantizer

__all__ = [
    "quantize",
    "calibrate",
    "save_ranges",
    "load_ranges",
    "copy_ranges",
    "quantization_table",
    "quant_table_hash",
    "quantized_layer_names",
    "FloatCast",
    "TABLE_COLUMNS",
]


# (owner module, row name, op_type, reason) of a candidate kept in float32
Skipped = tuple[str, str, str, str]


def _handlers(spec: QuantSpec) -> dict[type, type]:
    return handler_classes(spec.quantize_attention)


def _skip_reason(name: str, type_name: str, spec: QuantSpec, flow: Trace | None) -> str | None:
    """Why a candidate stays float32 (``None``: it is quantized)."""
    if flow is not None and name not in flow.calls:
        return "unused in forward"
    if spec.include and not any(fnmatch.fnmatchcase(name, p) for p in spec.include):
        return "not in include"
    if any(fnmatch.fnmatchcase(name, p) for p in spec.exclude):
        return "exclude pattern"
    if type_name in spec.exclude_types:
        return "exclude_types"
    return None


def _functional(model: nn.Module, flow: Trace | None) -> dict[str, tuple]:
    """Modules (not of a handled type) whose own forward multiplies two activations: their sites."""
    if flow is None:
        return {}
    handled = handler_classes(True)
    found = {}
    for name, module in model.named_modules():
        calls = flow.calls.get(name)
        if type(module) in handled or not calls:
            continue
        if any(op.functional_attention for ops in calls for op in ops):
            found[name] = sites_of(calls)
    return found


def _select(
    model: nn.Module, spec: QuantSpec, flow: Trace | None = None
) -> tuple[list[str], dict[str, tuple], list[Skipped]]:
    """Modules to quantize, the functional-attention ones among them with their call sites,
    and the candidates kept in float32, all in registration order."""
    handlers = _handlers(spec)
    functional = _functional(model, flow)
    chosen, sites, skipped = [], {}, []
    for name, module in model.named_modules():
        if not name or (type(module) not in handlers and name not in functional):
            continue
        type_name = type(module).__name__
        reason = _skip_reason(name, type_name, spec, flow)
        if name in functional:
            calls = functional[name]
            if reason is None and not spec.quantize_attention:
                reason = "quantize_attention=False"
            if reason is None and calls is None:
                reason = "matmul calls differ between calls of the module"
            if reason is None:
                chosen.append(name)
                sites[name] = calls
                continue
            for op in {op.label: op for ops in flow.calls[name] for op in ops}.values():
                if op.functional_attention:
                    row = f"{name}.{op.label}"
                    skipped.append((name, row, f"{type_name}.{op.op}", reason))
            continue
        if reason is None:
            chosen.append(name)
        else:
            skipped.append((name, name, type_name, reason))
    if spec.keep_first_last:
        ends = set(flow.first) | set(flow.last)
        kept = [n for n in chosen if n in ends]
        for name in kept:
            chosen.remove(name)
            type_name = type(model.get_submodule(name)).__name__
            skipped.append((name, name, type_name, "keep_first_last"))
        order = {n: i for i, (n, _) in enumerate(model.named_modules())}
        skipped.sort(key=lambda entry: order[entry[0]])
    return chosen, sites, skipped


def _layer_names(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if type(m) in LAYER_CLASSES]


def quantize(model: nn.Module, spec: QuantSpec, example: torch.Tensor | None = None) -> nn.Module:
    """A fake-quantized copy of ``model`` for ``spec``; ``model`` itself is not modified.

    Args:
        model: any ``nn.Module`` (in eval mode for inference).
        spec: the quantization point.
        example: an input of the inference shape ``[B, C, *roi]`` (``torch.zeros`` is enough:
            only the data flow is read). With it, selection follows one traced forward (see the
            module docstring); ``keep_first_last`` needs it.

    Returns:
        ``fp32``: a deep copy. ``fp16``/``bf16``: a :class:`FloatCast` around a cast copy.
        ``wNaM``: a deep copy whose selected layers are swapped for their quantized classes;
        static activation ranges still need :func:`calibrate` or :func:`load_ranges`.

    Raises:
        NoQuantizableLayerError: no layer left after selection (the message lists candidates).
        NonFiniteError: a selected layer's weight holds NaN/Inf.
        QuantSpecError: ``keep_first_last`` without ``example``.
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
        qmodel.quant_traced = example is not None
        return qmodel
    if spec.keep_first_last and example is None:
        raise QuantSpecError(
            "keep_first_last finds the first and last layers by data flow: pass "
            "quantize(model, spec, example=torch.zeros(1, C, *roi)) with the input shape"
        )
    flow = None if example is None else trace(qmodel, example, _layer_names(qmodel))
    chosen, sites, skipped = _select(qmodel, spec, flow)
    if not chosen:
        found = [f"{row} ({reason})" for _, row, _, reason in skipped] or ["none"]
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
        if name in sites:
            module.__class__ = functional_handler(type(module))
            module.quant_init(spec, name, sites[name])
        else:
            module.__class__ = handlers[type(module)]
            module.quant_init(spec, name)
    qmodel.quant_spec = spec
    qmodel.quant_skipped = skipped
    qmodel.quant_traced = example is not None
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
            ``(image, label)`` pairs are accepted too: algorithms that train on labels
            (:func:`needs_labels`) get the pairs, observers and the other methods the images.

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
        images = [_image_of(batch) for batch in batches]
    else:
        images = (_image_of(batch) for batch in batches)

    def data_for(algorithm):
        return batches if algorithm.uses_labels else images

    was_training = qmodel.training
    qmodel.eval()
    try:
        for algorithm in algorithms:
            algorithm.transform_weights(qmodel, data_for(algorithm))
        _calibrate_ranges(qmodel, images)
        for algorithm in algorithms:
            algorithm.adjust_ranges(qmodel, data_for(algorithm))
        for algorithm in algorithms:
            algorithm.optimise(qmodel, data_for(algorithm))
    finally:
        qmodel.train(was_training)
    return qmodel


def needs_labels(spec: QuantSpec) -> bool:
    """Whether an algorithm of ``spec`` trains on labels: then calibrate it on ``(image,
    label)`` pairs (``calibration_patches(..., with_labels=True)``)."""
    return any(algorithm.uses_labels for algorithm in spec_algorithms(spec))


def _image_of(batch):
    """The image of an ``(image, label)`` pair; anything else as it is."""
    return batch[0] if isinstance(batch, (tuple, list)) and len(batch) == 2 else batch


@contextlib.contextmanager
def _unrounded_weights(qmodel: nn.Module) -> Iterator[None]:
    """Within the block every weight quantizer returns its weight transformed but not rounded
    (``QuantSpec.calibration_weights="float"``)."""
    quantizers = [m for m in qmodel.modules() if isinstance(m, WeightQuantizer)]
    try:
        for quantizer in quantizers:
            quantizer.forward = quantizer._transformed
        yield
    finally:
        for quantizer in quantizers:
            del quantizer.forward


def _calibrate_ranges(qmodel: nn.Module, batches: Iterable[torch.Tensor]) -> None:
    """Observe ``batches`` (in eval mode, without autograd) and freeze the static ranges;
    behind quantized or float weights as ``QuantSpec.calibration_weights`` says."""
    quantizers = activation_quantizers(qmodel)
    device = next((p.device for p in qmodel.parameters()), torch.device("cpu"))
    count = 0
    for quantizer in quantizers.values():
        quantizer.start_observing()
    float_weights = spec_of(qmodel).calibration_weights == "float"
    weights = _unrounded_weights(qmodel) if float_weights else contextlib.nullcontext()
    try:
        with torch.no_grad(), weights:
            for batch in batches:
                if not isinstance(batch, torch.Tensor):
                    raise CalibrationError(
                        f"calibration batch {count} is a {type(batch).__name__}, expected a tensor "
                        "[B, C, *roi] or an (image, label) pair (e.g. "
                        "benchmark.data.calibration_patches)"
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


def quantized_layer_names(qmodel: nn.Module) -> list[str]:
    """Dotted names of the quantized layers and attention modules, in registration order."""
    return [name for name, module in qmodel.named_modules() if isinstance(module, QUANTIZED)]
