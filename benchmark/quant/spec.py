"""``QuantSpec``: one point of the quantization sweep as a frozen, validated value.

Every choice the published MedQuanBench definitions leave open is a field here, and
:meth:`QuantSpec.to_dict` puts all of them into each result row. The defaults and why:

- **Weights**: static, symmetric signed narrow grid (``weight_mapping="symmetric"``), min-max
  range (``weight_observer="minmax"``): weights are known exactly, so nothing is estimated.
- **Activations**: integer grids default to ``act_mapping="asymmetric"``: an affine grid
  ``[0, 2^b-1]`` with a zero point, fitted to the calibrated ``[min, max]``. It is what ONNX
  Runtime's and PyTorch's x86 static quantization use for activations (uint8 with a zero point)
  and stays integer-factorizable (the zero point adds one correction term per output). The
  alternative ``auto`` uses the unsigned zero-point-free grid only when the calibrated minimum
  is >= 0 and the signed symmetric grid otherwise; after LeakyReLU (nnU-Net) the minimum is
  slightly negative everywhere, so ``auto`` falls back to the signed grid and wastes about a
  bit: the tiny nnU-Net at W4A4 scores mean DSC 0.577 (per-channel) and 0.160 (per-tensor)
  with ``auto`` against 0.644 and 0.512 with ``asymmetric`` (FP32 0.655; the results README
  gives the commands). ``symmetric`` forces the signed grid. Floating-point element formats
  (FP8, MX, NVFP4) have signed grids only and default to ``auto`` (signed, zero point 0).
  MedQuanBench does not state its activation grid, so no choice here reproduces it by
  definition; ``+quant.act_mapping=auto`` gives this harness's earlier default.
- **Static vs dynamic**: per-tensor and per-channel activation ranges are static (calibrated
  once, ``dynamic=False``). Per-position ranges (per voxel, per token) are dynamic by default
  (``position_scales="dynamic"``): the scale of a voxel is computed at run time from that voxel's
  own channel vector (``max_c |x[b, c, v]|``, per sample). A static per-voxel range would be a
  property of a patch position, but under sliding-window inference a patch position is not an
  anatomical position: ranges taken as the max over a handful of calibration patches at each
  position memorise where the calibration anatomy happened to lie and clip new cases wherever it
  lies elsewhere (early phantom probes showed static per-voxel W8A8 below per-channel). The
  dynamic form needs no estimate, so it cannot overfit the calibration set, and it stays
  integer-factorizable: on a 1x1x1 conv (and per token on a linear layer) the scale is one factor
  per GEMM row, whether it was calibrated or computed from the row itself.
  ``tests/quant/test_unet.py::test_default_adaptive_generalises_where_static_per_voxel_does_not``
  measures both on inputs whose layout differs from calibration. ``position_scales="static"``
  keeps the naive calibrated variant for the observer experiment.
- **Operators** (see ``benchmark.quant.modules``): Conv2d/Conv3d, ConvTranspose2d/3d and Linear
  (weights and inputs), and the two attention matmuls Q.K^T and A.V (all four operands) of
  MONAI's SABlock and WindowAttention and of ``nn.MultiheadAttention``, and, when ``quantize``
  gets an example input, matmuls of two activations written inline in any module (``einsum``,
  ``@``, ``scaled_dot_product_attention``: ``benchmark.quant.functional_attention``). Softmax,
  norms, residual adds and pooling stay in float32.
- **Names are checked against their registries**: the granularity policy
  (:mod:`benchmark.quant.policies`), the observer (:mod:`benchmark.quant.observers`), the
  algorithm (:mod:`benchmark.quant.algorithms`), ``exclude_types`` (the quantizable classes),
  and the precision (:mod:`benchmark.quant.formats`). A granularity, observer or algorithm
  that does not apply to the precision is an error rather than ignored: ``fp32``/``fp16``/
  ``bf16`` take ``granularity="none"``, ``observer="none"``, ``algorithm="none"`` (left unset,
  they default to these); block formats (MX, NVFP4, ``wNaM_gK``) take
  ``granularity="per_block"`` and ``observer="minmax"``, and like FP8 have no asymmetric grid;
  the ``histogram`` observer searches uniform integer grids only.
- **Calibration behind quantized weights** (``calibration_weights="quantized"``): while static
  ranges are observed, activations pass unquantized but every weight is already rounded, so
  each layer's range is taken from the activations it will receive at inference (the errors
  of the layers before it included), as a deployed kernel chain produces them.
  ``calibration_weights="float"`` observes behind the float weights instead (the float
  model's activation statistics, as a calibration run on the unquantized network would give).
  The choice matters at low bit widths: on the shipped tiny nnU-Net at W4A4
  ``per_channel_token``, calibrated on 4 phantom-like 1x1x32^3 patches and evaluated on 4
  others, the logits of the two differ by 0.31 on average (mean |logit| 4.25; 0.59 with
  ``act_mapping="auto"``).
- **Float precisions**: ``fp16`` and ``bf16`` are a full cast of the model and its input (not
  autocast): every op, normalisation and accumulation runs in the storage precision, which is what
  a half-precision deployment does, and it is deterministic for a given device. On CPU both work in
  torch 2.13; fp16 is emulated on the float16 grid (:class:`FloatCast`), bf16 runs torch's
  own kernels, which are about 50x slower than fp32 for 3D convolutions on a CPU without
  native BF16 instructions (measured on an AVX2-only CPU: 138 s against 2.7 s per batch).
"""

