"""The run config: what only the entry point (:mod:`benchmark.run`) and its preflight touch.

- :mod:`.store`: the schemas (:mod:`benchmark.schema`, values in ``conf/``) in Hydra's
  ConfigStore, sweep folder names, :class:`ConfigError`;
- :mod:`.checks`: :func:`validate`, the cross-field rules a schema cannot express;
- :mod:`.identity`: the hashed part of a config and the readable run name;
- :mod:`.points`: :func:`build_point`, the one conversion to the frozen
  :class:`~benchmark.schema.RunPoint` every task takes.
"""

from __future__ import annotations

from benchmark.config.checks import GRANULARITIES, OBSERVERS, TASKS, validate
from benchmark.config.identity import hashed_point, run_name
from benchmark.config.points import build_point, config_yaml, quant_spec
from benchmark.config.store import ConfigError, register_configs, sweep_subdir
from benchmark.schema import GROUP_SCHEMAS

__all__ = [
    "GRANULARITIES",
    "GROUP_SCHEMAS",
    "OBSERVERS",
    "TASKS",
    "ConfigError",
    "build_point",
    "config_yaml",
    "hashed_point",
    "quant_spec",
    "register_configs",
    "run_name",
    "sweep_subdir",
    "validate",
]
