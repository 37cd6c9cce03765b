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
from benchmark.schema.deploy import DeployConfig
from benchmark.schema.sensitivity import SensitivityConfig

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


@dataclass(frozen=True)
class PrecisionConfig:
    """``conf/precision/<name>.yaml``: ``fp32``, ``fp16``, ``bf16`` or ``wNaM`` (e.g. ``w4a8``)."""

    name: str = MISSING


@dataclass(frozen=True)
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


@dataclass(frozen=True)
class ObserverConfig:
    """``conf/observer/<name>.yaml``: how calibration batches become activation ranges.

    Fields other than ``name`` are handed to :class:`benchmark.quant.QuantSpec` by name when an
    option file sets them; unset (``None``) they keep the engine's own default.
    """

    name: str = MISSING
    percentile: float | None = None
    averaging_constant: float | None = None
    mse_grid: int | None = None
    mse_min_ratio: float | None = None


@dataclass(frozen=True)
class AlgorithmConfig:
    """``conf/algorithm/<name>.yaml``: the quantization algorithm, or an ordered composition.

    ``name`` is one method or a list (``[smoothquant, gptq]``); ``options`` is a mapping, flat for
    one method and keyed by method for a composition (:class:`benchmark.quant.QuantSpec`).
    """

    name: Any = MISSING
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class CalibrationConfig:
    """``conf/calibration/<name>.yaml``: ``n`` ROI-size patches (``batch_size`` per batch) drawn
    with ``seed`` from the ``split`` split (train or val; never test)."""

    name: str = MISSING
    n: int = MISSING
    split: str = MISSING
    seed: int = MISSING
    batch_size: int = MISSING


@dataclass(frozen=True)
class InferenceConfig:
    """``conf/inference/<name>.yaml``: sliding-window prediction settings.

    ``roi_size`` ``[D, H, W]`` voxels (``null`` = the model's ``patch_size``); ``overlap`` in
    [0, 1); ``device`` ``cpu`` or ``cuda[:i]``; ``amp`` CUDA autocast; ``mode`` gaussian|constant;
    ``mirroring`` test-time mirroring: ``auto`` (an nnU-Net folder's allowed axes, else none),
    ``none``, or a list of spatial axes (``[0, 1, 2]``).
    """

    name: str = MISSING
    roi_size: list[int] | None = MISSING
    overlap: float = MISSING
    sw_batch_size: int = MISSING
    device: str = MISSING
    amp: bool = MISSING
    mode: str = MISSING
    mirroring: Any = MISSING


@dataclass(frozen=True)
class ModelConfig:
    """``conf/model/<name>.yaml`` (contract of :mod:`benchmark.models`).

    ``fold`` and ``checkpoint_name`` pick the checkpoint of an nnU-Net results folder; unset
    (``None``) they are the folder's own choice (:func:`benchmark.models.open_nnunet_folder`).
    """

    name: str = MISSING
    display_name: str = MISSING
    framework: str = MISSING
    family: str = MISSING
    published_params_m: float | None = None
    patch_size: list[int] = MISSING
    net: Any = MISSING
    checkpoint: str | None = None
    checkpoint_format: str = MISSING
    fold: Any = None
    checkpoint_name: str | None = None


@dataclass(frozen=True)
class EvaluationConfig:
    """What is scored: ``max_cases`` cases (``null`` = all) of ``split`` (``auto``: an nnU-Net
    folder's fold validation cases, else ``test``); NSD at ``tolerance_mm``; ECE/Brier when
    ``probability_metrics``; agreement with the FP32 prediction when ``fp32_agreement``.
    Scoring ``train`` cases needs ``allow_training_cases``; ``save_predictions`` writes each
    case's label map as NIfTI (nnU-Net's output layout)."""

    split: str = MISSING
    max_cases: int | None = MISSING
    tolerance_mm: float = MISSING
    probability_metrics: bool = MISSING
    fp32_agreement: bool = MISSING
    allow_training_cases: bool = MISSING
    save_predictions: bool = MISSING


@dataclass(frozen=True)
class PathsConfig:
    """``results_dir``: tidy results (``<results_dir>/<experiment>/``); ``log_dir``: Hydra's
    output dirs; ``cache_dir``: FP32 predictions and calibration ranges (``null`` =
    ``$MEDQBENCH_CACHE`` or ``~/.cache/medqbench``). Relative paths are taken from the launch
    directory (``hydra.job.chdir`` stays False)."""

    results_dir: str = MISSING
    log_dir: str = MISSING
    cache_dir: str | None = MISSING


@dataclass(frozen=True)
class RunConfig:
    """Job behaviour that does not change results (excluded from the config hash)."""

    skip_existing: bool = MISSING
    progress: bool = MISSING


@dataclass(frozen=True)
class ReportConfig:
    """What the end of a sweep prints or draws (excluded from the config hash)."""

    table: bool = MISSING
    format: str = MISSING
    plot: bool = MISSING
    calibration: bool = MISSING


@dataclass(frozen=True)
class Config:
    """Primary config (``conf/config.yaml``)."""

    task: str = MISSING
    experiment_name: str = MISSING
    seed: int = MISSING
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
    sensitivity: SensitivityConfig | None = None
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
    "sensitivity": SensitivityConfig,
}
