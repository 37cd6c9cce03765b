"""Checkpoint loading for the registry's networks: nnU-Net, STU-Net, MONAI, MedFormer, plain state dicts.

Every file is read with ``torch.load(..., weights_only=True)``: checkpoints come from the internet and
must not run code. Training frameworks wrap the weights differently, so a checkpoint is first reduced
to a flat ``{name: tensor}`` state dict:

========================  ==========================================================================
format                    layout
========================  ==========================================================================
``nnunet``                trained-model folder (``plans.json``, ``dataset.json``,
                          ``fold_X/checkpoint_final.pth``) or that ``.pth``; weights under
                          ``network_weights``
``stunet``                official STU-Net checkpoint: ``state_dict`` (nnU-Net v1) or
                          ``network_weights`` (nnU-Net v2)
``monai``                 a state dict, possibly under ``state_dict``/``model``/``network``
``monai_bundle``          bundle folder with ``configs/`` and ``models/model.pt``
``medformer``             a state dict, possibly ``module.``-prefixed (DataParallel)
``state_dict``            a plain state dict (the shipped baselines)
``auto``                  decided from the folder content or the wrapping keys
========================  ==========================================================================

Prefixes added by wrappers (``module.`` from DataParallel/DDP, ``_orig_mod.`` from ``torch.compile``)
are stripped when every key carries them.
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from benchmark.models.errors import CheckpointError, CheckpointMismatchError
from benchmark.models.registry import CHECKPOINT_FORMATS

__all__ = [
    "CHECKPOINT_FORMATS",
    "build_from_nnunet_folder",
    "load_state_dict_checked",
    "load_weights",
    "read_state_dict",
    "resolve_checkpoint_path",
    "shipped_weights_path",
]

# Keys under which frameworks nest the weights, tried in this order.
_WRAPPER_KEYS: tuple[str, ...] = (
    "network_weights",
    "state_dict",
    "model_state_dict",
    "model",
    "network",
    "net",
)
_STRIPPED_PREFIXES: tuple[str, ...] = ("module.", "_orig_mod.")
_SHOW = 10  # how many names of each kind a mismatch error lists


def shipped_weights_path(name: str) -> Path:
    """Return ``benchmark/models/weights/<name>.pt``, the shipped baseline of model ``name``."""
    return Path(__file__).resolve().parent / "weights" / f"{name}.pt"


def _numpy_safe_globals() -> list[Any]:
    # nnU-Net and STU-Net checkpoints log numpy scalars (losses, Dice) next to the weights; these
    # reconstructors only rebuild plain numbers and dtypes, so allowing them keeps weights_only safe.
    core = getattr(np, "_core", None) or np.core
    found: list[Any] = [core.multiarray.scalar, core.multiarray._reconstruct, np.dtype, np.ndarray]
    found += [getattr(np.dtypes, n) for n in dir(np.dtypes) if n.endswith("DType")]
    return found


def _torch_load(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        try:
            with torch.serialization.safe_globals(_numpy_safe_globals()):
                return torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as err:
            raise CheckpointError(
                f"{path}: refuses to load with weights_only=True (it pickles code objects): {err}"
            ) from err
    except (OSError, RuntimeError, EOFError) as err:
        raise CheckpointError(f"{path}: cannot read checkpoint: {err}") from err


def _nnunet_checkpoint_file(folder: Path, fold: int | str | None = None) -> Path:
    if fold is not None:
        candidates = [folder / f"fold_{fold}" / "checkpoint_final.pth"]
    else:
        candidates = sorted(folder.glob("fold_*/checkpoint_final.pth"))
        if not candidates:
            candidates = sorted(folder.glob("fold_*/checkpoint_best.pth"))
    if len(candidates) > 1:
        raise CheckpointError(
            f"{folder}: several folds {[c.parent.name for c in candidates]}; point the checkpoint at "
            "one file, e.g. fold_0/checkpoint_final.pth."
        )
    if not candidates or not candidates[0].is_file():
        raise CheckpointError(
            f"{folder}: no fold_X/checkpoint_final.pth (nnU-Net trained-model folder)."
        )
    return candidates[0]


def resolve_checkpoint_path(path: str | Path, fmt: str = "auto") -> tuple[Path, str]:
    """Find the weight file behind ``path`` and decide its format.

    Args:
        path: a checkpoint file, an nnU-Net trained-model folder or a MONAI bundle folder.
        fmt: one of :data:`CHECKPOINT_FORMATS`.

    Returns:
        ``(file, format)`` where ``format`` is ``auto`` only for a file whose wrapping decides it.

    Raises:
        CheckpointError: missing path, unknown format, or a folder of neither known layout.
    """
    if fmt not in CHECKPOINT_FORMATS:
        raise CheckpointError(
            f"checkpoint_format={fmt!r} is not one of {list(CHECKPOINT_FORMATS)}."
        )
    path = Path(path).expanduser()
    if not path.exists():
        raise CheckpointError(f"Checkpoint {path} does not exist.")
    if path.is_file():
        return path, fmt
    if fmt in ("auto", "nnunet") and (path / "plans.json").is_file():
        return _nnunet_checkpoint_file(path), "nnunet"
    if fmt in ("auto", "monai_bundle") and (path / "models" / "model.pt").is_file():
        return path / "models" / "model.pt", "monai_bundle"
    raise CheckpointError(
        f"{path}: a folder checkpoint must be an nnU-Net trained-model folder (plans.json + "
        f"fold_X/checkpoint_final.pth) or a MONAI bundle (models/model.pt); format {fmt!r}."
    )


def _strip_prefixes(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    changed = True
    while changed and state:
        changed = False
        for prefix in _STRIPPED_PREFIXES:
            if all(k.startswith(prefix) for k in state):
                state = {k[len(prefix) :]: v for k, v in state.items()}
                changed = True
    return state


def _unwrap(obj: Any, source: Path) -> dict[str, torch.Tensor]:
    for _ in range(3):  # e.g. {"state_dict": {"model": {...}}}: nesting is never deeper in practice
        if (
            isinstance(obj, Mapping)
            and obj
            and all(isinstance(v, torch.Tensor) for v in obj.values())
        ):
            return _strip_prefixes(dict(obj))
        if not isinstance(obj, Mapping):
            break
        key = next((k for k in _WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
        if key is None:
            break
        obj = obj[key]
    keys = sorted(obj)[:_SHOW] if isinstance(obj, Mapping) else type(obj).__name__
    raise CheckpointError(
        f"{source}: no state dict found; expected tensors or one of the keys {list(_WRAPPER_KEYS)}, "
        f"got {keys}."
    )


def read_state_dict(path: str | Path, fmt: str = "auto") -> dict[str, torch.Tensor]:
    """Read a checkpoint of any supported format and return its flat state dict.

    Args:
        path: file or folder (see the module table).
        fmt: one of :data:`CHECKPOINT_FORMATS`.

    Returns:
        ``{parameter_name: tensor}`` on the CPU, wrapper prefixes removed.

    Raises:
        CheckpointError: missing or unreadable file, or no state dict inside.
    """
    file, _ = resolve_checkpoint_path(path, fmt)
    return _unwrap(_torch_load(file), file)


def load_state_dict_checked(
    model: nn.Module, state: Mapping[str, torch.Tensor], source: str
) -> nn.Module:
    """Load ``state`` into ``model`` strictly, or raise naming every kind of mismatch.

    Args:
        model: the network.
        state: a flat state dict.
        source: where ``state`` came from (a path), for the error message.

    Returns:
        ``model`` with the weights loaded (in place).

    Raises:
        CheckpointMismatchError: with the counts and the first names of missing keys, unexpected keys
            and shape mismatches (``key: checkpoint shape vs network shape``).
    """
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [
        (k, tuple(state[k].shape), tuple(own[k].shape))
        for k in own
        if k in state and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing key(s) (first {_SHOW}: {missing[:_SHOW]})")
        if unexpected:
            parts.append(
                f"{len(unexpected)} unexpected key(s) (first {_SHOW}: {unexpected[:_SHOW]})"
            )
        if mismatched:
            shown = [f"{k}: checkpoint {a} vs network {b}" for k, a, b in mismatched[:_SHOW]]
            parts.append(f"{len(mismatched)} shape mismatch(es) (first {_SHOW}: {shown})")
        raise CheckpointMismatchError(
            f"Checkpoint {source} does not fit {type(model).__name__}: "
            + "; ".join(parts)
            + ". Check that the model config (net settings, in_channels, num_classes) matches the "
            "checkpoint.",
            missing,
            unexpected,
            mismatched,
        )
    on_meta = any(t.is_meta for t in own.values())
    model.load_state_dict(state, strict=True, assign=on_meta)
    return model


def load_weights(model: nn.Module, model_cfg: Mapping[str, Any]) -> nn.Module:
    """Load the weights a model config names into ``model``.

    Args:
        model: the network built by :func:`benchmark.models.build_model` from ``model_cfg``.
        model_cfg: model config; ``checkpoint`` is null (keep the initialisation), ``shipped``
            (``benchmark/models/weights/<name>.pt``) or a path; ``checkpoint_format`` picks the reader.

    Returns:
        ``model`` with the weights loaded (in place; the same object).

    Raises:
        CheckpointError: missing or unreadable checkpoint; for ``shipped``, a hint how to train it.
        CheckpointMismatchError: the weights do not fit the network.
    """
    checkpoint = model_cfg.get("checkpoint")
    if checkpoint is None:
        return model
    fmt = model_cfg.get("checkpoint_format", "auto")
    if checkpoint == "shipped":
        path = shipped_weights_path(str(model_cfg["name"]))
        if not path.is_file():
            raise CheckpointError(
                f"Model {model_cfg['name']!r} has checkpoint: shipped but {path} does not exist; train "
                f"it with `python -m benchmark.train model={model_cfg['name']}` or set checkpoint: null."
            )
    else:
        path = Path(str(checkpoint))
    return load_state_dict_checked(model, read_state_dict(path, fmt), str(path))


def _dataset_channels_and_classes(dataset_json: Mapping[str, Any], source: Path) -> tuple[int, int]:
    channels = dataset_json.get("channel_names", dataset_json.get("modality"))
    labels = dataset_json.get("labels")
    if not isinstance(channels, Mapping) or not isinstance(labels, Mapping):
        raise CheckpointError(
            f"{source}: needs 'channel_names' (or 'modality') and 'labels' mappings."
        )
    # Region-based training (BraTS-style) has one sigmoid output per region, no background output.
    regions = any(isinstance(v, (list, tuple)) for v in labels.values())
    return len(channels), len(labels) - 1 if regions else len(labels)


def build_from_nnunet_folder(
    folder: str | Path,
    fold: int | str | None = None,
    configuration: str | None = None,
    device: str | torch.device = "cpu",
) -> nn.Module:
    """Build and load the network of an nnU-Net v2 trained-model folder.

    Args:
        folder: ``<Dataset>/<Trainer>__<Plans>__<configuration>`` with ``plans.json``,
            ``dataset.json`` and ``fold_X/checkpoint_final.pth``.
        fold: which fold; default the only one present.
        configuration: plans configuration; default the checkpoint's ``init_args``, else the folder
            name's last ``__`` part.
        device: where the network is built.

    Returns:
        The network with the trained weights, deep supervision off, in eval mode.

    Raises:
        CheckpointError: missing files or several folds without ``fold``.
        CheckpointMismatchError: weights that do not fit the plans.
    """
    from benchmark.models.nnunet import build_nnunet_from_plans

    folder = Path(folder).expanduser()
    for required in ("plans.json", "dataset.json"):
        if not (folder / required).is_file():
            raise CheckpointError(f"{folder}: missing {required} (nnU-Net trained-model folder).")
    file = _nnunet_checkpoint_file(folder, fold)
    raw = _torch_load(file)
    if configuration is None:
        init_args = raw.get("init_args", {}) if isinstance(raw, Mapping) else {}
        configuration = init_args.get("configuration") or folder.name.split("__")[-1]
    plans = json.loads((folder / "plans.json").read_text())
    dataset_json = json.loads((folder / "dataset.json").read_text())
    in_channels, num_classes = _dataset_channels_and_classes(dataset_json, folder / "dataset.json")
    with torch.device(device):
        model = build_nnunet_from_plans(plans, configuration, in_channels, num_classes)
    return load_state_dict_checked(model, _unwrap(raw, file), str(file)).eval()
