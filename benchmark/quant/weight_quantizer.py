"""The fake quantizer of one weight, computed once and cached until the weight changes.

For quantization-aware training, :meth:`WeightQuantizer.make_learnable` turns the scale and zero
point into parameters and the forward quantizes the live weight with
:func:`~benchmark.quant.primitives.fake_quantize_ste` (straight-through rounding, LSQ's gradient
scale); ``freeze_learned`` keeps the learned ``scale``/``zero_point`` as buffers (instead of
taking the scale from the weight's range), and ``load_state_dict`` re-creates them from a saved
state. ``enabled = False`` passes the weight through unquantized.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from benchmark.quant.errors import QuantError
from benchmark.quant.granularity import Granularity
from benchmark.quant.observers import estimate_range
from benchmark.quant.primitives import (
    choose_qparams,
    fake_quantize,
    fake_quantize_ste,
    quant_range,
    quantize_codes,
)
from benchmark.quant.quantizer import check_finite

__all__ = ["WeightQuantizer"]


class WeightQuantizer(nn.Module):
    """Fake-quantizes a weight once and caches the result until the weight changes.

    The cache key is ``(data_ptr, version counter, device, dtype)`` of the weight plus the
    transforms themselves, so in-place edits, ``load_state_dict``, ``.to(device)`` and adding,
    removing or replacing a transform all trigger a recomputation; a forward costs one tuple
    comparison otherwise. A transform that changes its own state must be replaced (or
    :meth:`invalidate` called).

    Args:
        bits: grid bits, 2..16.
        granularity: ``PerTensor()`` or ``PerAxis(output channel axis)``.
        mapping: ``symmetric`` or ``asymmetric``.
        observer: ``minmax`` or ``mse``.
        label: fully qualified weight name used in error messages.

    Attributes:
        transforms: callables ``fn(weight) -> weight`` applied before quantization, in order:
            the hook where weight-transforming PTQ algorithms (SmoothQuant scaling, rotations)
            plug in.
    """

    def __init__(
        self, bits: int, granularity: Granularity, mapping: str, observer: str, label: str = ""
    ) -> None:
        super().__init__()
        self.bits = bits
        self.granularity = granularity
        self.mapping = mapping
        self.observer_kind = observer
        self.label = label
        self.qmin, self.qmax = quant_range(bits, mapping)
        self.transforms: list[Callable[[torch.Tensor], torch.Tensor]] = []
        self.enabled = True
        self.learnable = False
        # learned quantization parameters (set by freeze_learned); None: from the weight's range
        self.register_buffer("scale", None)
        self.register_buffer("zero_point", None)
        self._key: tuple | None = None
        self._cache: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    def invalidate(self) -> None:
        """Drop the cached quantized weight."""
        self._key, self._cache = None, None

    def _transformed(self, weight: torch.Tensor) -> torch.Tensor:
        for transform in self.transforms:
            weight = transform(weight)
        return weight

    def _refresh(self, weight: torch.Tensor) -> None:
        key = (weight.data_ptr(), weight._version, weight.device, weight.dtype)
        key += (tuple(self.transforms),)
        if self._cache is not None and _same_key(key, self._key):
            return
        with torch.no_grad():
            w = self._transformed(weight.detach())
            check_finite(w, f"weight {self.label}")
            fq, codes, scale, zp = self._compute(w)
        self._cache = (fq.to(weight.dtype), codes, scale, zp)
        self._key = key

    def _compute(self, w: torch.Tensor) -> tuple:
        """``(fake-quantized weight, codes, scale, zero point)`` of a transformed weight."""
        if self.scale is not None:
            # a state loaded on the CPU before the model moved keeps working on the weight's device
            scale, zp = self.scale.to(w.device), self.zero_point.to(w.device)
        else:
            dims = self.granularity.scale_dims(w.ndim)
            lo, hi = estimate_range(
                w, dims, self.observer_kind, bits=self.bits, mapping=self.mapping
            )
            scale, zp, _, _ = choose_qparams(lo, hi, self.bits, self.mapping)
        fq = fake_quantize(w.float().contiguous(), scale, zp, self.qmin, self.qmax)
        codes = quantize_codes(w.float(), scale, zp, self.qmin, self.qmax)
        return fq, codes, scale, zp

    def make_learnable(self, weight: torch.Tensor) -> list[nn.Parameter]:
        """Start from ``weight``'s scale and zero point as parameters (returned) for QAT; the
        forward then quantizes the live weight differentiably (no cache). The offset trains
        only on the asymmetric grid (created with ``requires_grad=False`` otherwise)."""
        self._refresh(weight)
        _, _, scale, zp = self._cache
        if zp is None:
            raise QuantError(f"{self.label}: learnable scales need an integer weight grid")
        self.scale = nn.Parameter(scale.detach().clone())
        self.offset = nn.Parameter(zp.float(), requires_grad=self.mapping == "asymmetric")
        self.learnable = True
        self.invalidate()
        return [self.scale, self.offset]

    def freeze_learned(self) -> None:
        """The learned scale and rounded offset become fixed ``scale``/``zero_point`` buffers
        that the cached (non-learnable) forward quantizes with."""
        scale = self.scale.detach().clone()
        zero_point = torch.round(self.offset.detach()).to(torch.int32)
        del self.scale, self.offset
        self.register_buffer("scale", scale)
        self.register_buffer("zero_point", zero_point)
        self.learnable = False
        self.invalidate()

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        """A saved state with learned ``scale``/``zero_point`` creates those buffers first."""
        for name in ("scale", "zero_point"):
            saved = state_dict.get(prefix + name)
            if saved is not None and name in self._buffers and self._buffers[name] is None:
                self._buffers[name] = torch.empty_like(saved)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self.invalidate()

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return weight
        if self.learnable:
            w = self._transformed(weight)
            # LSQ's N: the weights that share one scale
            grad_scale = (max(1, w.numel() // self.scale.numel()) * self.qmax) ** -0.5
            return fake_quantize_ste(w, self.scale, self.offset, self.qmin, self.qmax, grad_scale)
        self._refresh(weight)
        return self._cache[0]

    def codes(self, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(codes, scale, zero_point)`` of the current weight (for integer kernels and tests)."""
        self._refresh(weight)
        return self._cache[1], self._cache[2], self._cache[3]

    @property
    def scheme(self) -> str:
        """Short description, e.g. ``per_axis0/static/symmetric``."""
        return f"{self.granularity.name}/static/{self.mapping}"

    def extra_repr(self) -> str:
        return f"bits={self.bits}, {self.scheme}"


def _same_key(key: tuple, cached: tuple | None) -> bool:
    """Equal weight identity and the very same transform objects (compared by identity)."""
    if cached is None or key[:-1] != cached[:-1] or len(key[-1]) != len(cached[-1]):
        return False
    return all(a is b for a, b in zip(key[-1], cached[-1], strict=True))
