"""The run config: schemas registered in Hydra's ConfigStore, cross-field validation, identity.

The schemas (one dataclass per group) are in :mod:`benchmark.schema`. Every option file of a group extends its schema explicitly through its defaults list
(``- /schema/precision@_here_``), and the primary config extends :class:`Config`, so an unknown
key or a wrong type fails at compose time with the key's full name. Cross-field rules that a
schema cannot express (``granularity=adaptive`` with ``precision=fp16``, calibrating on the test
split, ...) are checked by :func:`validate` before any work starts.

Schemas live in the ``schema`` group (``/schema/<group>``) rather than beside the options, so
that ``glob(*)`` sweeps and ``--help`` list only real options.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from benchmark.data.config import DataConfig
from benchmark.models.nnunet_folder import is_nnunet_folder
from benchmark.models.registry import CHECKPOINT_FORMATS, FAMILIES
from benchmark.quant import OBSERVERS as QUANT_OBSERVERS
from benchmark.quant import POLICIES, QuantSpecError, precision_format
from benchmark.schema import (
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

__all__ = [
    "FLOAT_PRECISIONS",
    "GROUP_SCHEMAS",
    "GRANULARITIES",
    "OBSERVERS",
    "TASKS",
    "AlgorithmConfig",
    "CalibrationConfig",
    "Config",
    "ConfigError",
    "EvaluationConfig",
    "GranularityConfig",
    "InferenceConfig",
    "ModelConfig",
    "ObserverConfig",
    "PathsConfig",
    "PrecisionConfig",
    "ReportConfig",
    "RunConfig",
    "bits",
    "hashed_point",
    "is_float",
    "register_configs",
    "run_name",
    "sweep_subdir",
    "validate",
]

TASKS = ("evaluate", "sensitivity", "deploy")
#: Floating-point precisions and their (weight, activation) bits; they have no scales to choose.
FLOAT_PRECISIONS = {"fp32": 32, "fp16": 16, "bf16": 16}
# names defined once, by the quant engine's registries (policies and observers)
GRANULARITIES = POLICIES.names()
OBSERVERS = ("none", *QUANT_OBSERVERS.names())


class ConfigError(ValueError):
    """A composed config that cannot be run; the message names the key(s) and what to do."""


_SUBDIR_SKIP = ("hydra", "experiment=", "paths.", "run.", "report.")


def sweep_subdir(overrides: Any) -> str:
    """Folder name of a sweep job from its own overrides (``hydra.sweep.subdir``).

    ``["precision=w8a8", "model=tiny_nnunet"]`` -> ``model=tiny_nnunet,precision=w8a8``: the
    model first, then the other group choices, then value overrides (``calibration.n=32``),
    each sorted; without ``hydra*``, ``experiment=`` and the keys that do
    not change results (``paths.*``, ``run.*``, ``report.*``); ``/`` replaced by ``_``. Names
    over 200 characters are cut and end in a hash of the whole, so they stay unique.
    """
    items = sorted(
        str(o).replace("/", "_")
        for o in overrides
        if not str(o).lstrip("+~").startswith(_SUBDIR_SKIP)
    )
    items.sort(key=lambda item: (not item.startswith("model="), "." in item.split("=")[0]))
    name = ",".join(items) or "default"
    if len(name) > 200:
        name = name[:180] + "-" + hashlib.sha256(name.encode()).hexdigest()[:12]
    return name


def register_configs() -> None:
    """Store the schemas (``/schema/<group>`` for option files, ``medqbench_schema`` for the
    primary config) and the ``medqbench_subdir`` resolver. Idempotent; runs on import."""
    OmegaConf.register_new_resolver("medqbench_subdir", sweep_subdir, replace=True)
    store = ConfigStore.instance()
    store.store(name="medqbench_schema", node=Config)
    for group, schema in GROUP_SCHEMAS.items():
        store.store(group="schema", name=group, node=schema)


register_configs()


def is_float(precision: str) -> bool:
    """Whether ``precision`` is a floating-point precision (no quantization scales)."""
    return precision in FLOAT_PRECISIONS


def bits(precision: str) -> tuple[int, int]:
    """``(w_bits, a_bits)`` of a precision string: storage bits of a float cast (32, 16), else
    the element bits of :func:`benchmark.quant.precision_format` (``fp8_e4m3`` -> (8, 8),
    ``mxfp4`` -> (4, 4), ``w4a16_g128`` -> (4, 16)).

    Raises:
        ConfigError: ``precision`` does not parse (the message lists the accepted forms).
    """
    if precision in FLOAT_PRECISIONS:
        return FLOAT_PRECISIONS[precision], FLOAT_PRECISIONS[precision]
    if not isinstance(precision, str) or precision != precision.strip().lower():
        raise ConfigError(f"precision.name={precision!r} must be a lower-case name, e.g. w8a8")
    try:
        fmt = precision_format(precision)
    except QuantSpecError as exc:
        raise ConfigError(str(exc).replace("precision=", "precision.name=", 1)) from exc
    return fmt.w_bits, fmt.a_bits


def _check_precision_granularity(precision: str, granularity: str) -> None:
    """Block formats set their own scales (``per_block``); the others take the policies."""
    if is_float(precision):
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
        checked = OmegaConf.merge(OmegaConf.structured(Config), body)
        OmegaConf.to_container(checked, resolve=True, throw_on_missing=True)
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", None)
        raise ConfigError(
            f"invalid config at {key!r}: {exc.msg if hasattr(exc, 'msg') else exc}"
        ) from exc
    _check_choices(checked)
    precision = checked.precision.name
    w_bits, a_bits = bits(precision)
    granularity = checked.granularity.name
    if is_float(precision) and granularity != "none":
        if not in_sweep:
            raise ConfigError(
                f"granularity={granularity} is impossible with precision={precision}: "
                "floating-point precisions have no quantization scales; use granularity=none"
            )
        checked.granularity.name = "none"
    if not is_float(precision):
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
    if not 0 < cfg.observer.percentile <= 100:
        raise ConfigError(f"observer.percentile={cfg.observer.percentile} must be in (0, 100]")
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
        schema = GROUP_SCHEMAS.get(key)
        if cfg.task == key and (cfg.get(key) is None or schema is None):
            raise ConfigError(f"task={key} needs the {key} group (conf/{key}/default.yaml)")
        if schema is not None and cfg.get(key) is not None:
            try:
                OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), cfg[key]))
            except (ValueError, KeyError) as exc:
                raise ConfigError(f"{key}: {exc}") from exc


def hashed_point(cfg: DictConfig) -> dict[str, Any]:
    """The part of a validated config that determines a run's results (input of the hash).

    Paths, job behaviour, reporting and the experiment name are left out (they do not change
    what is computed); so are the quantization groups for floating-point precisions, whose
    runs do not depend on them, and the other tasks' groups.
    """
    keys = ["task", "seed", "model", "data", "precision", "inference", "evaluation", "quant"]
    if not is_float(cfg.precision.name):
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
    ("model", "checkpoint_name", "checkpoint_final.pth"),
    ("inference", "mirroring", "auto"),
)
# Permissions and outputs that leave every value unchanged.
_NOT_HASHED = {"evaluation": ("allow_training_cases", "save_predictions")}


def run_name(cfg: DictConfig, config_hash: str) -> str:
    """Readable run id: ``[task-]model-precision[-granularity-observer-algorithm-nN]-hash10``."""
    parts = [] if cfg.task == "evaluate" else [cfg.task]
    parts += [cfg.model.name, cfg.precision.name]
    if not is_float(cfg.precision.name):
        parts += [
            cfg.granularity.name,
            cfg.observer.name,
            cfg.algorithm.name,
            f"n{cfg.calibration.n}",
        ]
    return "-".join(parts + [config_hash[:10]])
