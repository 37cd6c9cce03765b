"""Structured configs of ``conf/``: one dataclass per group (the schemas Hydra checks at compose
time). Values live in ``conf/``; these state the keys and their types.

Schemas live in the ``schema`` group (``/schema/<group>``) rather than beside the options, so
that ``glob(*)`` sweeps and ``--help`` list only real options (see
:func:`benchmark.config.register_configs`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING

from benchmark.data.config import DataConfig
from benchmark.deploy.config import DeployConfig

try:
    from benchmark.analysis.config import SensitivityConfig
except ImportError:  # the sensitivity analysis is an optional part of the package
    SensitivityConfig = None

__all__ = [
    "GROUP_SCHEMAS",
    "AlgorithmConfig",
    "CalibrationConfig",
    "Config",
    "EvaluationConfig",
    "GranularityConfig",
    "InferenceConfig",
    "ModelConfig",
    "ObserverConfig",
    "PathsConfig",
    "PrecisionConfig",
    "ReportConfig",
    "RunConfig",
]


@dataclass
class PrecisionConfig:
    """``conf/precision/<name>.yaml``: ``fp32``, ``fp16``, ``bf16`` or ``wNaM`` (e.g. ``w4a8``)."""

    name: str = MISSING


@dataclass
class GranularityConfig:
    """``conf/granularity/<name>.yaml``: how many scales a quantized tensor gets.

    ``per_tensor``: one scale per weight and per activation tensor. ``per_channel_token``:
    weights one per output channel (Conv3d ``[Cout, Cin, k, k, k]`` -> ``Cout`` scales),
    convolution activations one per input channel (``[B, C, D, H, W]`` -> ``C``), linear and
    attention activations one per token (``[B, N, C]`` -> ``N``). ``adaptive``: per-voxel
    activation scales for 1x1x1 convolutions (``D*H*W``), per-channel/token elsewhere.
    ``none``: floating-point precisions.
    """

    name: str = MISSING


@dataclass
class ObserverConfig:
    """``conf/observer/<name>.yaml``: how calibration batches become activation ranges.

    Fields other than ``name`` are handed to :class:`benchmark.quant.QuantSpec` by name.
    """

    name: str = MISSING
    percentile: float = 99.99
    averaging_constant: float = 0.01
    mse_grid: int = 20
    mse_min_ratio: float = 0.2


@dataclass
class AlgorithmConfig:
    """``conf/algorithm/<name>.yaml``: the post-training quantization algorithm."""

    name: str = "none"


@dataclass
class CalibrationConfig:
    """``conf/calibration/<name>.yaml``: ``n`` ROI-size patches (``batch_size`` per batch) drawn
    with ``seed`` from the ``split`` split (train or val; never test)."""

    name: str = MISSING
    n: int = 16
    split: str = "train"
    seed: int = 0
    batch_size: int = 1


@dataclass
class InferenceConfig:
    """``conf/inference/<name>.yaml``: sliding-window prediction settings.

    ``roi_size`` ``[D, H, W]`` voxels (``null`` = the model's ``patch_size``); ``overlap`` in
    [0, 1); ``device`` ``cpu`` or ``cuda[:i]``; ``amp`` CUDA autocast; ``mode`` gaussian|constant;
    ``mirroring`` test-time mirroring: ``auto`` (an nnU-Net folder's allowed axes, else none),
    ``none``, or a list of spatial axes (``[0, 1, 2]``).
    """

    name: str = MISSING
    roi_size: list[int] | None = None
    overlap: float = 0.5
    sw_batch_size: int = 2
    device: str = "cpu"
    amp: bool = False
    mode: str = "gaussian"
    mirroring: Any = "auto"


@dataclass
class ModelConfig:
    """``conf/model/<name>.yaml`` (contract of :mod:`benchmark.models`)."""

    name: str = MISSING
    display_name: str = MISSING
    framework: str = MISSING
    family: str = MISSING
    published_params_m: float | None = None
    patch_size: list[int] = MISSING
    net: Any = MISSING
    checkpoint: str | None = None
    checkpoint_format: str = "auto"
    fold: Any = None
    checkpoint_name: str = "checkpoint_final.pth"


@dataclass
class EvaluationConfig:
    """What is scored: ``max_cases`` cases (``null`` = all) of ``split`` (``auto``: an nnU-Net
    folder's fold validation cases, else ``test``); NSD at ``tolerance_mm``; ECE/Brier when
    ``probability_metrics``; agreement with the FP32 prediction when ``fp32_agreement``.
    Scoring ``train`` cases needs ``allow_training_cases``; ``save_predictions`` writes each
    case's label map as NIfTI (nnU-Net's output layout)."""

    split: str = "auto"
    max_cases: int | None = None
    tolerance_mm: float = 2.0
    probability_metrics: bool = True
    fp32_agreement: bool = True
    allow_training_cases: bool = False
    save_predictions: bool = False


@dataclass
class PathsConfig:
    """``results_dir``: tidy results (``<results_dir>/<experiment>/``); ``log_dir``: Hydra's
    output dirs; ``cache_dir``: FP32 predictions and calibration ranges (``null`` =
    ``$MEDQBENCH_CACHE`` or ``~/.cache/medqbench``). Relative paths are taken from the launch
    directory (``hydra.job.chdir`` stays False)."""

    results_dir: str = "results"
    log_dir: str = "outputs"
    cache_dir: str | None = None


@dataclass
class RunConfig:
    """Job behaviour that does not change results (excluded from the config hash)."""

    skip_existing: bool = True
    progress: bool = True


@dataclass
class ReportConfig:
    """What the end of a sweep prints or draws (excluded from the config hash)."""

    table: bool = True
    format: str = "md"
    plot: bool = False


@dataclass
class Config:
    """Primary config (``conf/config.yaml``)."""

    task: str = "evaluate"
    experiment_name: str = "adhoc"
    seed: int = 0
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    precision: PrecisionConfig = field(default_factory=PrecisionConfig)
    granularity: GranularityConfig = field(default_factory=GranularityConfig)
    observer: ObserverConfig = field(default_factory=ObserverConfig)
    algorithm: AlgorithmConfig = field(default_factory=AlgorithmConfig)
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    quant: dict[str, Any] = field(default_factory=dict)
    checkpoints: dict[str, Any] = field(default_factory=dict)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    sensitivity: Any = None
    deploy: DeployConfig | None = None
    paths: PathsConfig = field(default_factory=PathsConfig)
    run: RunConfig = field(default_factory=RunConfig)
    report: ReportConfig = field(default_factory=ReportConfig)


GROUP_SCHEMAS = {
    "precision": PrecisionConfig,
    "granularity": GranularityConfig,
    "observer": ObserverConfig,
    "algorithm": AlgorithmConfig,
    "calibration": CalibrationConfig,
    "inference": InferenceConfig,
    "model": ModelConfig,
    "data": DataConfig,
    "deploy": DeployConfig,
}
if SensitivityConfig is not None:
    GROUP_SCHEMAS["sensitivity"] = SensitivityConfig
