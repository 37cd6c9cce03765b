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

Two granularities depend on the operand's layout and are bound to axes by :func:`bind`, the one
place that turns an operator's layout into concrete axes: ``PerOutputChannel()`` becomes
``PerAxis(out_axis)`` (0 for Conv/Linear weights, 1 for ConvTranspose weights), and
``PerBlock()`` becomes ``Blocked(size, reduce_axis)``: blocks of ``size`` consecutive elements
along the axis an operator sums over (input channels of a conv weight or of an NCDHW input, the
features of a linear input, ``d`` of Q and K, keys of the attention matrix, tokens of V), the
block size being set by the number format (32 for OCP MX, 16 for NVFP4, ``K`` for ``wNaM_gK``).
Block ranges are always computed from the block itself at run time.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "Granularity",
    "PerTensor",
    "PerAxis",
    "PerToken",
    "PerVoxel",
    "PerOutputChannel",
    "PerBlock",
    "Blocked",
    "Layout",
    "bind",
]


@dataclass(frozen=True)
class Layout:
    """Where an operand keeps its output channels and the axis its operator sums over.

    Args:
        out_axis: output-channel axis of a weight (``None`` for activations).
        reduce_axis: the summed-over axis (block formats put their blocks along it).
    """

    out_axis: int | None
    reduce_axis: int


@dataclass(frozen=True)
class Granularity:
    """Base class; subclasses define :meth:`static_dims`.

    ``positional`` granularities (one scale per voxel or token) are dynamic by default
    (``QuantSpec.position_scales``); ``runtime_only`` ones are always computed per input.
    """

    positional = False
    runtime_only = False

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

    positional = True

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

    positional = True

    def static_dims(self, ndim: int) -> tuple[int, ...]:
        return tuple(range(2, ndim))

    @property
    def name(self) -> str:
        return "per_voxel"


@dataclass(frozen=True)
class PerOutputChannel(Granularity):
    """One scale per output channel of a weight; :func:`bind` turns it into ``PerAxis``."""

    def static_dims(self, ndim: int) -> tuple[int, ...]:
        raise TypeError("PerOutputChannel() must be bound to a weight layout with bind()")

    @property
    def name(self) -> str:
        return "per_output_channel"


@dataclass(frozen=True)
class PerBlock(Granularity):
    """Block scales of the size the number format sets; :func:`bind` makes it ``Blocked``."""

    def static_dims(self, ndim: int) -> tuple[int, ...]:
        raise TypeError("PerBlock() must be bound to a layout and block size with bind()")

    @property
    def name(self) -> str:
        return "per_block"


@dataclass(frozen=True)
class Blocked(Granularity):
    """One scale per ``size`` consecutive elements along ``axis`` (the last block may be short).

    Args:
        size: elements per block.
        axis: the blocked axis; negative values count from the end.
    """

    size: int
    axis: int

    positional = True
    runtime_only = True

    def static_dims(self, ndim: int) -> tuple[int, ...]:
        raise TypeError("Blocked scales are not a set of kept dims; use benchmark.quant.blocks")

    @property
    def name(self) -> str:
        return f"block{self.size}_axis{self.axis}"


def bind(granularity: Granularity, layout: Layout, block_size: int | None = None) -> Granularity:
    """The concrete granularity of one operand (the only place a layout becomes axes).

    Raises:
        ValueError: ``PerOutputChannel`` on an activation, or ``PerBlock`` without a block size.
    """
    if isinstance(granularity, PerOutputChannel):
        if layout.out_axis is None:
            raise ValueError("PerOutputChannel() applies to weights only")
        return PerAxis(layout.out_axis)
    if isinstance(granularity, PerBlock):
        if block_size is None:
            raise ValueError("PerBlock() needs a block precision (mxfp4, nvfp4, w4a4_g32, ...)")
        return Blocked(block_size, layout.reduce_axis)
    return granularity
