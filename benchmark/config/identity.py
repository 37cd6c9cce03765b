"""What identifies a run: the hashed part of its config and its readable name."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from benchmark.config.checks import is_float_precision

__all__ = ["algorithm_name", "hashed_point", "run_name"]


def hashed_point(cfg: DictConfig) -> dict[str, Any]:
    """The part of a validated config that determines a run's results (input of the hash).

    Paths, job behaviour, reporting and the experiment name are left out (they do not change
    what is computed); so are the quantization groups for floating-point precisions, whose
    runs do not depend on them, and the other tasks' groups.
    """
    keys = ["task", "seed", "model", "data", "precision", "inference", "evaluation", "quant"]
    if not is_float_precision(cfg.precision.name):
        keys += ["granularity", "observer", "algorithm", "calibration"]
    if cfg.task in ("sensitivity", "deploy"):
        keys.append(cfg.task)
    point = {
        k: OmegaConf.to_container(cfg[k], resolve=True)
        if isinstance(cfg[k], DictConfig)
        else cfg[k]
        for k in keys
    }
    for group, key, default in _HASHED_WHEN_SET:
        if point[group].get(key, default) == default:
            point[group].pop(key, None)
    for key in _NOT_HASHED["evaluation"]:
        point["evaluation"].pop(key, None)
    return point


# Keys added after run files were first written: they enter the hash only when they differ from
# the value that reproduces the earlier behaviour, so those run files keep their hashes.
_HASHED_WHEN_SET = (
    ("model", "fold", None),
    ("model", "checkpoint_name", None),
    ("inference", "mirroring", "auto"),
)
# Permissions and outputs that leave every value unchanged.
_NOT_HASHED = {"evaluation": ("allow_training_cases", "save_predictions")}


def run_name(cfg: DictConfig, config_hash: str) -> str:
    """Readable run id: ``[task-]model-precision[-granularity-observer-algorithm-nN]-hash10``."""
    parts = [] if cfg.task == "evaluate" else [cfg.task]
    parts += [cfg.model.name, cfg.precision.name]
    if not is_float_precision(cfg.precision.name):
        parts += [
            cfg.granularity.name,
            cfg.observer.name,
            algorithm_name(cfg),
            f"n{cfg.calibration.n}",
        ]
    return "-".join(parts + [config_hash[:10]])


def algorithm_name(cfg: DictConfig) -> str:
    """``algorithm.name`` as one string (a composition joined by ``+``)."""
    name = cfg.algorithm.name
    return "+".join(str(n) for n in name) if isinstance(name, ListConfig) else str(name)
