"""Validate every point of a sweep before its first job starts.

Hydra's sweeper composes each job before launching it, which catches unknown options, unknown
keys and wrong types, but not the cross-field rules of :func:`benchmark.config.validate`
(``granularity=adaptive`` with ``precision=fp16`` outside the float collapse, a missing
checkpoint of the BTCV preset, calibrating on the test split, ...). Without this check such a
point would fail only when its turn came, after the points before it had run.

Each point's ROI (``inference.roi_size``, else ``model.patch_size``) is also checked against
the network's total stride (:mod:`benchmark.models.stride`), which would otherwise fail deep
inside the network's ``forward``; a single run gets the same checks (:func:`check_point`).
"""

from __future__ import annotations

import itertools

from hydra import compose
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from benchmark.config import ConfigError, build_point
from benchmark.models.errors import ModelConfigError
from benchmark.models.stride import input_grid, size_problem
from benchmark.points.sources import folder_model_kind
from benchmark.schema import RunPoint

__all__ = ["SweepError", "check_input_size", "check_point", "check_sweep", "sweep_jobs"]


class SweepError(ValueError):
    """Points of a sweep that cannot run; the message names each point and its problem."""


def sweep_jobs(config: DictConfig) -> list[list[str]]:
    """Each job's overrides, as Hydra's basic sweeper expands them.

    The preset's ``hydra.sweeper.params`` come first and the command line's overrides after
    them, as the basic sweeper orders them; each sweep override expands through Hydra's public
    ``Override.sweep_string_iterator`` and the jobs are their cross product in that order, so
    the checked points are the launched points.
    """
    params = OmegaConf.select(config, "hydra.sweeper.params") or {}
    arguments = [f"{key}={value}" for key, value in params.items()]
    arguments += list(OmegaConf.to_container(config.hydra.overrides.task, resolve=False))
    parser = OverridesParser.create(config_loader=GlobalHydra.instance().config_loader())
    axes: dict[str, list[str]] = {}  # a key given again (the command line) replaces its axis
    for override in parser.parse_overrides(arguments):
        key = override.get_key_element()
        values = (
            list(override.sweep_string_iterator())
            if override.is_sweep_override()
            else [override.get_value_element_as_str()]
        )
        axes[key] = [f"{key}={value}" for value in values]
    return [list(job) for job in itertools.product(*axes.values())]


def check_sweep(config: DictConfig, config_name: str | None) -> int:
    """Compose and validate every job of the sweep; return how many were checked.

    Args:
        config: the sweep's config as Hydra hands it to ``on_multirun_start``.
        config_name: the primary config's name (``config``).

    Raises:
        SweepError: listing every invalid point (its overrides and the error naming the key).
    """
    problems: list[str] = []
    jobs = sweep_jobs(config)
    for overrides in jobs:
        try:
            check_point(compose(config_name=config_name, overrides=overrides), in_sweep=True)
        except (ConfigError, HydraException, OmegaConfBaseException) as exc:
            problems.append(f"  {' '.join(overrides)}\n    -> {_message(exc)}")
    if problems:
        raise SweepError(
            f"{len(problems)} of {len(jobs)} sweep points cannot run; nothing was started:\n"
            + "\n".join(problems)
        )
    return len(jobs)


def check_point(cfg: DictConfig, in_sweep: bool = False) -> RunPoint:
    """Build one point (:func:`benchmark.config.build_point`) and check its input size.

    Returns:
        The run point.

    Raises:
        ConfigError: naming the offending key and what to use instead.
    """
    point = build_point(cfg, in_sweep=in_sweep)
    check_input_size(point)
    return point


def check_input_size(point: RunPoint) -> None:
    """Check the ROI the network runs on (sliding window, calibration, export) against its
    total stride, naming both. A checkpoint folder that is the model (nnU-Net results folder,
    MONAI bundle) brings its own network and patch size, so only registry networks are checked.

    Raises:
        ConfigError: the ROI is not a size the network accepts (with one that it does).
    """
    if folder_model_kind(point) is not None:
        return  # the folder's own network and patch size (nnU-Net planned them to fit)
    explicit = point.inference.roi_size is not None
    roi = [int(v) for v in (point.inference.roi_size if explicit else point.model.patch_size)]
    try:
        grid = input_grid(point.model.net, source=f"model {point.model.name!r}")
    except ModelConfigError as exc:
        raise ConfigError(str(exc)) from exc
    problem = None if grid is None else size_problem(roi, grid)
    if problem:
        key = "inference.roi_size" if explicit else "model.patch_size"
        used = "" if explicit else " (the ROI while inference.roi_size is null)"
        raise ConfigError(f"{key}={roi}{used} does not fit model={point.model.name}: it {problem}")


def _message(exc: Exception) -> str:
    """The first line of the error (Hydra appends the option list and search path after it)."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
