"""``per_tensor``: one scale per weight tensor and one per activation tensor."""

from benchmark.quant.granularity import PerTensor
from benchmark.quant.policies.base import OP_KINDS, GranularityPolicy, register_policy

POLICY = register_policy(
    GranularityPolicy(
        name="per_tensor",
        description="one scale per weight tensor and one per activation tensor",
        precision_kind="scaled",
        table=dict.fromkeys(OP_KINDS, (PerTensor(), PerTensor())),
    )
)
