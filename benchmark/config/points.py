"""The one conversion from a composed ``DictConfig`` to the frozen :class:`RunPoint`."""

from __future__ import annotations

import dataclasses
from typing import Any

from omegaconf import DictConfig, OmegaConf

from benchmark.config.checks import is_float_precision, validate
from benchmark.config.identity import hashed_point, run_name
from benchmark.config.store import ConfigError
from benchmark.quant import QuantSpec, QuantSpecError
from benchmark.results import config_hash
from benchmark.schema import Config, RunPoint

__all__ = ["build_point", "config_yaml", "quant_spec"]


def quant_spec(cfg: DictConfig) -> QuantSpec:
    """The :class:`benchmark.quant.QuantSpec` of a validated config.

    ``precision``/``granularity``/``observer``/``algorithm`` names map to the fields of the same
    name; the observer group's other fields (when an option file sets them), the algorithm's
    ``options`` and ``quant.*`` go to the QuantSpec fields of the same name (``quant.*`` keys
    must be fields). Values left unset keep the engine's defaults.
    """
    names = {f.name for f in dataclasses.fields(QuantSpec)}
    kwargs: dict[str, Any] = {"precision": cfg.precision.name}
    if not is_float_precision(cfg.precision.name):
        algorithm = OmegaConf.to_container(cfg.algorithm, resolve=True)
        kwargs.update(
            granularity=cfg.granularity.name,
            observer=cfg.observer.name,
            algorithm=algorithm["name"],
            algorithm_options=algorithm.get("options") or {},
        )
        for key, value in OmegaConf.to_container(cfg.observer, resolve=True).items():
            if key != "name" and key in names and value is not None:
                kwargs[key] = value
    extra = OmegaConf.to_container(cfg.quant, resolve=True)
    unknown = sorted(set(extra) - names)
    if unknown:
        raise ConfigError(f"quant.{unknown[0]} is not a QuantSpec field; fields: {sorted(names)}")
    kwargs.update(extra)
    try:
        return QuantSpec(**kwargs)
    except QuantSpecError as exc:
        raise ConfigError(str(exc)) from exc


def config_yaml(cfg: DictConfig) -> str:
    """The run's resolved config as YAML (without the ``hydra`` node)."""
    body = OmegaConf.masked_copy(cfg, [k for k in cfg.keys() if k != "hydra"])
    return OmegaConf.to_yaml(body, resolve=True)


def build_point(cfg: DictConfig, in_sweep: bool = False) -> RunPoint:
    """Validate ``cfg`` once and turn it into the frozen :class:`RunPoint` the tasks take.

    Raises:
        ConfigError: see :func:`validate` and :func:`quant_spec`.
    """
    checked = validate(cfg, in_sweep=in_sweep)
    plain: Config = OmegaConf.to_object(checked)
    digest = config_hash(hashed_point(checked))
    return RunPoint.of(
        plain, quant_spec(checked), digest, run_name(checked, digest), config_yaml(checked)
    )
