"""The schemas in Hydra's ConfigStore, the sweep folder names, and the config error type.

Every option file of a group extends its schema explicitly through its defaults list
(``- /schema/precision@_here_``), and the primary config extends the ``Config`` schema, so an
unknown key or a wrong type fails at compose time with the key's full name. Schemas live in the
``schema`` group (``/schema/<group>``) rather than beside the options, so that ``glob(*)`` sweeps
and ``--help`` list only real options.
"""

from __future__ import annotations

import hashlib
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, ListConfig, OmegaConf

from benchmark.schema import GROUP_SCHEMAS, Config

__all__ = ["ConfigError", "register_configs", "schema_node", "sweep_subdir"]


class ConfigError(ValueError):
    """A composed config that cannot be run; the message names the key(s) and what to do."""


def _writable(node: Any) -> Any:
    """Clear the read-only flags OmegaConf sets from frozen dataclasses, so that Hydra can merge
    option files and overrides into a schema; the types stay checked, and ``to_object`` still
    gives frozen instances."""
    node._set_flag("readonly", None)
    if isinstance(node, DictConfig) and not node._is_missing() and not node._is_none():
        for key in node.keys():
            _writable(node._get_node(key))
    elif isinstance(node, ListConfig) and not node._is_missing() and not node._is_none():
        for index in range(len(node)):
            _writable(node._get_node(index))
    return node


def schema_node(cls: type) -> DictConfig:
    """The structured config of a schema class, open for merging (see :func:`_writable`)."""
    return _writable(OmegaConf.structured(cls))


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
    store.store(name="medqbench_schema", node=schema_node(Config))
    for group, schema in GROUP_SCHEMAS.items():
        store.store(group="schema", name=group, node=schema_node(schema))


register_configs()
