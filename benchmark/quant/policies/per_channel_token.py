"""``per_channel_token`` (MedQuanBench): weights one scale per output channel; convolution
activations one per input channel; linear-layer and attention activations one per token."""

from benchmark.quant.granularity import PerAxis, PerOutputChannel, PerToken
from benchmark.quant.policies.base import (
    ATTENTION,
    CONV,
    CONV_1X1,
    CONV_TRANSPOSED,
    LINEAR,
    GranularityPolicy,
    register_policy,
)

_CONV = (PerOutputChannel(), PerAxis(1))

POLICY = register_policy(
    GranularityPolicy(
        name="per_channel_token",
        description="weights per output channel; conv inputs per channel; linear/attention "
        "inputs per token",
        precision_kind="scaled",
        table={
            CONV: _CONV,
            CONV_1X1: _CONV,
            CONV_TRANSPOSED: _CONV,
            LINEAR: (PerOutputChannel(), PerToken()),
            ATTENTION: (None, PerToken()),
        },
    )
)
