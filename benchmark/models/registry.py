"""Model registry: one YAML per network in ``conf/model/``, built through its ``_target_``.

A model config is a plain mapping (the content of ``conf/model/<name>.yaml``, or the ``model`` node of
a composed Hydra config) with these keys:

- ``name``: equal to the file stem (``tiny_nnunet``).
- ``display_name``: the name used in published tables (``"nnU-Net"``, ``"STU-Net-B"``).
- ``framework``: ``nnUNet`` | ``MONAI`` | ``MedFormer`` (whose code the network follows).
- ``family``: ``cnn`` | ``hybrid`` | ``transformer``.
- ``published_params_m``: parameter count in millions reported by the authors, or null.
- ``patch_size``: ``[D, H, W]`` training/inference ROI in voxels.
- ``net``: ``{_target_: dotted.path, **kwargs}``; ``in_channels`` and ``num_classes`` are added at
  build time because they belong to the dataset, not to the architecture.
- ``checkpoint``: null | a path | ``shipped``; ``checkpoint_format``: see
  :data:`CHECKPOINT_FORMATS`.
- ``fold``, ``checkpoint_name``: which checkpoint of an nnU-Net results folder (optional).

The ``_target_`` is imported with :mod:`importlib` rather than ``hydra.utils.instantiate`` because the
model layer must not depend on Hydra (DESIGN.md layering); the dict stays Hydra-compatible.
"""

from __future__ import annotations

import contextlib
import difflib
import importlib
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from benchmark.models.errors import ModelConfigError, UnknownModelError

__all__ = [
    "CONFIG_KEYS",
    "CHECKPOINT_FORMATS",
    "FAMILIES",
    "FRAMEWORKS",
    "available_models",
    "build_model",
    "count_parameters",
    "load_model_config",
    "model_config_dir",
    "validate_model_config",
]

CONFIG_KEYS: tuple[str, ...] = (
    "name",
    "display_name",
    "framework",
    "family",
    "published_params_m",
    "patch_size",
    "net",
    "checkpoint",
    "checkpoint_format",
)
#: Keys a model config may add (the run config fills them for every model).
OPTIONAL_CONFIG_KEYS: tuple[str, ...] = ("fold", "checkpoint_name")
FRAMEWORKS: tuple[str, ...] = ("nnUNet", "MONAI", "MedFormer")
FAMILIES: tuple[str, ...] = ("cnn", "hybrid", "transformer")
#: Checkpoint formats a model config may name (loaders in :mod:`benchmark.models.checkpoints`).
CHECKPOINT_FORMATS: tuple[str, ...] = (
    "auto",
    "nnunet",
    "stunet",
    "monai",
    "monai_bundle",
    "medformer",
    "state_dict",
)


#: Environment variable naming the folder of model descriptions when the caller names none.
MODEL_DIR_ENV = "MEDQBENCH_MODEL_DIR"


class ModelDescription(dict):
    """A model description: a plain ``dict`` whose keys also read and write as attributes."""

    def __getattr__(self, key: str) -> Any:
        try:
            return self[key]
        except KeyError as exc:
            raise AttributeError(key) from exc

    def __setattr__(self, key: str, value: Any) -> None:
        self[key] = value


def _described(value: Any) -> Any:
    """Nested mappings of a description as :class:`ModelDescription` (``cfg.net.widths``)."""
    if isinstance(value, dict):
        return ModelDescription({k: _described(v) for k, v in value.items()})
    if isinstance(value, list):
        return [_described(v) for v in value]
    return value


def model_config_dir(conf_dir: str | Path | None = None) -> Path:
    """The folder of model descriptions: ``conf_dir`` from the caller, else
    ``$MEDQBENCH_MODEL_DIR``. The registry never looks for a ``conf/`` folder itself: the entry
    point hands it the composed model config, and other callers name the folder.

    Raises:
        ModelConfigError: neither is given.
    """
    if conf_dir is not None:
        return Path(conf_dir)
    if os.environ.get(MODEL_DIR_ENV):
        return Path(os.environ[MODEL_DIR_ENV])
    raise ModelConfigError(
        f"no folder of model descriptions: pass conf_dir= (e.g. conf/model of the repository) "
        f"or set {MODEL_DIR_ENV}"
    )


