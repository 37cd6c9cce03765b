"""``FloatCast``: fp16/bf16 as a full cast of the model and its inputs (see the class)."""

from __future__ import annotations

import copy

import torch
from torch import nn

__all__ = ["FloatCast", "flatten"]


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
        tensors = [t for t in flatten(cast_in) if isinstance(t, torch.Tensor)]
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


def flatten(obj) -> list:
    if isinstance(obj, (list, tuple)):
        return [x for o in obj for x in flatten(o)]
    if isinstance(obj, dict):
        return [x for o in obj.values() for x in flatten(o)]
    return [obj]


def _map_tensors(obj, fn):
    if isinstance(obj, torch.Tensor):
        return fn(obj)
    if isinstance(obj, (list, tuple)):
        return type(obj)(_map_tensors(o, fn) for o in obj)
    if isinstance(obj, dict):
        return {k: _map_tensors(v, fn) for k, v in obj.items()}
    return obj
