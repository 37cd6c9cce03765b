"""``per_block``: the block scales a block precision defines (OCP MX: 32 elements, NVFP4: 16,
``wNaM_gK``: K), along the axis each operator sums over, for weights and activations alike."""

from benchmark.quant.granularity import PerBlock
from benchmark.quant.policies.base import OP_KINDS, GranularityPolicy, register_policy

POLICY = register_policy(
    GranularityPolicy(
        name="per_block",
        description="block scales along the reduction axis, block size set by the precision",
        precision_kind="block",
        table=dict.fromkeys(OP_KINDS, (PerBlock(), PerBlock())),
    )
)
