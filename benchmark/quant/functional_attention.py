"""Quantized functional attention: matmuls of two activations written inline in any module.

Attention that a model writes as ``torch.einsum``, ``torch.matmul``/``@``, ``bmm``/``baddbmm``
or ``F.scaled_dot_product_attention`` inside its own module (MedFormer's bidirectional
attention and semantic-map pooling, a hand-written transformer) has no module a class swap can
reach. :func:`benchmark.quant.quantize` finds those calls in the example forward
(:mod:`benchmark.quant.tracing`): every call site whose operands all derive from the model input
(no weight operand) in a module's own forward. The module's class is swapped for a subclass whose
forward runs the original one under a ``TorchFunctionMode`` that fake-quantizes both operands
of each such call, in the order the example forward made them, with the ``attention_matmul``
granularity of the policy (as the Q.K^T and A.V operands of :mod:`benchmark.quant.attention`).
Layouts are the operands' own: per token means one scale per index of every dimension but the
first and the last; block formats put blocks along the summed axis.

``scaled_dot_product_attention`` is computed explicitly (``softmax(q k^T * scale + mask) v``),
so that the attention matrix is quantized as well: four operands ``q``, ``k``, ``attn``, ``v``.
Ops of child modules are the children's own (a quantized ``Linear`` child quantizes itself).
A forward whose sequence of matmul-like calls differs from the example's is an error, since
operand quantizers are bound to call sites.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from benchmark.quant.errors import QuantError
from benchmark.quant.granularity import Layout, PerTensor
from benchmark.quant.modules import factorizable_tag
from benchmark.quant.operands import BLOCK_KINDS, activation_quantizer
from benchmark.quant.policies import ATTENTION
from benchmark.quant.tracing import MATMUL_OPS, Op, op_name, operand_slots

__all__ = ["Site", "QuantFunctionalAttention", "functional_handler", "sites_of"]

_SDPA = "scaled_dot_product_attention"
_SDPA_OPERANDS = ("q", "k", "attn", "v")
_SDPA_AXES = (-1, -1, -1, -2)


@dataclass(frozen=True)
class Site:
    """One matmul-like call of a module's own forward, in call order.

    Attributes:
        op: normalised function name.
        label: ``<op>_<i>`` as in the trace.
        quantize: both operands are activations (quantized); other calls run unchanged.
        ndims: operand dimensions (``q``, ``k``, ``attn``, ``v`` for attention).
        reduce_axes: the summed axis of each operand.
    """

    op: str
    label: str
    quantize: bool
    ndims: tuple[int, ...] = ()
    reduce_axes: tuple[int | None, ...] = ()

    @property
    def operands(self) -> tuple[str, ...]:
        """Names of the quantized operands."""
        if not self.quantize:
            return ()
        return _SDPA_OPERANDS if self.op == _SDPA else ("a", "b")

    @classmethod
    def from_op(cls, op: Op) -> Site:
        if not op.functional_attention:
            return cls(op.op, op.label, False)
        if op.op == _SDPA:
            q, k, v = op.ndims
            return cls(op.op, op.label, True, (q, k, q, v), _SDPA_AXES)
        return cls(op.op, op.label, True, op.ndims[:2], op.reduce_axes[:2])


def sites_of(calls: list[list[Op]]) -> tuple[Site, ...] | None:
    """The call sites of a module from its traced calls; ``None`` when calls differ."""
    sequences = [tuple(Site.from_op(op) for op in ops) for ops in calls]
    if any(seq != sequences[0] for seq in sequences[1:]):
        return None
    return sequences[0]


class QuantFunctionalAttention:
    """Mixin: operand quantizers per quantized call site, and the table rows."""

    float_class: type
    quant_sites: tuple[Site, ...]

    def quant_init(self, spec, name: str, sites: tuple[Site, ...]) -> None:
        """Attach one quantizer per operand of each site in ``quant_matmuls``."""
        self.quant_sites = tuple(sites)
        self.operand_format = spec.format.activation
        self._quant_depth = 0
        for child in self.children():
            # ops of a child's forward belong to the child
            child.register_forward_pre_hook(self._enter_child)
            child.register_forward_hook(self._leave_child, always_call=True)
        quantizers = nn.ModuleDict()
        for site in self.quant_sites:
            for operand, axis in zip(site.operands, site.reduce_axes, strict=True):
                layout = Layout(None, axis if axis is not None else -1)
                label = f"{name}.{site.label}.{operand}"
                quantizers[f"{site.label}_{operand}"] = activation_quantizer(
                    spec, ATTENTION, layout, label
                )
        self.quant_matmuls = quantizers

    def _enter_child(self, module, args) -> None:
        self._quant_depth += 1

    def _leave_child(self, module, args, output) -> None:
        self._quant_depth -= 1

    def forward(self, *args, **kwargs):
        self._quant_depth = 0
        with _SiteMode(self):
            return super().forward(*args, **kwargs)

    def quant_rows(self, name: str) -> list[dict]:
        """One row per quantized call (two, ``matmul_qk`` and ``matmul_av``, for attention)."""
        rows = []
        for site in self.quant_sites:
            if not site.quantize:
                continue
            pairs = (("", site.operands),)
            if site.op == _SDPA:
                pairs = ((".matmul_qk", ("q", "k")), (".matmul_av", ("attn", "v")))
            for suffix, (a, b) in pairs:
                qa, qb = (self.quant_matmuls[f"{site.label}_{x}"] for x in (a, b))
                rows.append(
                    {
                        "module": f"{name}.{site.label}{suffix}",
                        "op_type": f"{self.float_class.__name__}.{site.op}",
                        "weight_scheme": "",
                        "activation_scheme": f"{a}: {qa.scheme}; {b}: {qb.scheme}",
                        "w_bits": None,
                        "a_bits": qa.bits,
                        "execution": self._execution(site, (a, b)),
                        "calibrated": qa.calibrated and qb.calibrated,
                    }
                )
        return rows

    def _execution(self, site: Site, operands: tuple[str, str]) -> str:
        """Factorizable when no operand has its own scales along the summed axis."""
        tag = factorizable_tag(self.operand_format)
        if self.operand_format.kind in BLOCK_KINDS:
            return tag
        for operand in operands:
            index = site.operands.index(operand)
            quantizer = self.quant_matmuls[f"{site.label}_{operand}"]
            ndim, axis = site.ndims[index], site.reduce_axes[index]
            if isinstance(quantizer.granularity, PerTensor):
                continue
            dims = quantizer.granularity.scale_dims(ndim, dynamic=quantizer.dynamic)
            if axis is None or axis % ndim in dims:
                return "simulation-only"
        return tag


class _SiteMode(TorchFunctionMode):
    """Counts the owner's own matmul-like calls and quantizes the operands of its sites."""

    def __init__(self, owner: QuantFunctionalAttention) -> None:
        super().__init__()
        self.owner = owner
        self.index = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = op_name(func)
        owner = self.owner
        if owner._quant_depth or name not in MATMUL_OPS:
            return func(*args, **kwargs)
        sites = owner.quant_sites
        if self.index >= len(sites) or sites[self.index].op != name:
            expected = sites[self.index].op if self.index < len(sites) else "no further call"
            raise QuantError(
                f"{type(owner).__name__}: call {self.index} of its forward is {name}, but the "
                f"example forward made {expected}; quantize with an example of the inference "
                "input shape, or exclude the module"
            )
        site = sites[self.index]
        self.index += 1
        if not site.quantize:
            return func(*args, **kwargs)
        quantizers = [owner.quant_matmuls[f"{site.label}_{x}"] for x in site.operands]
        if name == _SDPA:
            return _attention(quantizers, *args, **kwargs)
        args = list(args)
        slots = operand_slots(name, tuple(args), kwargs)
        if name == "einsum" and len(args) == 2 and isinstance(args[1], (list, tuple)):
            args[1] = list(args[1])
            slots = [(args[1], i) for _, i in slots]
        else:
            slots = [(args, i) for _, i in slots]
        for (container, i), quantizer in zip(slots, quantizers, strict=True):
            container[i] = quantizer(container[i])
        return func(*args, **kwargs)


