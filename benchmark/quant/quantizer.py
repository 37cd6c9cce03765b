"""The fake quantizer of one activation operand, calibrated or dynamic (weights: its sibling
:mod:`benchmark.quant.weight_quantizer`).

Lifecycle of a static activation quantizer (torch.ao's observe -> freeze -> evaluate, without its
flag buffers): ``quantize`` creates it empty; ``calibrate`` switches it to observing, runs the
batches (values pass through unquantized, so every layer sees float inputs while ranges are
collected) and freezes the ranges into ``scale``/``zero_point`` buffers; from then on each
forward is one :func:`~benchmark.quant.primitives.fake_quantize` with precomputed scales and
scalar clamp bounds (cache-blocked on CPU). Running it before calibration raises
:class:`~benchmark.quant.errors.UncalibratedError`.

For quantization-aware training, :meth:`ActivationQuantizer.make_learnable` turns the scale and
zero point into parameters; the forward is then
:func:`~benchmark.quant.primitives.fake_quantize_ste` (straight-through rounding, LSQ's gradient
scale). ``freeze_learned`` turns them back into buffers: the quantizer is an ordinary calibrated
one again, whose forward computes the numbers the learnable one did. Dynamic quantizers pass
straight-through gradients too. ``enabled = False`` passes values through
unquantized (an algorithm's float reference); ``check_inputs`` makes a quantizer reject NaN/Inf
inputs at inference.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from benchmark.quant.errors import NonFiniteError, QuantError, UncalibratedError
from benchmark.quant.granularity import Granularity
from benchmark.quant.observers import OBSERVERS, Observer, estimate_range, make_observer
from benchmark.quant.observers.base import FakeQuant, resolve_mapping
from benchmark.quant.primitives import (
    choose_qparams,
    dequantize_codes,
    fake_quantize,
    fake_quantize_ste,
    quantize_codes,
    round_ste,
)

__all__ = ["ActivationQuantizer", "check_finite"]

# Output buffers of layer-input quantizers, one per (shape, dtype, device, inference mode).
# A quantized layer input is dead once the layer's convolution/matmul returns, so consecutive
# layers can share one buffer per shape; reusing it avoids a fresh allocation per layer, which on
# CPU costs page faults for every tensor above glibc's 32 MiB mmap threshold (about a third of
# the fake-quant overhead). Used only without autograd; bounded to a few shapes.
_SCRATCH: OrderedDict[tuple, torch.Tensor] = OrderedDict()
_SCRATCH_MAX = 16


def _scratch_like(x: torch.Tensor) -> torch.Tensor:
    key = (tuple(x.shape), x.dtype, x.device, torch.is_inference_mode_enabled())
    buffer = _SCRATCH.pop(key, None)
    if buffer is None:
        buffer = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    _SCRATCH[key] = buffer
    while len(_SCRATCH) > _SCRATCH_MAX:
        _SCRATCH.popitem(last=False)
    return buffer


def check_finite(x: torch.Tensor, what: str) -> None:
    """Raise :class:`NonFiniteError` naming ``what`` if ``x`` holds NaN or Inf."""
    if not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x)).sum())
        raise NonFiniteError(
            f"{what} holds {bad} NaN/Inf value(s) out of {x.numel()}; clean the input data or the "
            "checkpoint (NaN weights usually mean a diverged or partially loaded model)"
        )


class ActivationQuantizer(nn.Module):
    """Fake-quantizes one activation operand.

    Args:
        bits: grid bits, 2..16.
        granularity: which dims share a scale.
        mapping: ``auto``, ``symmetric`` or ``asymmetric`` (see ``benchmark.quant.primitives``).
        dynamic: compute the range of each input sample at run time instead of calibrating.
        observer: a registered observer name (``benchmark.quant.observers``).
        observer_options: the spec's observer options (each observer reads its own).
        label: fully qualified operand name used in error messages.
    """

    def __init__(
        self,
        bits: int,
        granularity: Granularity,
        mapping: str,
        dynamic: bool,
        observer: str,
        observer_options: dict | None = None,
        label: str = "",
    ) -> None:
        super().__init__()
        self.bits = bits
        self.granularity = granularity
        self.mapping = mapping
        self.dynamic = dynamic
        self.observer_kind = observer
        self.observer_options = dict(observer_options or {})
        self.label = label
        self.reuse_output = False
        self.enabled = True
        self.check_inputs = False
        self.learnable = False
        self.resolved_mapping: str | None = None
        self._per_tensor: tuple[float, int] | None = None
        self.qmin: int | None = None
        self.qmax: int | None = None
        self.register_buffer("scale", None)
        self.register_buffer("zero_point", None)
        self.register_buffer("lo", None)
        self.register_buffer("hi", None)
        self._observer: Observer | None = None

    @property
    def calibrated(self) -> bool:
        """True when static ranges are present (dynamic quantizers need none)."""
        return self.dynamic or self.scale is not None

    @property
    def scheme(self) -> str:
        """Short description, e.g. ``per_voxel/dynamic/auto``."""
        mode = "dynamic" if self.dynamic else "static"
        mapping = self.resolved_mapping or self.mapping
        return f"{self.granularity.name}/{mode}/{mapping}"

    def start_observing(self) -> None:
        """Begin collecting ranges; inputs pass through unquantized."""
        if not self.dynamic:
            self._observer = make_observer(
                self.observer_kind,
                self.granularity,
                bits=self.bits,
                mapping=self.mapping,
                fake_quant=self.search_fake_quant(),
                **self.observer_options,
            )

    def search_fake_quant(self) -> FakeQuant | None:
        """The quantizer that range searches (``mse``) try; ``None``: the integer grid."""
        return None

    def finish_observing(self) -> None:
        """Freeze the collected ranges into ``scale``/``zero_point``."""
        observer, self._observer = self._observer, None
        if observer is None or self.dynamic:
            return
        if observer.num_batches == 0:
            # Not reached by the batches (e.g. an unused deep-supervision head): it stays
            # uncalibrated and raises only if it is ever run.
            return
        lo, hi, mapping = observer.result()
        self.set_range(lo, hi, mapping)

    def set_range(self, lo: torch.Tensor, hi: torch.Tensor, mapping: str) -> None:
        """Set static ranges directly (used by ``calibrate`` and ``load_ranges``)."""
        scale, zero_point, qmin, qmax = choose_qparams(lo, hi, self.bits, mapping)
        device = lo.device
        self.scale, self.zero_point = scale.to(device), zero_point.to(device)
        self.qmin, self.qmax, self.resolved_mapping = qmin, qmax, mapping
        # Python scalars for the per-tensor case: no tensor broadcasting or device sync per call
        self._per_tensor = (float(scale), int(zero_point)) if scale.numel() == 1 else None
        self.lo, self.hi = lo.detach().clone(), hi.detach().clone()

    def make_learnable(self) -> list[nn.Parameter]:
        """Turn the calibrated scale and zero point into parameters (returned) for QAT.

        The offset trains only on the asymmetric grid (LSQ+); the other grids keep their zero
        point at 0, so their offset is created with ``requires_grad=False``.
        """
        if self.dynamic or self.scale is None:
            raise QuantError(
                f"{self.label}: only calibrated static ranges can be learned; calibrate first "
                "(dynamic ranges are recomputed from every input)"
            )
        scale, offset = self.scale.detach().clone(), self.zero_point.float()
        del self.scale
        self.scale = nn.Parameter(scale)
        self.offset = nn.Parameter(offset, requires_grad=self.resolved_mapping == "asymmetric")
        self.learnable, self._per_tensor = True, None
        return [self.scale, self.offset]

    def freeze_learned(self) -> None:
        """Learned scale and rounded offset become the calibrated ``scale``/``zero_point``
        buffers; ``lo``/``hi`` become the range the learned grid covers."""
        scale = self.scale.detach().clone()
        zero_point = torch.round(self.offset.detach()).to(torch.int32)
        del self.scale, self.offset
        self.register_buffer("scale", scale)
        self.zero_point = zero_point
        self.lo = (self.qmin - zero_point) * scale
        self.hi = (self.qmax - zero_point) * scale
        self.learnable = False
        self._per_tensor = (float(scale), int(zero_point)) if scale.numel() == 1 else None

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        """A loaded scale may be a learned one, not the one ``lo``/``hi`` give: refresh the
        per-tensor scalars from what was loaded."""
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        if not self.learnable and self.scale is not None and self.scale.numel() == 1:
            self._per_tensor = (float(self.scale), int(self.zero_point))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._observer is not None:
            check_finite(x, f"calibration activation at {self.label}")
            self._observer.update(x)
            return x
        if not self.enabled:
            return x
        if self.check_inputs:
            check_finite(x, f"inference input of {self.label}")
        if self.dynamic:
            return self._dynamic(x)
        if self.scale is None:
            raise UncalibratedError(
                f"{self.label}: static activation ranges are missing; run "
                "benchmark.quant.calibrate(qmodel, batches) or load_ranges(qmodel, path) first, "
                "or build the spec with dynamic=True"
            )
        if self.scale.ndim != x.ndim or any(
            s not in (1, n) for s, n in zip(self.scale.shape, x.shape, strict=True)
        ):
            raise ValueError(
                f"{self.label}: static ranges of shape {tuple(self.scale.shape)} do not fit input "
                f"{tuple(x.shape)}; static per-voxel/per-token ranges need inputs of the "
                "calibration ROI size (use position_scales='dynamic' for other sizes)"
            )
        return self._static(x)

    def _static(self, x: torch.Tensor) -> torch.Tensor:
        """The calibrated forward (shape already checked)."""
        if self.learnable:
            # LSQ's N: the values of one sample that share a scale (static scales have dim 0 = 1)
            shared = max(1, x[0].numel() // self.scale.numel())
            grad_scale = (shared * self.qmax) ** -0.5
            return fake_quantize_ste(x, self.scale, self.offset, self.qmin, self.qmax, grad_scale)
        scale, zero_point = self._per_tensor or (self.scale, self._zero_point_arg())
        return fake_quantize(x, scale, zero_point, self.qmin, self.qmax, out=self._output_for(x))

    def _output_for(self, x: torch.Tensor) -> torch.Tensor | None:
        """A shared scratch buffer for a layer input that is consumed at once (no autograd)."""
        return _scratch_like(x) if self.reuse_output and not torch.is_grad_enabled() else None

    def _zero_point_arg(self) -> torch.Tensor | int:
        """Only the asymmetric grid has non-zero zero points; ``0`` keeps the clamp bounds
        scalar, which is about twice as fast as per-channel tensor bounds on CPU."""
        return self.zero_point if self.resolved_mapping == "asymmetric" else 0

    def _dynamic_params(self, x: torch.Tensor) -> tuple:
        """Per-sample ranges; ``auto`` picks the unsigned grid per sample whose min is >= 0."""
        dims = self.granularity.scale_dims(x.ndim, dynamic=True)
        kind, options = self.observer_kind, self.observer_options
        observer = OBSERVERS.get(kind)
        if self.mapping != "auto":
            lo, hi = estimate_range(x, dims, kind, bits=self.bits, mapping=self.mapping, **options)
            return choose_qparams(lo, hi, self.bits, self.mapping)
        search = resolve_mapping("auto", float(x.min())) if observer.uses_mapping else "symmetric"
        lo, hi = estimate_range(x, dims, kind, bits=self.bits, mapping=search, **options)
        sample_dims = tuple(range(1, x.ndim))
        # a min-max ``lo`` holds every group's minimum, so the sample minimum needs no new pass
        source = lo if observer.lo_is_group_min else x.detach()
        sample_min = torch.amin(source, dim=sample_dims, keepdim=True) if sample_dims else source
        unsigned = sample_min >= 0
        if bool(unsigned.all()) or not bool(unsigned.any()):
            # one grid for the whole batch: scalar clamp bounds, the fast path
            return choose_qparams(
                lo, hi, self.bits, "unsigned" if bool(unsigned.all()) else "symmetric"
            )
        s_sym, zp, smin, smax = choose_qparams(lo, hi, self.bits, "symmetric")
        s_uns, _, umin, umax = choose_qparams(lo, hi, self.bits, "unsigned")
        scale = torch.where(unsigned, s_uns, s_sym)
        qmin = torch.where(unsigned, float(umin), float(smin))
        qmax = torch.where(unsigned, float(umax), float(smax))
        return scale, zp, qmin, qmax

    def _dynamic(self, x: torch.Tensor) -> torch.Tensor:
        scale, zp, qmin, qmax = self._dynamic_params(x)
        if isinstance(qmin, int):
            zero_point = zp if self.mapping == "asymmetric" else 0
            return fake_quantize(x, scale, zero_point, qmin, qmax, out=self._output_for(x))
        if torch.is_grad_enabled() and x.requires_grad:
            # the same codes with straight-through rounding (quantize_codes has no gradient)
            codes = torch.clamp(round_ste(x * torch.reciprocal(scale.float())) + zp, qmin, qmax)
            return dequantize_codes(codes, scale, zp)
        return dequantize_codes(quantize_codes(x, scale, zp, qmin, qmax), scale, zp)

    def codes(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(codes, scale, zero_point)`` of ``x`` such that ``(codes - zero_point) * scale``
        equals ``forward(x)``; the input of integer kernels and of the tests."""
        if self.dynamic:
            scale, zp, qmin, qmax = self._dynamic_params(x)
        elif self.scale is None:
            raise UncalibratedError(f"{self.label}: no ranges; calibrate or load_ranges first")
        else:
            scale, zp, qmin, qmax = self.scale, self.zero_point, self.qmin, self.qmax
        return quantize_codes(x, scale, zp, qmin, qmax), scale, zp

    def extra_repr(self) -> str:
        return f"bits={self.bits}, {self.scheme}"
