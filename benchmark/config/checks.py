"""Cross-field validation of a composed config, before any work starts.

The schema is applied again, so configs not built by Hydra's compose get the same key and type
checks; the rules a schema cannot express (``granularity=adaptive`` with ``precision=fp16``,
calibrating on the test split, a task without its group, ...) name the key and what to use.
"""

from __future__ import annotations

import re
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from benchmark.config.store import ConfigError, schema_node
from benchmark.data.config import DataConfig
from benchmark.deploy.settings import check_deploy
from benchmark.models.nnunet_folder import is_nnunet_folder
from benchmark.models.registry import CHECKPOINT_FORMATS, FAMILIES
from benchmark.quant import OBSERVERS as QUANT_OBSERVERS
from benchmark.quant import POLICIES, QuantSpecError, precision_format
from benchmark.schema import Config

__all__ = ["GRANULARITIES", "OBSERVERS", "TASKS", "is_float_precision", "validate"]

TASKS = ("evaluate", "sensitivity", "deploy")
# names defined once, by the quant engine's registries (policies and observers)
GRANULARITIES = POLICIES.names()
OBSERVERS = ("none", *QUANT_OBSERVERS.names())


def is_float_precision(precision: str) -> bool:
    """Whether a (valid) precision name is a float cast: fp32, fp16, bf16."""
    return precision_format(precision).family == "cast"


def _check_precision_name(precision: Any) -> None:
    """The precision must parse (the message lists the accepted forms)."""
    if not isinstance(precision, str) or precision != precision.strip().lower():
        raise ConfigError(f"precision.name={precision!r} must be a lower-case name, e.g. w8a8")
    try:
        precision_format(precision)
    except QuantSpecError as exc:
        raise ConfigError(str(exc).replace("precision=", "precision.name=", 1)) from exc


def _check_precision_granularity(precision: str, granularity: str) -> None:
    """Block formats set their own scales (``per_block``); the others take the policies."""
    if is_float_precision(precision):
        return
    family = precision_format(precision).family
    kind = POLICIES.get(granularity).precision_kind
    if kind != family:
        fitting = [n for n in POLICIES.names() if POLICIES.get(n).precision_kind == family]
        raise ConfigError(
            f"granularity={granularity} does not apply to precision={precision}; use "
            f"granularity={' or '.join(fitting)}"
        )


def validate(cfg: DictConfig, in_sweep: bool = False) -> DictConfig:
    """Check a composed config before any work and return the config the run uses.

    The schema (:class:`Config`) is applied again, so configs not built by Hydra's compose get
    the same key and type checks. In a sweep, a floating-point precision crossed with the
    granularity axis is collapsed to ``granularity=none`` (all such jobs share one config hash,
    so the point runs once); outside a sweep the combination is an error.

    Args:
        cfg: the composed config (a ``hydra`` node, if present, is kept as is).
        in_sweep: whether the job is one of a multirun's cross product.

    Returns:
        A validated copy (read-only nodes are not modified in place).

    Raises:
        ConfigError: naming the offending key(s), the value and the allowed values.
    """
    # a plain copy, so nodes already typed (and widened by `+key=` overrides) are checked again
    body = {
        k: OmegaConf.to_container(cfg[k]) if OmegaConf.is_config(cfg[k]) else cfg[k]
        for k in cfg
        if k != "hydra"
    }
    try:
        checked = OmegaConf.merge(schema_node(Config), body)
        OmegaConf.to_container(checked, resolve=True, throw_on_missing=True)
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", None)
        raise ConfigError(
            f"invalid config at {key!r}: {exc.msg if hasattr(exc, 'msg') else exc}"
        ) from exc
    _check_choices(checked)
    precision = checked.precision.name
    _check_precision_name(precision)
    granularity = checked.granularity.name
    if is_float_precision(precision) and granularity != "none":
        if not in_sweep:
            raise ConfigError(
                f"granularity={granularity} is impossible with precision={precision}: "
                "floating-point precisions have no quantization scales; use granularity=none"
            )
        checked.granularity.name = "none"
    if not is_float_precision(precision):
        if granularity == "none":
            raise ConfigError(
                f"precision={precision} needs a granularity (per_tensor, per_channel_token or "
                "adaptive); granularity=none is for fp32/fp16/bf16 only"
            )
        if checked.observer.name == "none":
            raise ConfigError(
                f"precision={precision} needs an observer; observer=none is for floats"
            )
        _check_precision_granularity(precision, granularity)
    _resolve_split(checked)
    _check_ranges(checked)
    _check_owned(checked)
    return checked


