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

import pickle
import zipfile
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
    "load_state_dict_checked",
    "load_weights",
    "read_checkpoint_file",
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
    # Files pickled under the other numpy major (1.x: numpy.core, 2.x: numpy._core) name them so.
    for fn in (core.multiarray.scalar, core.multiarray._reconstruct):
        found += [(fn, f"numpy.{pkg}.multiarray.{fn.__name__}") for pkg in ("core", "_core")]
    return found


#: What ``torch.save`` writes, for messages about files that are something else.
_TORCH_FORMATS = (
    "a file written by torch.save (a zip archive holding data.pkl, or the legacy pickle format)"
)
# ``torch.save`` (legacy format) pickles this magic number first; ``PROTO`` precedes it.
_LEGACY_MAGIC = b"\x8a\nl\xfc\x9cF\xf9 j\xa8P\x19"


def _content_kind(head: bytes) -> str:
    """A short description of what a file that is not a checkpoint holds."""
    if not head:
        return "it is empty"
    if head.startswith(b"\x1f\x8b"):
        return "it is a gzip file"
    if head.startswith(b"\x89HDF"):
        return "it is an HDF5 file"
    if len(head) > 9 and head[8:10] == b'{"':
        return "it looks like a safetensors file"
    text = head.decode("utf-8", errors="replace").rstrip("\ufffd")  # a cut multi-byte character
    if text and all(c.isprintable() or c in "\t\r\n" for c in text):
        return "it holds text"
    return "its first bytes match no known format"


def _check_torch_file(path: Path) -> None:
    """Refuse, by its first bytes, a file that ``torch.load`` would misread into a riddle."""
    try:
        with path.open("rb") as stream:
            head = stream.read(512)
    except OSError as err:
        raise CheckpointError(f"{path}: cannot read checkpoint: {err}") from err
    if head.startswith(b"PK\x03\x04"):
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except (zipfile.BadZipFile, OSError) as err:
            raise CheckpointError(
                f"{path} is truncated or corrupt: a zip archive whose directory cannot be read "
                f"({err}); expected {_TORCH_FORMATS}; copy or download it again"
            ) from err
        if not any(name.endswith("data.pkl") for name in names):
            raise CheckpointError(
                f"{path} is a zip archive but not a PyTorch checkpoint (no data.pkl among "
                f"{len(names)} entries); expected {_TORCH_FORMATS}"
            )
        return
    legacy = head.startswith(b"\x80") and _LEGACY_MAGIC in head[:32]
    if not legacy and head[257:262] != b"ustar":  # torch < 0.4 wrote tar archives
        raise CheckpointError(
            f"{path} is not a PyTorch checkpoint: {_content_kind(head)}; expected {_TORCH_FORMATS}"
        )


def _unpickler_detail(err: Exception) -> str:
    """The first sentence of what torch's weights-only unpickler objected to."""
    text = str(err).split("WeightsUnpickler error:", 1)[-1]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0].split(". ")[0] if lines else type(err).__name__


def _torch_load(path: Path) -> Any:
    _check_torch_file(path)
    try:
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError:
            with torch.serialization.safe_globals(_numpy_safe_globals()):
                return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        detail = _unpickler_detail(err)
        if detail.startswith(("Unsupported global", "Unsupported class")):
            raise CheckpointError(
                f"{path}: holds Python objects that torch.load(weights_only=True) does not rebuild "
                f"({detail}); only tensors and plain containers are loaded, so that no code in "
                "the file runs: re-save the weights alone, torch.save(model.state_dict(), path)"
            ) from err
        raise CheckpointError(
            f"{path} is truncated or corrupt: torch.load stopped with {detail!r}; expected "
            f"{_TORCH_FORMATS}; copy or download it again"
        ) from err
    except Exception as err:  # torch's readers raise many types on damaged files
        raise CheckpointError(
            f"{path} is truncated or corrupt: torch.load failed with {type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''}; expected {_TORCH_FORMATS}"
        ) from err


def read_checkpoint_file(path: str | Path) -> Any:
    """The content of one checkpoint file, read with ``weights_only=True``.

    Raises:
        CheckpointError: unreadable, or it would need to run code to load.
    """
    return _torch_load(Path(path))


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
