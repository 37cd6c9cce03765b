"""``none``: floating-point casts (fp32, fp16, bf16) have no scales."""

from benchmark.quant.policies.base import GranularityPolicy, register_policy

POLICY = register_policy(
    GranularityPolicy(
        name="none", description="no scales (fp32/fp16/bf16)", precision_kind="cast", table={}
    )
)