def available_models(conf_dir: str | Path | None = None) -> list[str]:
    """List the registered model names (YAML stems in ``conf/model``), sorted.

    Args:
        conf_dir: folder holding the model YAMLs; default :func:`model_config_dir`.

    Returns:
        Sorted model names, e.g. ``["medformer", "nnunet", ..., "unetr"]``.
    """
    return sorted(p.stem for p in model_config_dir(conf_dir).glob("*.yaml"))


def load_model_config(name: str, conf_dir: str | Path | None = None) -> ModelDescription:
    """Read and validate ``conf/model/<name>.yaml``.

    Args:
        name: model name, the YAML stem (``"tiny_nnunet"``).
        conf_dir: folder holding the model YAMLs; default :func:`model_config_dir`.

    Returns:
        The validated config.

    Raises:
        UnknownModelError: no such YAML; the message lists the available names and the closest one.
        ModelConfigError: the YAML has a missing, unknown or ill-typed key.
    """
    folder = model_config_dir(conf_dir)
    path = folder / f"{name}.yaml"
    if not path.is_file():
        names = available_models(folder)
        close = difflib.get_close_matches(name, names, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise UnknownModelError(
            f"Unknown model {name!r} (no {path}).{hint} Available: {', '.join(names) or 'none'}."
        )
    loaded = yaml.safe_load(path.read_text())
    if not isinstance(loaded, dict):
        raise ModelConfigError(f"{path}: expected a mapping at the top level.")
    loaded.pop("defaults", None)  # the Hydra defaults list that attaches the schema
    cfg = _described(loaded)
    validate_model_config(cfg, source=str(path))
    if cfg.name != name:
        raise ModelConfigError(
            f"{path}: key 'name' is {cfg.name!r} but must equal the file stem {name!r}."
        )
    return cfg


def validate_model_config(cfg: Mapping[str, Any], source: str = "model config") -> None:
    """Check that ``cfg`` has :data:`CONFIG_KEYS` (and at most :data:`OPTIONAL_CONFIG_KEYS`
    beside them) with values of the right kind.

    Args:
        cfg: a model config mapping.
        source: where ``cfg`` came from (a path), used in error messages.

    Raises:
        ModelConfigError: naming ``source``, the key and the allowed values.
    """
    keys = set(cfg.keys())
    unknown = sorted(keys - set(CONFIG_KEYS) - set(OPTIONAL_CONFIG_KEYS))
    missing = [k for k in CONFIG_KEYS if k not in keys]
    if unknown:
        raise ModelConfigError(
            f"{source}: unknown key(s) {unknown}; allowed keys: {list(CONFIG_KEYS)}."
        )
    if missing:
        raise ModelConfigError(f"{source}: missing key(s) {missing}.")
    for key, allowed in (
        ("framework", FRAMEWORKS),
        ("family", FAMILIES),
        ("checkpoint_format", CHECKPOINT_FORMATS),
    ):
        if cfg[key] not in allowed:
            raise ModelConfigError(f"{source}: {key}={cfg[key]!r} is not one of {list(allowed)}.")
    patch = cfg["patch_size"]
    if (
        not isinstance(patch, Sequence)
        or isinstance(patch, str)
        or len(patch) != 3
        or not all(isinstance(v, int) and v > 0 for v in patch)
    ):
        raise ModelConfigError(
            f"{source}: patch_size={patch!r} must be three positive ints [D, H, W]."
        )
    published = cfg["published_params_m"]
    if published is not None and not isinstance(published, (int, float)):
        raise ModelConfigError(
            f"{source}: published_params_m={published!r} must be a number or null."
        )
    net = cfg["net"]
    if not isinstance(net, Mapping) or not isinstance(net.get("_target_"), str):
        raise ModelConfigError(f"{source}: key 'net' must be a mapping with a '_target_' string.")
    for reserved in ("in_channels", "num_classes"):
        if reserved in net:
            raise ModelConfigError(
                f"{source}: net.{reserved} must not be set; it is passed by build_model from the dataset."
            )


def _import_target(path: str, source: str) -> Any:
    module_name, _, attr = path.rpartition(".")
    if not module_name:
        raise ModelConfigError(
            f"{source}: net._target_={path!r} is not a dotted path 'module.attr'."
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ModelConfigError(
            f"{source}: cannot import module {module_name!r} of net._target_: {err}"
        ) from err
    try:
        return getattr(module, attr)
    except AttributeError as err:
        raise ModelConfigError(
            f"{source}: module {module_name!r} has no attribute {attr!r} (net._target_)."
        ) from err


@contextlib.contextmanager
def _parameters_on_meta() -> Iterator[None]:
    """Move every parameter and buffer to the meta device the moment a module registers it."""
    register_parameter = nn.Module.register_parameter
    register_buffer = nn.Module.register_buffer

    def _param(module: nn.Module, name: str, param: nn.Parameter | None) -> None:
        if param is not None:
            param = nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)
        register_parameter(module, name, param)

    def _buffer(
        module: nn.Module, name: str, tensor: torch.Tensor | None, persistent: bool = True
    ) -> None:
        register_buffer(module, name, None if tensor is None else tensor.to("meta"), persistent)

    nn.Module.register_parameter = _param  # type: ignore[method-assign]
    nn.Module.register_buffer = _buffer  # type: ignore[method-assign]
    try:
        yield
    finally:
        nn.Module.register_parameter = register_parameter  # type: ignore[method-assign]
        nn.Module.register_buffer = register_buffer  # type: ignore[method-assign]


def _as_config(model_cfg: Mapping[str, Any] | str) -> Mapping[str, Any]:
    if isinstance(model_cfg, str):
        return load_model_config(model_cfg)
    return model_cfg


def build_model(
    model_cfg: Mapping[str, Any] | str,
    in_channels: int,
    num_classes: int,
    device: str | torch.device = "cpu",
) -> nn.Module:
    """Build the network described by a model config, without loading weights.

    Args:
        model_cfg: a model config (see module docstring) or a registered model name.
        in_channels: input channels C of ``[B, C, D, H, W]`` (image modalities).
        num_classes: output channels K, background included.
        device: where parameters are allocated; ``"meta"`` allocates nothing, which makes counting
            the parameters of billion-parameter networks instant.

    Returns:
        The network, in training mode (``nn.Module`` default); call ``.eval()`` for inference.

    Raises:
        ModelConfigError: invalid config or a ``_target_`` that cannot be imported or called.
    """
    cfg = _as_config(model_cfg)
    source = f"model {cfg.get('name', '?')!r}"
    validate_model_config(cfg, source=source)
    net = cfg["net"]
    kwargs = dict(net)
    target = _import_target(kwargs.pop("_target_"), source)
    try:
        try:
            with torch.device(device):
                model = target(in_channels=in_channels, num_classes=num_classes, **kwargs)
        except RuntimeError as err:
            # Some constructors compute Python numbers from tensors (MONAI SwinUNETR's drop-path
            # schedule calls .item()), which a meta default device forbids; build on the CPU then,
            # moving each parameter to meta as it is registered so peak memory stays one tensor.
            if torch.device(device).type != "meta" or "meta" not in str(err):
                raise
            with _parameters_on_meta():
                model = target(in_channels=in_channels, num_classes=num_classes, **kwargs)
    except TypeError as err:
        raise ModelConfigError(
            f"{source}: cannot build {target!r} from net={kwargs}: {err}"
        ) from err
    if not isinstance(model, nn.Module):
        raise ModelConfigError(
            f"{source}: net._target_ returned {type(model).__name__}, not an nn.Module."
        )
    return model


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameter elements (works on meta-device models).

    Args:
        model: the network.
        trainable_only: count only parameters with ``requires_grad``.

    Returns:
        The total number of scalars in ``model.parameters()`` (shared parameters counted once).
    """
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
