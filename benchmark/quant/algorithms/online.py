"""Online input transforms: modules a layer applies to its input before its input quantizer.

Where a per-channel scale or a rotation of a layer's input cannot be folded into the module that
produces it, the layer computes it at run time. :func:`attach` adds the transform as a child
module of the quantized layer (so its buffers are in the ``state_dict`` and cached with the
ranges) and a forward pre-hook that applies it, so the input quantizer sees the transformed
input; quantizer names and parameter names stay as they were. Each transform starts as the
identity (``prepare`` inserts it without data) and skips its arithmetic while it is one.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
from torch import nn

__all__ = ["ChannelScale", "Rotation", "attach", "transforms_input"]


class ChannelScale(nn.Module):
    """``x * factor`` along the channel axis (last for linear inputs, 1 for convolutions)."""

    def __init__(self, channels: int, channel_axis: int) -> None:
        super().__init__()
        self.channel_axis = channel_axis
        self.register_buffer("factor", torch.ones(channels))
        self.identity = True

    @torch.no_grad()
    def set_factor(self, factor: torch.Tensor) -> None:
        """Multiply the current factor by ``factor`` (so composed calls accumulate)."""
        self.factor.mul_(factor.to(self.factor))
        self.identity = bool((self.factor == 1).all())

    def _load_from_state_dict(self, *args, **kwargs) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self.identity = bool((self.factor == 1).all())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.identity:
            return x
        shape = [1] * x.ndim
        shape[self.channel_axis] = -1
        return x * self.factor.to(x.dtype).reshape(shape)

    def extra_repr(self) -> str:
        return f"channels={self.factor.numel()}, identity={self.identity}"


class Rotation(nn.Module):
    """``x @ Q`` on the last axis for an orthogonal ``Q`` built by ``make(channels)``.

    ``Q`` is rebuilt from ``make`` rather than stored: only the flag ``active`` is a buffer, so a
    cached model holds one boolean per layer, and an inactive rotation costs no memory.
    """

    def __init__(self, channels: int, make: Callable[[int], torch.Tensor]) -> None:
        super().__init__()
        self.channels = channels
        self.make = make
        self.register_buffer("active", torch.zeros((), dtype=torch.bool))
        self._on = False
        self._matrix: torch.Tensor | None = None

    def matrix(self, like: torch.Tensor) -> torch.Tensor:
        """``Q`` on the device and in the dtype of ``like``."""
        if self._matrix is None:
            self._matrix = self.make(self.channels)
        if self._matrix.device != like.device or self._matrix.dtype != like.dtype:
            self._matrix = self._matrix.to(device=like.device, dtype=like.dtype)
        return self._matrix

    def activate(self) -> None:
        self.active.fill_(True)
        self._on = True

    def _load_from_state_dict(self, *args, **kwargs) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self._on = bool(self.active)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.matrix(x) if self._on else x

    def extra_repr(self) -> str:
        return f"channels={self.channels}, active={self._on}"


def _apply(name: str, layer: nn.Module, args: tuple) -> tuple:
    return (getattr(layer, name)(args[0]), *args[1:])


def attach(layer: nn.Module, name: str, transform: nn.Module) -> nn.Module:
    """Make ``layer`` apply ``transform`` (child ``name``) to its input; idempotent: a layer that
    already has the child keeps it (``prepare`` may run twice on one model)."""
    existing = getattr(layer, name, None)
    if isinstance(existing, type(transform)):
        return existing
    layer.add_module(name, transform)
    layer.register_forward_pre_hook(functools.partial(_apply, name))
    return transform


def transforms_input(layer: nn.Module) -> bool:
    """Whether an attached transform currently changes ``layer``'s input: then the layer's
    weight columns are no longer the producer's output channels one to one."""
    for child in layer.children():
        if isinstance(child, ChannelScale) and not child.identity:
            return True
        if isinstance(child, Rotation) and child._on:
            return True
    return False
