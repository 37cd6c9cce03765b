"""Quantized attention: the Q.K^T and A.V matmul operands of MONAI and torch attention blocks.

Supported blocks (class swapped in place, like the layers of ``benchmark.quant.modules``):

- ``monai.networks.blocks.selfattention.SABlock`` (UNETR, and MONAI's ViT),
- ``monai.networks.nets.swin_unetr.WindowAttention`` (SwinUNETR),
- ``torch.nn.MultiheadAttention`` (``batch_first`` or not, shared q/k/v embedding size, no
  ``bias_k``/``add_zero_attn``).

The four matmul operands ``q``, ``k``, ``attn`` (softmax output) and ``v`` each get an
:class:`~benchmark.quant.quantizer.ActivationQuantizer`, laid out ``[B, heads, tokens, d]``:
granularities come from the ``attention_matmul`` row of the granularity policy (per tensor, or
per token: one scale per head and query/key position); block formats put their blocks along
each matmul's summed index (``d`` for Q and K, keys for the attention matrix, tokens for V). Q.K^T with per-token ``q`` and ``k`` is
integer-factorizable (row scale times column scale); in A.V a per-token ``v`` scale lies on the
summed index, so that matmul is simulation-only unless scales are per tensor. Softmax, the
relative position bias and masks stay float32. The q/k/v and output projections are ordinary
``nn.Linear`` children and are quantized as such (for ``nn.MultiheadAttention``, whose
projections are raw parameters, inside this module).

The forwards below re-implement the blocks' explicit-matmul path (MONAI 1.4-1.6), because the
matmuls are inline expressions that no hook can reach. The fused ``scaled_dot_product_attention``
path of the original blocks computes the same function, so it is replaced by the explicit one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.networks.blocks.selfattention import SABlock
from monai.networks.nets.swin_unetr import WindowAttention
from torch import nn

from benchmark.quant.errors import QuantSpecError
from benchmark.quant.granularity import Layout, PerTensor
from benchmark.quant.modules import factorizable_tag
from benchmark.quant.operands import BLOCK_KINDS, activation_quantizer, weight_quantizer
from benchmark.quant.policies import ATTENTION, LINEAR

__all__ = [
    "QuantAttention",
    "QuantSABlock",
    "QuantWindowAttention",
    "QuantMultiheadAttention",
    "ATTENTION_CLASSES",
]

# summed index of each operand in Q.K^T and A.V, laid out [B, heads, tokens, d]
_OPERANDS = {
    "q": Layout(None, -1),
    "k": Layout(None, -1),
    "attn": Layout(None, -1),
    "v": Layout(None, -2),
}
_LINEAR_INPUT, _LINEAR_WEIGHT = Layout(None, -1), Layout(0, 1)


class QuantAttention:
    """Mixin: one activation quantizer per matmul operand and the table rows."""

    def quant_init(self, spec, name: str) -> None:
        """Attach ``q_quant``, ``k_quant``, ``attn_quant``, ``v_quant`` for ``spec``."""
        self.operand_format = spec.format.activation
        for operand, layout in _OPERANDS.items():
            quantizer = activation_quantizer(spec, ATTENTION, layout, f"{name}.{operand}")
            setattr(self, f"{operand}_quant", quantizer)

    def quant_rows(self, name: str) -> list[dict]:
        """Two rows: ``matmul_qk`` and ``matmul_av``."""
        per_tensor = isinstance(self.q_quant.granularity, PerTensor)
        blocks = self.operand_format.kind in BLOCK_KINDS
        rows = []
        for op, (a, b) in (("matmul_qk", ("q", "k")), ("matmul_av", ("attn", "v"))):
            qa, qb = getattr(self, f"{a}_quant"), getattr(self, f"{b}_quant")
            factorizable = per_tensor or blocks or op == "matmul_qk"
            rows.append(
                {
                    "module": f"{name}.{op}",
                    "op_type": f"{_float_type(self).__name__}.{op}",
                    "weight_scheme": "",
                    "activation_scheme": f"{a}: {qa.scheme}; {b}: {qb.scheme}",
                    "w_bits": None,
                    "a_bits": qa.bits,
                    "execution": factorizable_tag(self.operand_format)
                    if factorizable
                    else "simulation-only",
                    "calibrated": qa.calibrated and qb.calibrated,
                }
            )
        return rows


class QuantSABlock(QuantAttention, SABlock):
    """MONAI ``SABlock`` with quantized Q.K^T and A.V operands."""

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        if self.use_combined_linear:
            output = self.input_rearrange(self.qkv(x))
            q, k, v = output[0], output[1], output[2]
        else:
            q = self.input_rearrange(self.to_q(x))
            k = self.input_rearrange(self.to_k(x))
            v = self.input_rearrange(self.to_v(x))
        if self.attention_dtype is not None:
            q = q.to(self.attention_dtype)
            k = k.to(self.attention_dtype)
        q, k = self.q_quant(q), self.k_quant(k)
        att_mat = torch.einsum("blxd,blyd->blxy", q, k) * self.scale
        if self.rel_positional_embedding is not None:
            att_mat = self.rel_positional_embedding(x, att_mat, q)
        if self.causal:
            if attn_mask is not None:
                raise ValueError("Causal attention does not support attention masks.")
            causal = self.causal_mask[:, :, : x.shape[-2], : x.shape[-2]] == 0
            att_mat = att_mat.masked_fill(causal, float("-inf"))
        if attn_mask is not None:
            mask = attn_mask.unsqueeze(1).unsqueeze(2).expand(-1, self.num_heads, -1, -1)
            att_mat = att_mat.masked_fill(mask == 0, float("-inf"))
        att_mat = att_mat.softmax(dim=-1)
        if self.save_attn:
            self.att_mat = att_mat.detach()
        att_mat = self.drop_weights(att_mat)
        x = torch.einsum("bhxy,bhyd->bhxd", self.attn_quant(att_mat), self.v_quant(v))
        x = self.out_rearrange(x)
        if self.include_fc:
            x = self.out_proj(x)
        return self.drop_output(x)


class QuantWindowAttention(QuantAttention, WindowAttention):
    """MONAI SwinUNETR ``WindowAttention`` with quantized Q.K^T and A.V operands."""

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        b, n, c = x.shape
        qkv = (
            self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        )
        q, k, v = qkv[0], qkv[1], qkv[2]
        index = self.relative_position_index.clone()[:n, :n].reshape(-1)
        bias = self.relative_position_bias_table[index].reshape(n, n, -1)
        bias = bias.permute(2, 0, 1).contiguous()
        q = self.q_quant(q * self.scale)
        attn = q @ self.k_quant(k).transpose(-2, -1)
        attn = attn + bias.unsqueeze(0)
        if mask is not None:
            nw = mask.shape[0]
            attn = attn.view(b // nw, nw, self.num_heads, n, n) + mask.unsqueeze(1).unsqueeze(0)
            attn = attn.view(-1, self.num_heads, n, n)
        attn = self.softmax(attn)
        attn = self.attn_drop(attn).to(v.dtype)
        x = (self.attn_quant(attn) @ self.v_quant(v)).transpose(1, 2).reshape(b, n, c)
        return self.proj_drop(self.proj(x))


class QuantMultiheadAttention(QuantAttention, nn.MultiheadAttention):
    """``nn.MultiheadAttention`` with quantized projections and matmul operands.

    The input and output projections are quantized like a ``QuantLinear`` (per-token inputs,
    per-output-feature weights), sharing one input quantizer per distinct input tensor.
    """

    def quant_init(self, spec, name: str) -> None:
        if not self._qkv_same_embed_dim or self.bias_k is not None or self.add_zero_attn:
            raise QuantSpecError(
                f"{name}: nn.MultiheadAttention with kdim/vdim != embed_dim, bias_k/bias_v or "
                f"add_zero_attn is not supported; exclude it with exclude=[{name!r}]"
            )
        super().quant_init(spec, name)
        for part in ("query", "key", "value", "out"):
            label = f"{name}.{part}_input"
            quantizer = activation_quantizer(spec, LINEAR, _LINEAR_INPUT, label)
            setattr(self, f"{part}_input_quant", quantizer)
        for part in ("in_proj", "out_proj"):
            label = f"{name}.{part}.weight"
            setattr(
                self, f"{part}_weight_quant", weight_quantizer(spec, LINEAR, _LINEAR_WEIGHT, label)
            )

    def quant_rows(self, name: str) -> list[dict]:
        """The two matmul rows plus one row per projection."""
        rows = []
        for part, act in (("in_proj", self.query_input_quant), ("out_proj", self.out_input_quant)):
            weight = getattr(self, f"{part}_weight_quant")
            rows.append(
                {
                    "module": f"{name}.{part}",
                    "op_type": "MultiheadAttention.linear",
                    "weight_scheme": weight.scheme,
                    "activation_scheme": act.scheme,
                    "w_bits": weight.bits,
                    "a_bits": act.bits,
                    "execution": factorizable_tag(self.operand_format),
                    "calibrated": act.calibrated,
                }
            )
        return rows + super().quant_rows(name)

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        key_padding_mask: torch.Tensor | None = None,
        need_weights: bool = True,
        attn_mask: torch.Tensor | None = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        batched = query.dim() == 3
        if not batched:
            query, key, value = query.unsqueeze(1), key.unsqueeze(1), value.unsqueeze(1)
        if self.batch_first and batched:
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        # [L, B, E] -> [B, L, E] so that per-token scales are over dimension 1.
        same_kv = key is value
        self_attention = query is key and same_kv
        q_in = self.query_input_quant(query.transpose(0, 1))
        k_in = q_in if self_attention else self.key_input_quant(key.transpose(0, 1))
        v_in = k_in if same_kv else self.value_input_quant(value.transpose(0, 1))
        w_q, w_k, w_v = self.in_proj_weight_quant(self.in_proj_weight).chunk(3)
        b_q = b_k = b_v = None
        if self.in_proj_bias is not None:
            b_q, b_k, b_v = self.in_proj_bias.chunk(3)
        bsz, tgt_len, embed = q_in.shape
        src_len = k_in.shape[1]
        heads, head_dim = self.num_heads, embed // self.num_heads
        q = F.linear(q_in, w_q, b_q).view(bsz, tgt_len, heads, head_dim).transpose(1, 2)
        k = F.linear(k_in, w_k, b_k).view(bsz, src_len, heads, head_dim).transpose(1, 2)
        v = F.linear(v_in, w_v, b_v).view(bsz, src_len, heads, head_dim).transpose(1, 2)
        q = self.q_quant(q * head_dim**-0.5)
        attn = q @ self.k_quant(k).transpose(-2, -1)
        attn = attn + self._additive_mask(
            attn_mask, key_padding_mask, is_causal, bsz, tgt_len, src_len, attn.dtype
        )
        attn = attn.softmax(dim=-1)
        attn = F.dropout(attn, p=self.dropout, training=self.training)
        out = (self.attn_quant(attn) @ self.v_quant(v)).transpose(1, 2).reshape(bsz, tgt_len, embed)
        out = F.linear(
            self.out_input_quant(out),
            self.out_proj_weight_quant(self.out_proj.weight),
            self.out_proj.bias,
        )
        if not self.batch_first or not batched:
            out = out.transpose(0, 1)
        if not batched:
            out = out.squeeze(1)
        if not need_weights:
            return out, None
        weights = attn.mean(dim=1) if average_attn_weights else attn
        return out, weights if batched else weights.squeeze(0)

    def _additive_mask(self, attn_mask, key_padding_mask, is_causal, bsz, tgt, src, dtype):
        """Masks as one additive float tensor broadcastable to ``[B, heads, L, S]``."""
        total = torch.zeros(1, 1, tgt, src, dtype=dtype, device=self.in_proj_weight.device)
        if attn_mask is None and is_causal:
            attn_mask = torch.ones(tgt, src, dtype=torch.bool, device=total.device).triu(1)
        if attn_mask is not None:
            mask = _as_additive(attn_mask, dtype)
            mask = mask.view(bsz, self.num_heads, tgt, src) if mask.dim() == 3 else mask
            total = total + mask
        if key_padding_mask is not None:
            total = total + _as_additive(key_padding_mask, dtype).view(bsz, 1, 1, src)
        return total


def _as_additive(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """torch's convention: boolean True means "not allowed" (-inf); float masks are added."""
    if mask.dtype == torch.bool:
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(
            mask, float("-inf")
        )
    return mask.to(dtype)


def _float_type(module: nn.Module) -> type:
    return next(c for c in type(module).__mro__ if c in ATTENTION_CLASSES)


ATTENTION_CLASSES: dict[type, type] = {
    SABlock: QuantSABlock,
    WindowAttention: QuantWindowAttention,
    nn.MultiheadAttention: QuantMultiheadAttention,
}