def _resolve_split(cfg: DictConfig) -> None:
    """``evaluation.split=auto`` -> ``val`` for an nnU-Net folder (its fold's held-out cases),
    else ``test``; scoring training cases must be asked for."""
    if cfg.evaluation.split == "auto":
        cfg.evaluation.split = "val" if is_nnunet_folder(cfg.model.checkpoint) else "test"
    if cfg.evaluation.split == "train" and not cfg.evaluation.allow_training_cases:
        raise ConfigError(
            "evaluation.split=train scores cases the model was trained on; set "
            "evaluation.allow_training_cases=true if that is what you want (rows record it)"
        )


def _check_choices(cfg: DictConfig) -> None:
    choices = {
        "task": (cfg.task, TASKS),
        "granularity.name": (cfg.granularity.name, GRANULARITIES),
        "observer.name": (cfg.observer.name, OBSERVERS),
        "model.family": (cfg.model.family, FAMILIES),
        "model.checkpoint_format": (cfg.model.checkpoint_format, CHECKPOINT_FORMATS),
        "calibration.split": (cfg.calibration.split, ("train", "val")),
        "evaluation.split": (cfg.evaluation.split, ("auto", "train", "val", "test")),
        "inference.mode": (cfg.inference.mode, ("gaussian", "constant")),
        "report.format": (cfg.report.format, ("md", "csv", "tex")),
    }
    for key, (value, allowed) in choices.items():
        if value not in allowed:
            raise ConfigError(f"{key}={value!r} is not one of {list(allowed)}")
    for key in ("experiment_name", "model.name", "precision.name", "algorithm.name"):
        value = OmegaConf.select(cfg, key)
        if isinstance(value, ListConfig):
            value = "+".join(str(v) for v in value)
        if not value or "/" in value:
            raise ConfigError(f"{key}={value!r} must be a non-empty name without '/'")


def _check_ranges(cfg: DictConfig) -> None:
    for key, value in (
        ("model.patch_size", cfg.model.patch_size),
        ("inference.roi_size", cfg.inference.roi_size),
    ):
        if value is not None and (len(value) != 3 or any(int(v) < 1 for v in value)):
            raise ConfigError(f"{key}={list(value)} must be three positive voxel counts [D, H, W]")
    positive = {
        "calibration.n": cfg.calibration.n,
        "calibration.batch_size": cfg.calibration.batch_size,
        "inference.sw_batch_size": cfg.inference.sw_batch_size,
        "evaluation.tolerance_mm": cfg.evaluation.tolerance_mm,
    }
    if cfg.evaluation.max_cases is not None:
        positive["evaluation.max_cases"] = cfg.evaluation.max_cases
    for key, value in positive.items():
        if value <= 0:
            raise ConfigError(f"{key}={value} must be > 0")
    if not 0 <= cfg.inference.overlap < 1:
        raise ConfigError(f"inference.overlap={cfg.inference.overlap} must be in [0, 1)")
    device = cfg.inference.device
    if not re.match(r"^(cpu|cuda(:\d+)?)$", device):
        raise ConfigError(f"inference.device={device!r} must be cpu, cuda or cuda:<index>")
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(
                f"inference.device={device} but torch sees no CUDA device; use inference=default (cpu)"
            )


def _check_owned(cfg: DictConfig) -> None:
    """Run the owners' own validation of the data, sensitivity and deploy nodes."""
    try:
        DataConfig.from_mapping(cfg.data)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    for key in ("sensitivity", "deploy"):
        if cfg.task == key and cfg.get(key) is None:
            raise ConfigError(f"task={key} needs the {key} group (conf/{key}/default.yaml)")
        if cfg.get(key) is not None:
            try:
                settings = OmegaConf.to_object(cfg[key])
                if key == "deploy":
                    check_deploy(settings)
            except (ValueError, KeyError) as exc:
                raise ConfigError(f"{key}: {exc}") from exc
