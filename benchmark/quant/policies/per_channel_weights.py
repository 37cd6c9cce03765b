"""``per_channel_weights``: weights one scale per output channel, every activation one scale
per tensor. This is what the INT8 runtimes' static quantization does (ONNX Runtime's
``per_channel=True``, PyTorch's x86 qconfig, OpenVINO), so it is the point whose fake-quant model
exports with its own scales (``benchmark.deploy.qdq_export``); MedQuanBench's per-channel/token
scheme gives convolution inputs per-channel scales, which no runtime kernel factors out."""

from benchmark.quant.granularity import PerOutputChannel, PerTensor
from benchmark.quant.policies.base import ATTENTION, OP_KINDS, GranularityPolicy, register_policy

POLICY = register_policy(
    GranularityPolicy(
        name="per_channel_weights",
        description="weights per output channel; every activation per tensor",
        precision_kind="scaled",
        table={
            kind: ((None, PerTensor()) if kind == ATTENTION else (PerOutputChannel(), PerTensor()))
            for kind in OP_KINDS
        },
    )
)
