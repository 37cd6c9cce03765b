"""Granularities: which tensor dimensions share one quantization scale.

A granularity is a tiny frozen value type (torchao style). It is resolved once per operator
operand when a model is quantized, and it is the only place that turns a name into tensor axes:
everything downstream works with ``scale_dims``, the dimensions that carry their own scale
(every other dimension is reduced when a range is estimated, and has size 1 in the scale tensor).

Static ranges are shared by all samples of a batch (dimension 0 is always reduced), so a batch
and its items one by one give identical outputs. Dynamic ranges are computed per input sample
(dimension 0 is kept).

Shape examples (static; a dynamic range also keeps dimension 0):

=====================  ==========================  ============  ===============
granularity            tensor                      scale_dims    scale shape
=====================  ==========================  ============  ===============
``PerTensor()``        activation [B, C, D, H, W]  ()            [1, 1, 1, 1, 1]
``PerAxis(0)``         Conv3d weight [O, I, k, k, k]  (0,)       [O, 1, 1, 1, 1]
``PerAxis(1)``         ConvTranspose3d weight [I, O, k, k, k]  (1,)  [1, O, 1, 1, 1]
``PerAxis(1)``         conv activation [B, C, D, H, W]  (1,)     [1, C, 1, 1, 1]
``PerToken()``         linear activation [B, N, C]  (1,)         [1, N, 1]
``PerToken()``         attention operand [B, h, N, d]  (1, 2)    [1, h, N, 1]
``PerVoxel()``         conv activation [B, C, D, H, W]  (2, 3, 4)  [1, 1, D, H, W]
=====================  ==========================  ============  ===============
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Granularity", "PerTensor", "PerAxis", "PerToken", "PerVoxel"]


@dataclass(frozen=True)
class Granularity:
    """Base class; subclasses define :meth:`static_dims`."""

    def static_dims(self, ndim: int) -> tuple[int, ...]:
        """Dimensions with their own scale when ranges are static (batch dimension reduced)."""
        raise NotImplementedError(f"{type(self).__name__} must define static_dims")

    def scale_dims(self, ndim: int, dynamic: bool = False) -> tuple[int, ...]:
        """Dimensions with their own scale; a dynamic range also keeps dimension 0 (the sample).

        Args:
            ndim: number of dimensions of the quantized tensor.
            dynamic: whether the range is computed per input at run time.

        Returns:
            Sorted tuple of kept dimension indices (non-negative).
        """
        dims = set(self.static_dims(ndim))
        if dynamic and ndim > 1:
            dims.add(0)
        return tuple(sorted(dims))

    def reduce_dims(self, ndim: int, dynamic: bool = False) -> tuple[int, ...]:
        """Complement of :meth:`scale_dims`: the dimensions a range is estimated over."""
        kept = self.scale_dims(ndim, dynamic)
        return tuple(d for d in range(ndim) if d not in kept)

    @property
    def name(self) -> str:
        """Short lowercase label used in tables and result rows."""
        return type(self).__name__.lower()


@dataclass(frozen=True)
class PerTensor(Granularity):
    """One scale for the whole tensor."""

    def static_dims(self, ndim: int) -> tuple[int, ...]:
        return ()

    @property
    def name(self) -> str:
        return "per_tensor"


@dataclass(frozen=True)
class PerAxis(Granularity):
    """One scale per index of ``axis`` (output channels of a weight, input channels of NCDHW).

    Args:
        axis: the kept dimension; negative values count from the end.
    """

    axis: int

    def static_dims(self, ndim: int) -> tuple[int, ...]:
        if not -ndim <= self.axis < ndim:
            raise ValueError(f"PerAxis(axis={self.axis}) does not fit a tensor with {ndim} dims")
        return (self.axis % ndim,)

    @property
    def name(self) -> str:
        return f"per_axis{self.axis}"


@dataclass(frozen=True)
class PerToken(Granularity):
    """One scale per token: every dimension but the first (samples) and the last (features).

    A linear layer's input ``[B, N, C]`` has ``N`` tokens; SwinUNETR's channel-last MLP input
    ``[B, D, H, W, C]`` has one token per voxel; an attention operand ``[B, h, N, d]`` has one
    token per head and position. A 2-D input ``[B, C]`` has no token dimension besides the
    sample, so its static form is per tensor.
    """

    def static_dims(self, ndim: int) -> tuple[int, ...]:
        return tuple(range(1, ndim - 1))

    @property
    def name(self) -> str:
        return "per_token"


@dataclass(frozen=True)
class PerVoxel(Granularity):
    """One scale per spatial position of a channel-first input ``[B, C, *spatial]``.

    The range of voxel ``v`` is taken over the ``C`` channels of that voxel, which is what a
    1x1x1 convolution contracts: the scale can be pulled out of the channel sum exactly.
    """

    def static_dims(self, ndim: int) -> tuple[int, ...]:
        return tuple(range(2, ndim))

    @property
    def name(self) -> str:
        return "per_voxel"
