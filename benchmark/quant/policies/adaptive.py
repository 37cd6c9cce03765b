"""``adaptive`` stratification (MedQuanBench): per-voxel activation scales for 1x1x1
convolutions, per-channel/token scales elsewhere; ``large_kernel_per_voxel`` gives every
convolution per-voxel input scales (one per kernel position once factorized)."""

from benchmark.quant.granularity import PerAxis, PerOutputChannel, PerToken, PerVoxel
from benchmark.quant.policies.base import (
    ATTENTION,
    CONV,
    CONV_1X1,
    CONV_TRANSPOSED,
    LINEAR,
    GranularityPolicy,
    register_policy,
)

_PER_VOXEL = (PerOutputChannel(), PerVoxel())

POLICY = register_policy(
    GranularityPolicy(
        name="adaptive",
        description="per-voxel activation scales on 1x1x1 convs, per-channel/token elsewhere",
        precision_kind="scaled",
        table={
            CONV: (PerOutputChannel(), PerAxis(1)),
            CONV_1X1: _PER_VOXEL,
            CONV_TRANSPOSED: (PerOutputChannel(), PerAxis(1)),
            LINEAR: (PerOutputChannel(), PerToken()),
            ATTENTION: (None, PerToken()),
        },
        large_kernel_per_voxel={CONV: _PER_VOXEL, CONV_TRANSPOSED: _PER_VOXEL},
    )
)
