"""Identity and provenance of one run, and the per-run columns every tidy row carries."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from benchmark.config import bits, hashed_point, is_float, run_name
from benchmark.results import config_hash, provenance

__all__ = ["RunContext", "config_yaml", "experiment_dir", "point_columns"]


def experiment_dir(cfg: DictConfig) -> Path:
    """``<paths.results_dir>/<experiment_name>`` (relative paths from the launch directory)."""
    return Path(cfg.paths.results_dir) / cfg.experiment_name


@dataclasses.dataclass(frozen=True)
class RunContext:
    """Who a run is: its config hash and id, where its files go, and its provenance.

    Attributes:
        config_hash: sha256 of :func:`benchmark.config.hashed_point` of the validated config.
        run_id: :func:`benchmark.config.run_name` (readable, ends in the hash prefix).
        experiment: ``experiment_name``.
        experiment_dir: ``<results_dir>/<experiment>``.
        provenance: :func:`benchmark.results.provenance` taken when the context was made.
    """

    config_hash: str
    run_id: str
    experiment: str
    experiment_dir: Path
    provenance: dict[str, Any]

    @classmethod
    def from_config(cls, cfg: DictConfig) -> RunContext:
        """Context of a validated config."""
        digest = config_hash(hashed_point(cfg))
        return cls(
            config_hash=digest,
            run_id=run_name(cfg, digest),
            experiment=cfg.experiment_name,
            experiment_dir=experiment_dir(cfg),
            provenance=provenance(),
        )


def point_columns(
    cfg: DictConfig, context: RunContext, calib_n: int | None = None, params_m: float | None = None
) -> dict[str, Any]:
    """Columns shared by all rows of a run (identity, model, quantization point, provenance).

    Floating-point precisions report ``granularity``, ``observer`` and ``algorithm`` as
    ``none`` and ``calib_n`` 0, since none of them applies.
    """
    floating = is_float(cfg.precision.name)
    w_bits, a_bits = bits(cfg.precision.name)
    prov = context.provenance
    return {
        "experiment": context.experiment,
        "run_id": context.run_id,
        "config_hash": context.config_hash,
        "task": cfg.task,
        "model": cfg.model.name,
        "family": cfg.model.family,
        "framework": cfg.model.framework,
        "display_name": cfg.model.display_name,
        "params_m": float(params_m) if params_m is not None else float("nan"),
        "dataset": cfg.data.name,
        "precision": cfg.precision.name,
        "w_bits": w_bits,
        "a_bits": a_bits,
        "granularity": "none" if floating else cfg.granularity.name,
        "observer": "none" if floating else cfg.observer.name,
        "algorithm": "none" if floating else cfg.algorithm.name,
        "calib_n": 0 if floating else int(calib_n if calib_n is not None else cfg.calibration.n),
        "seed": int(cfg.seed),
        "commit": prov["commit"],
        "dirty": prov["dirty"],
        "created": prov["created"],
        "package_version": prov["package_version"],
        "hardware": f"{cfg.inference.device}; {prov['hardware']}",
    }


def config_yaml(cfg: DictConfig) -> str:
    """The run's resolved config as YAML (without the ``hydra`` node)."""
    body = OmegaConf.masked_copy(cfg, [k for k in cfg.keys() if k != "hydra"])
    return OmegaConf.to_yaml(body, resolve=True)