from __future__ import annotations

import difflib
import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch

from benchmark.quant.algorithm_options import (
    check_option_owners,
    composition,
    option_pairs,
    option_text,
    options_for,
)
from benchmark.quant.algorithms import ALGORITHMS
from benchmark.quant.errors import QuantSpecError
from benchmark.quant.formats import Precision, precision_format
from benchmark.quant.handlers import type_names
from benchmark.quant.observers import OBSERVERS
from benchmark.quant.policies import POLICIES

__all__ = ["QuantSpec", "parse_precision", "SPEC_VERSION"]

SPEC_VERSION = 1
FLOAT_PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
ACT_MAPPINGS = ("auto", "symmetric", "asymmetric")
WEIGHT_MAPPINGS = ("symmetric", "asymmetric")
POSITION_SCALES = ("dynamic", "static")
CALIBRATION_WEIGHTS = ("quantized", "float")
# defaults per precision family of the fields a family fixes
_FAMILY_DEFAULTS = {
    "cast": {"granularity": "none", "observer": "none"},
    "scaled": {"granularity": "per_tensor", "observer": "minmax"},
    "block": {"granularity": "per_block", "observer": "minmax"},
}
# fields added after ranges files were first keyed: they enter calibration_key() only when they
# differ from the value that reproduces the earlier behaviour, so existing files keep their key
_KEYED_WHEN_SET = {
    "algorithm": "none",
    "algorithm_options": "",
    "histogram_bins": 2048,
    "calibration_weights": "quantized",
}


def parse_precision(precision: str) -> tuple[int | None, int | None]:
    """Bits of weights and activations from a precision string.

    Args:
        precision: a name of :mod:`benchmark.quant.formats` (``fp32``, ``w4a8``, ``fp8_e4m3``,
            ``mxfp4``, ``nvfp4``, ``w4a16_g128``, ...).

    Returns:
        ``(w_bits, a_bits)`` (element bits of the formats); ``(None, None)`` for fp32/fp16/bf16.

    Raises:
        QuantSpecError: the string does not parse or a bit width is outside 2..16.
    """
    fmt = precision_format(precision)
    return fmt.w_bits, fmt.a_bits


