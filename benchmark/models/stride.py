"""Which input sizes a network accepts, derived from its ``net`` config before it is built.

A U-Net halves (or otherwise divides) its grid once per stage and concatenates each decoder
stage with the encoder stage of the same resolution, so every spatial size must be a multiple
of the network's total stride on that axis (the product of its per-stage strides); otherwise
the shapes stop matching deep inside ``forward``. Instance normalisation of the coarsest
feature map also needs more than one voxel there. Sizes are ``[D, H, W]`` voxels.

The rules follow each architecture's own code: nnU-Net's ``PlainConvUNet`` (``strides``, or
the plans file's), STU-Net (``pool_op_kernel_sizes``), MedFormer (``scale``), MONAI SwinUNETR
(``patch_size ** 5``, its own check) and UNETR (a fixed ``img_size``, whose position embedding
has one entry per 16^3 patch). Values a config leaves out are the builders' defaults.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from benchmark.models.nnunet import read_plans_architecture
from benchmark.models.registry import _import_target

__all__ = ["InputGrid", "input_grid", "size_problem"]

Triple = tuple[int, int, int]


@dataclass(frozen=True)
class InputGrid:
    """The input sizes a network accepts.

    Attributes:
        multiple: total stride ``[D, H, W]``: each size must be a multiple of it.
        derivation: where ``multiple`` comes from, for messages (``"product of net.strides"``).
        fixed: the only size accepted, or None (UNETR: ``net.img_size``).
        min_bottleneck_voxels: voxels the coarsest feature map (size / multiple) needs; 2 when
            it is instance-normalised, else 1.
    """

    multiple: Triple
    derivation: str
    fixed: Triple | None = None
    min_bottleneck_voxels: int = 1


def _triple(value: int | Sequence[int]) -> Triple:
    if isinstance(value, int):
        return (value, value, value)
    d, h, w = (int(v) for v in value)
    return (d, h, w)


def _product(factors: Sequence[int | Sequence[int]]) -> Triple:
    triples = [_triple(f) for f in factors]
    d, h, w = (math.prod(t[axis] for t in triples) for axis in range(3))
    return (d, h, w)


def _argument(net: Mapping[str, Any], name: str, *callables: Callable[..., Any]) -> Any:
    """``net[name]``, else the default of the first callable whose signature names it."""
    if name in net:
        return net[name]
    for fn in callables:
        parameter = inspect.signature(fn).parameters.get(name)
        if parameter is not None and parameter.default is not inspect.Parameter.empty:
            return parameter.default
    return None


def _bottleneck(instance_norm: bool) -> int:
    return 2 if instance_norm else 1


def _nnunet(net: Mapping[str, Any], target: Callable[..., Any]) -> InputGrid:
    plans = net.get("plans")
    if plans is not None:
        configuration = _argument(net, "configuration", target)
        arch = read_plans_architecture(str(plans), configuration)["arch_kwargs"]
        strides, n_stages = arch["strides"], arch.get("n_stages", len(arch["strides"]))
        instance = "instancenorm" in str(arch.get("norm_op", "")).lower()
        source = f"product of the strides in {plans} ({configuration})"
    else:
        strides, n_stages = _argument(net, "strides", target), _argument(net, "n_stages", target)
        instance = _argument(net, "norm", target) == "instance"
        source = "product of net.strides"
    stages = [strides] * int(n_stages) if isinstance(strides, int) else list(strides)
    return InputGrid(_product(stages), source, min_bottleneck_voxels=_bottleneck(instance))


def _stunet(net: Mapping[str, Any], target: Callable[..., Any]) -> InputGrid:
    pools = _argument(net, "pool_op_kernel_sizes", target)
    if pools is None:  # STUNet's default: 2x on every axis between consecutive stages
        pools = [2] * (len(_argument(net, "dims", target)) - 1)
    # every STU-Net block is instance-normalised
    return InputGrid(_product(pools), "product of net.pool_op_kernel_sizes", None, 2)


def _medformer(net: Mapping[str, Any], target: Callable[..., Any]) -> InputGrid:
    instance = _argument(net, "norm", target) == "in"
    return InputGrid(
        _product(_argument(net, "scale", target)),
        "product of net.scale",
        min_bottleneck_voxels=_bottleneck(instance),
    )


def _swinunetr(net: Mapping[str, Any], target: Callable[..., Any]) -> InputGrid:
    from monai.networks.nets import SwinUNETR

    patch = int(_argument(net, "patch_size", target, SwinUNETR))
    norm = _argument(net, "norm_name", target, SwinUNETR)
    instance = "instance" in str(norm).lower()
    return InputGrid(
        _triple(patch**5),
        f"SwinUNETR: net.patch_size**5 = {patch}**5",
        min_bottleneck_voxels=_bottleneck(instance),
    )


def _unetr(net: Mapping[str, Any], target: Callable[..., Any]) -> InputGrid:
    img_size = _triple(_argument(net, "img_size", target))
    return InputGrid(
        (16, 16, 16),
        "net.img_size: UNETR's position embedding is fixed to it",
        fixed=img_size,
    )


_RULES: dict[str, Callable[[Mapping[str, Any], Callable[..., Any]], InputGrid]] = {
    "build_nnunet": _nnunet,
    "STUNet": _stunet,
    "MedFormer": _medformer,
    "build_swinunetr": _swinunetr,
    "SwinUNETR": _swinunetr,
    "build_unetr": _unetr,
    "UNETR": _unetr,
}


def input_grid(net: Mapping[str, Any], source: str = "model") -> InputGrid | None:
    """The input grid of the network a ``net`` config (with ``_target_``) builds.

    Returns:
        None for a ``_target_`` without a known rule (the network's own code checks its input).

    Raises:
        ModelConfigError: ``_target_`` cannot be imported, or its plans file cannot be read.
    """
    path = str(net["_target_"])
    rule = _RULES.get(path.rpartition(".")[2])
    if rule is None:
        return None
    return rule(net, _import_target(path, source))


def size_problem(size: Sequence[int], grid: InputGrid) -> str | None:
    """Why ``size`` cannot be the network's input (with the nearest size that can), or None."""
    size = _triple(list(size))
    if grid.fixed is not None:
        if size == grid.fixed:
            return None
        return f"must equal {list(grid.fixed)} ({grid.derivation})"
    fitting = [math.ceil(s / m) * m for s, m in zip(size, grid.multiple, strict=True)]
    if math.prod(f // m for f, m in zip(fitting, grid.multiple, strict=True)) < (
        grid.min_bottleneck_voxels
    ):
        fitting[-1] += grid.multiple[-1]
    if any(s % m for s, m in zip(size, grid.multiple, strict=True)):
        return (
            f"is not a multiple of the total stride {list(grid.multiple)} on every axis "
            f"({grid.derivation}); the nearest size that fits is {fitting}"
        )
    bottleneck = [s // m for s, m in zip(size, grid.multiple, strict=True)]
    if math.prod(bottleneck) < grid.min_bottleneck_voxels:
        return (
            f"leaves a {'x'.join(map(str, bottleneck))} voxel bottleneck at the total stride "
            f"{list(grid.multiple)} ({grid.derivation}), too small for its instance "
            f"normalisation (more than one voxel needed); use e.g. {fitting}"
        )
    return None
