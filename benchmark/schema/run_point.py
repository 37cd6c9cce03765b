"""``RunPoint``: one run as every task sees it, a frozen value built once by the entry point.

The entry point (:mod:`benchmark.run`) composes and checks the Hydra config, then turns it into
this object of plain typed values (:func:`benchmark.config.build_point`): the group settings as
their schema dataclasses, the quantization point as a :class:`benchmark.quant.QuantSpec`, and the
run's identity. Nothing below the entry point sees a ``DictConfig``, so a task can be called
from a test or a notebook with a point built by hand.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from benchmark.data.config import DataConfig
from benchmark.quant import QuantSpec
from benchmark.schema.deploy import DeployConfig
from benchmark.schema.groups import (
    CalibrationConfig,
    Config,
    EvaluationConfig,
    InferenceConfig,
    ModelConfig,
    PathsConfig,
    ReportConfig,
    RunConfig,
)
from benchmark.schema.sensitivity import SensitivityConfig

__all__ = ["RunPoint"]


@dataclass(frozen=True)
class RunPoint:
    """A checked run: what to compute (model, data, spec, settings) and who the run is.

    Attributes:
        task: ``evaluate``, ``sensitivity`` or ``deploy``.
        experiment: the experiment name (results go to ``<results_dir>/<experiment>/``).
        seed: the global seed.
        spec: the quantization point (precision, granularity, observer, algorithm and every
            other engine choice).
        config_hash: sha256 of the part of the config that determines the results.
        run_id: readable run name ending in the hash prefix.
        resolved_yaml: the resolved config, written beside the rows.
    """

    task: str
    experiment: str
    seed: int
    model: ModelConfig
    data: DataConfig
    spec: QuantSpec
    calibration: CalibrationConfig
    inference: InferenceConfig
    evaluation: EvaluationConfig
    paths: PathsConfig
    run: RunConfig
    report: ReportConfig
    sensitivity: SensitivityConfig | None
    deploy: DeployConfig | None
    config_hash: str
    run_id: str
    resolved_yaml: str

    @classmethod
    def of(
        cls, config: Config, spec: QuantSpec, config_hash: str, run_id: str, resolved_yaml: str
    ) -> RunPoint:
        """The point of a config instance (the :class:`Config` schema filled in)."""
        return cls(
            task=config.task,
            experiment=config.experiment_name,
            seed=config.seed,
            model=config.model,
            data=config.data,
            spec=spec,
            calibration=config.calibration,
            inference=config.inference,
            evaluation=config.evaluation,
            paths=config.paths,
            run=config.run,
            report=config.report,
            sensitivity=config.sensitivity,
            deploy=config.deploy,
            config_hash=config_hash,
            run_id=run_id,
            resolved_yaml=resolved_yaml,
        )

    @property
    def precision(self) -> str:
        """The precision name (``fp32``, ``w4a4``, ...)."""
        return self.spec.precision

    @property
    def is_float(self) -> bool:
        """Whether the precision is fp32/fp16/bf16 (no scales, no calibration)."""
        return self.spec.is_float

    @property
    def experiment_dir(self) -> Path:
        """``<paths.results_dir>/<experiment>`` (relative paths from the launch directory)."""
        return Path(self.paths.results_dir) / self.experiment