def _check_choice(field: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise QuantSpecError(f"QuantSpec.{field}={value!r} is not one of {', '.join(allowed)}")


@dataclass(frozen=True)
class QuantSpec:
    """What to quantize and how; see the module docstring for the policy behind each default.

    Args:
        precision: ``fp32``, ``fp16``, ``bf16``, ``wNaM`` (N weight bits, M activation bits) or
            another format of :mod:`benchmark.quant.formats` (``fp8_e4m3``, ``mxfp4``, ...).
        granularity: a policy of :mod:`benchmark.quant.policies`: ``per_tensor``,
            ``per_channel_token``, ``adaptive``, ``per_block`` or ``none``; unset: the
            precision's default (``per_tensor``, ``per_block`` or ``none``).
        observer: activation range estimator of :mod:`benchmark.quant.observers`: ``minmax``,
            ``moving_average``, ``percentile``, ``mse`` or ``histogram``; unset: ``minmax``
            (``none`` for fp32/fp16/bf16).
        act_mapping: activation grid: ``asymmetric`` (affine with a zero point), ``auto``
            (unsigned when the calibrated min >= 0, else symmetric) or ``symmetric``; unset:
            ``asymmetric`` for integer grids, ``auto`` for floating-point element formats.
        weight_mapping: weight grid: ``symmetric`` or ``asymmetric``.
        weight_observer: weight range estimator: ``minmax`` or ``mse``.
        dynamic: compute every activation range per input sample at run time.
        position_scales: per-voxel and per-token ranges: ``dynamic`` (default) or ``static``.
        percentile: percentile of the ``percentile`` observer, in (50, 100].
        averaging_constant: EMA weight of a new batch in the ``moving_average`` observer.
        mse_grid: number of clipping ratios the ``mse`` observer tries.
        mse_min_ratio: smallest clipping ratio (fraction of the min-max range) it tries.
        histogram_bins: bins of the ``histogram`` observer (a power of two).
        algorithm: a method of :mod:`benchmark.quant.algorithms` (``none``: round to nearest),
            or an ordered composition written ``"smoothquant+gptq"`` or as a list; each method's
            hooks run in that order (see :func:`benchmark.quant.calibrate`).
        algorithm_options: the methods' options, a mapping: flat for one method
            (``{"alpha": 0.5}``), keyed by method for a composition (``{"smoothquant":
            {"alpha": 0.5}}``, or dotted keys ``"smoothquant.alpha"``); stored as sorted pairs.
        large_kernel_per_voxel: with ``adaptive``, give convolutions with kernels larger than
            1x1x1 per-voxel input scales too (one per kernel position once factorized).
        quantize_attention: quantize the Q.K^T and A.V matmul operands.
        include: fnmatch patterns of module names to quantize (empty: all).
        exclude: fnmatch patterns of module names to keep in float32.
        exclude_types: class names of modules to keep in float32 (e.g. ``ConvTranspose3d``).
        keep_first_last: keep the first and the last quantizable layer (stem conv, segmentation
            head) in float32.
        integer_kernels: run integer-factorizable convs/linears on integer codes and apply the
            scales outside (the GPU fast path); numerically equal to the plain path.
        calibration_weights: the weights activations are observed behind during calibration:
            ``quantized`` (default; the activations inference will see) or ``float``.

    Example:
        >>> spec = QuantSpec("w4a4", "adaptive", "percentile", percentile=99.9)
        >>> spec.w_bits, spec.a_bits
        (4, 4)
    """

    precision: str = "fp32"
    granularity: str | None = None
    observer: str | None = None
    act_mapping: str | None = None
    weight_mapping: str = "symmetric"
    weight_observer: str = "minmax"
    dynamic: bool = False
    position_scales: str = "dynamic"
    percentile: float = 99.99
    averaging_constant: float = 0.1
    mse_grid: int = 20
    mse_min_ratio: float = 0.2
    histogram_bins: int = 2048
    algorithm: str = "none"
    algorithm_options: Any = ()
    large_kernel_per_voxel: bool = False
    quantize_attention: bool = True
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    exclude_types: tuple[str, ...] = ()
    keep_first_last: bool = False
    integer_kernels: bool = False
    calibration_weights: str = "quantized"

    def __post_init__(self) -> None:
        object.__setattr__(self, "precision", str(self.precision).strip().lower())
        fmt = precision_format(self.precision)
        for name, default in _FAMILY_DEFAULTS[fmt.family].items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, default)
        if self.act_mapping is None:
            integer = fmt.family != "cast" and fmt.activation.kind in ("int", "int_group")
            object.__setattr__(self, "act_mapping", "asymmetric" if integer else "auto")
        object.__setattr__(self, "algorithm", composition(self.algorithm))
        object.__setattr__(self, "algorithm_options", option_pairs(self.algorithm_options))
        self._check_registered(fmt)
        _check_choice("act_mapping", self.act_mapping, ACT_MAPPINGS)
        _check_choice("weight_mapping", self.weight_mapping, WEIGHT_MAPPINGS)
        _check_choice("weight_observer", self.weight_observer, ("minmax", "mse"))
        _check_choice("position_scales", self.position_scales, POSITION_SCALES)
        _check_choice("calibration_weights", self.calibration_weights, CALIBRATION_WEIGHTS)
        if not 50.0 < float(self.percentile) <= 100.0:
            raise QuantSpecError(
                f"QuantSpec.percentile={self.percentile} must be in (50, 100], e.g. 99.99"
            )
        if not 0.0 < float(self.averaging_constant) <= 1.0:
            raise QuantSpecError(
                f"QuantSpec.averaging_constant={self.averaging_constant} must be in (0, 1]"
            )
        bins = int(self.histogram_bins)
        if bins < 2 or bins & (bins - 1):
            raise QuantSpecError(f"QuantSpec.histogram_bins={bins} must be a power of two >= 2")
        if int(self.mse_grid) < 2 or not 0.0 < float(self.mse_min_ratio) < 1.0:
            raise QuantSpecError(
                f"QuantSpec.mse_grid={self.mse_grid} must be >= 2 and "
                f"mse_min_ratio={self.mse_min_ratio} in (0, 1)"
            )
        for name in ("include", "exclude", "exclude_types"):
            value = getattr(self, name)
            if isinstance(value, str):
                value = (value,)
            items = tuple(v.__name__ if isinstance(v, type) else str(v) for v in value)
            object.__setattr__(self, name, items)
        _check_type_names(self.exclude_types)

    def _check_registered(self, fmt: Precision) -> None:
        """Registered names that apply to the precision's family (see the module docstring)."""
        family = fmt.family
        policy = POLICIES.get(self.granularity)
        if policy.precision_kind != family:
            fitting = [n for n in POLICIES.names() if POLICIES.get(n).precision_kind == family]
            raise QuantSpecError(
                f"QuantSpec(precision={self.precision!r}, granularity={self.granularity!r}): "
                f"{self.precision} takes granularity {' or '.join(fitting)}"
            )
        cast = family == "cast"
        if cast and (self.observer != "none" or self.algorithm != "none"):
            raise QuantSpecError(
                f"precision={self.precision} quantizes nothing: use observer='none' and "
                f"algorithm='none' (got {self.observer!r}, {self.algorithm!r})"
            )
        if not cast:
            OBSERVERS.get(self.observer)
            for name in self.algorithm_names:
                ALGORITHMS.get(name)
            check_option_owners(self.algorithm, self.algorithm_options)
        if family == "block" and (self.observer != "minmax" or self.weight_observer != "minmax"):
            raise QuantSpecError(
                f"precision={self.precision} takes each block's scale from the block's maximum: "
                f"use observer='minmax' and weight_observer='minmax'"
            )
        kinds = {fmt.weight.kind, fmt.activation.kind} if not cast else set()
        if kinds & {"float", "mx", "nvfp4"}:
            if "asymmetric" in (self.act_mapping, self.weight_mapping):
                raise QuantSpecError(
                    f"precision={self.precision} has signed floating-point grids only: use "
                    "act_mapping='auto' or 'symmetric' and weight_mapping='symmetric'"
                )
            if self.observer == "histogram":
                raise QuantSpecError(
                    f"observer='histogram' searches uniform integer grids; with "
                    f"precision={self.precision} use minmax, moving_average, percentile or mse"
                )

    @property
    def algorithm_names(self) -> tuple[str, ...]:
        """The composed methods in order; empty for ``none``."""
        return () if self.algorithm == "none" else tuple(self.algorithm.split("+"))

    def options_for(self, algorithm: str) -> dict[str, Any]:
        """The options of one method of the composition (dotted keys without the prefix)."""
        return options_for(self.algorithm_options, algorithm)

    @classmethod
    def from_strings(
        cls, precision: str, granularity: str | None = None, observer: str | None = None, **options
    ) -> QuantSpec:
        """Build from the three sweep strings plus keyword options (same validation)."""
        return cls(precision=precision, granularity=granularity, observer=observer, **options)

    @classmethod
    def from_config(cls, *groups: Mapping[str, Any] | str, **options) -> QuantSpec:
        """Build from Hydra group nodes ``precision``, ``granularity``, ``observer`` (in order).

        Each group is a mapping whose ``name`` is the option (``{name: percentile,
        percentile: 99.99}``) or a bare string; other keys of a group become spec options.

        Raises:
            QuantSpecError: an unknown option key or an invalid value.
        """
        known = {f.name for f in fields(cls)}
        values: dict[str, Any] = {}
        for field_name, group in zip(
            ("precision", "granularity", "observer"), groups, strict=False
        ):
            if isinstance(group, str):
                values[field_name] = group
                continue
            group = dict(group)
            values[field_name] = group.pop("name")
            values.update(group)
        values.update(options)
        unknown = sorted(set(values) - known)
        if unknown:
            raise QuantSpecError(
                f"unknown QuantSpec option(s) {unknown}; allowed: {', '.join(sorted(known))}"
            )
        return cls(**values)

    @property
    def format(self) -> Precision:
        """The parsed precision: family and the number format of weights and activations."""
        return precision_format(self.precision)

    @property
    def w_bits(self) -> int | None:
        """Weight (element) bits, ``None`` for float precisions."""
        return parse_precision(self.precision)[0]

    @property
    def a_bits(self) -> int | None:
        """Activation (element) bits, ``None`` for float precisions."""
        return parse_precision(self.precision)[1]

    @property
    def is_float(self) -> bool:
        """True for ``fp32``, ``fp16`` and ``bf16``."""
        return self.precision in FLOAT_PRECISIONS

    @property
    def float_dtype(self) -> torch.dtype | None:
        """The cast dtype of a float precision, ``None`` for integer precisions."""
        return FLOAT_PRECISIONS.get(self.precision)

    def to_dict(self) -> dict[str, Any]:
        """Every choice as flat JSON-able scalars (lists joined by ``,``) for result rows."""
        out: dict[str, Any] = {}
        for key, value in asdict(self).items():
            if key == "algorithm_options":
                value = tuple(f"{k}={option_text(v)}" for k, v in value)
            out[key] = ",".join(value) if isinstance(value, tuple) else value
        out["w_bits"] = self.w_bits
        out["a_bits"] = self.a_bits
        out["spec_version"] = SPEC_VERSION
        return out

    def calibration_key(self) -> str:
        """Short stable hash of every field that influences calibrated ranges.

        Use it in a ranges file name together with the model name and a calibration-set id:
        ``f"{model}_{spec.calibration_key()}_{calib_id}.pt"``.
        """
        row = self.to_dict()
        for key, unset in _KEYED_WHEN_SET.items():
            if row[key] == unset:
                del row[key]
        payload = json.dumps(row, sort_keys=True)
        return hashlib.sha1(payload.encode()).hexdigest()[:12]


def _check_type_names(names: tuple[str, ...]) -> None:
    """``exclude_types`` must name quantizable classes, so that a typo cannot pass unnoticed."""
    valid = type_names()
    for name in names:
        if name not in valid:
            close = difflib.get_close_matches(name, valid, n=1, cutoff=0.6)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise QuantSpecError(
                f"QuantSpec.exclude_types: {name!r} is not a quantizable type; {hint}"
                f"valid: {', '.join(valid)}"
            )