def _attention(
    quantizers,
    query,
    key,
    value,
    attn_mask=None,
    dropout_p=0.0,
    is_causal=False,
    scale=None,
    enable_gqa=False,
):
    """``F.scaled_dot_product_attention`` written out, with quantized q, k, attn and v."""
    q_quant, k_quant, attn_quant, v_quant = quantizers
    if enable_gqa:
        repeat = query.shape[-3] // key.shape[-3]
        key = key.repeat_interleave(repeat, dim=-3)
        value = value.repeat_interleave(repeat, dim=-3)
    scale = 1.0 / math.sqrt(query.shape[-1]) if scale is None else scale
    attn = q_quant(query) @ k_quant(key).transpose(-2, -1) * scale
    tgt, src = query.shape[-2], key.shape[-2]
    if is_causal:
        causal = torch.ones(tgt, src, dtype=torch.bool, device=query.device).tril()
        attn = attn.masked_fill(~causal, float("-inf"))
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            attn = attn.masked_fill(~attn_mask, float("-inf"))
        else:
            attn = attn + attn_mask
    attn = attn.softmax(dim=-1)
    if dropout_p > 0.0:
        attn = F.dropout(attn, p=dropout_p)
    return attn_quant(attn) @ v_quant(value)


_CLASSES: dict[type, type] = {}


def functional_handler(cls: type[nn.Module]) -> type[nn.Module]:
    """The quantized subclass of ``cls`` (made once per class)."""
    if cls not in _CLASSES:
        _CLASSES[cls] = type(
            f"QuantFunctional{cls.__name__}",
            (QuantFunctionalAttention, cls),
            {"float_class": cls, "__module__": __name__},
        )
    return _CLASSES[cls]
