"""Typed settings: the config groups' schemas (values live in ``conf/``) and the run point.

:mod:`benchmark.schema.groups` holds one dataclass per config group, :mod:`.deploy` and
:mod:`.sensitivity` the two task groups, :mod:`.run_point` the frozen :class:`RunPoint` the
entry point hands to every task. Only :mod:`benchmark.config` touches Hydra.
"""

from __future__ import annotations

from benchmark.schema.deploy import DeployConfig
from benchmark.schema.groups import (
    GROUP_SCHEMAS,
    AlgorithmConfig,
    CalibrationConfig,
    Config,
    EvaluationConfig,
    GranularityConfig,
    InferenceConfig,
    ModelConfig,
    ObserverConfig,
    PathsConfig,
    PrecisionConfig,
    ReportConfig,
    RunConfig,
)
from benchmark.schema.run_point import RunPoint
from benchmark.schema.sensitivity import SensitivityConfig

__all__ = [
    "GROUP_SCHEMAS",
    "AlgorithmConfig",
    "CalibrationConfig",
    "Config",
    "DeployConfig",
    "EvaluationConfig",
    "GranularityConfig",
    "InferenceConfig",
    "ModelConfig",
    "ObserverConfig",
    "PathsConfig",
    "PrecisionConfig",
    "ReportConfig",
    "RunConfig",
    "RunPoint",
    "SensitivityConfig",
]
