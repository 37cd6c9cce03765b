"""A MONAI bundle run as its own ``configs/inference.json`` runs it: network, transforms, inferer.

A bundle (MONAI model zoo layout) is a folder with ``configs/inference.json`` (or a YAML config),
``configs/metadata.json`` and ``models/model.pt``. Its config defines, by MONAI's conventions, the
ids ``network_def`` (the network), ``preprocessing`` (a dictionary transform on ``{"image": file}``),
``inferer`` (e.g. a ``SlidingWindowInferer``) and ``postprocessing`` (a dictionary transform on the
decollated ``{"image", "pred"}`` item, typically ``Activationsd`` -> ``Invertd`` -> ``AsDiscreted``
-> ``SaveImaged``). :class:`MonaiBundle` instantiates exactly those objects with
``monai.bundle.ConfigParser`` and applies them in the order MONAI's ``SupervisedEvaluator`` does,
so that the FP32 prediction is the bundle's own and a fake-quantized copy of the network can be run
through the same preprocessing, inferer and postprocessing.

Security: a bundle config is code. ``_target_`` names any importable callable and ``$`` values are
passed to ``eval()`` (MONAI advisory GHSA-873f-pvrv-4x83), exactly as ``python -m monai.bundle run``
would run them; open only bundles you trust. The weights are read with ``weights_only=True``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.bundle import ConfigParser
from monai.data import MetaTensor
from monai.transforms import (
    Activations,
    Activationsd,
    AsDiscrete,
    AsDiscreted,
    Compose,
    FillHoles,
    FillHolesd,
    KeepLargestConnectedComponent,
    KeepLargestConnectedComponentd,
    LabelFilter,
    LabelFilterd,
    LabelToContour,
    LabelToContourd,
    RemoveSmallObjects,
    RemoveSmallObjectsd,
    SaveImage,
    SaveImaged,
)
from monai.utils import CommonKeys
from torch import nn

from benchmark.models.checkpoints import load_state_dict_checked, read_checkpoint_file
from benchmark.models.errors import CheckpointError, CheckpointMismatchError

__all__ = ["MonaiBundle"]

_REQUIRED_IDS = ("network_def", "preprocessing", "inferer", "postprocessing")
_WEIGHTS_FILE = Path("models") / "model.pt"
_NEEDS = (
    "a MONAI bundle needs configs/inference.json (defining network_def, preprocessing, inferer "
    "and postprocessing) and models/model.pt (the state dict of network_def)"
)
# Postprocessing steps that turn probabilities into labels, edit labels or write files. They are
# dropped so that ``predict`` returns probabilities (the harness discretises, scores calibration
# and writes files itself); every other step (activations, Invertd, ...) runs as configured.
_DROPPED_STEPS: tuple[type, ...] = (
    AsDiscrete,
    AsDiscreted,
    KeepLargestConnectedComponent,
    KeepLargestConnectedComponentd,
    RemoveSmallObjects,
    RemoveSmallObjectsd,
    LabelFilter,
    LabelFilterd,
    FillHoles,
    FillHolesd,
    LabelToContour,
    LabelToContourd,
    SaveImage,
    SaveImaged,
)
_SHOW = 10  # names of each kind a mismatch error lists


class MonaiBundle:
    """A MONAI bundle folder (configs/inference.json + models/model.pt) run as its own config runs it.

    Args:
        folder: the bundle folder.
        device: where the network is built and run (``cpu``, ``cuda``, ``cuda:1``); it also
            replaces the config's ``device``, which bundles use for their inferer and evaluator.
        config_file: the inference config, relative to ``folder``.

    Attributes:
        root: the bundle folder.
        config_file: the inference config read.
        network: ``network_def`` with the weights of ``models/model.pt``, in eval mode.
        labels: ``{channel: name}`` from ``configs/metadata.json``
            (``network_data_format.outputs.pred.channel_def``), else ``None``.

    Raises:
        CheckpointError: missing folder, config or weights; a config id that is missing or does not
            instantiate (the message names the config file and the id).
        CheckpointMismatchError: ``models/model.pt`` does not fit ``network_def``.
    """

    root: Path
    network: nn.Module
    labels: dict[int, str] | None

    def __init__(
        self,
        folder: str | Path,
        device: str = "cpu",
        config_file: str = "configs/inference.json",
    ) -> None:
        self.root = Path(folder).expanduser()
        self.config_file = self.root / config_file
        self.device = torch.device(device)
        self._check_files()
        parser = ConfigParser()
        try:
            parser.read_config(str(self.config_file))
        except Exception as err:  # JSON or YAML syntax, unreadable file
            raise CheckpointError(
                f"{self.config_file}: cannot read the bundle config: {_first_line(err)}"
            ) from err
        missing = [i for i in _REQUIRED_IDS if i not in parser]
        if missing:
            raise CheckpointError(f"{self.config_file}: defines no {missing}; {_NEEDS}.")
        parser["bundle_root"] = str(self.root)
        parser["device"] = f"$torch.device({str(self.device)!r})"
        self._parser = parser
        network = self._parsed("network_def")
        if not isinstance(network, nn.Module):
            raise CheckpointError(
                f"{self.config_file}: network_def builds a {type(network).__name__}, not a torch "
                "nn.Module."
            )
        self.network = _load_checked(network, self.root / _WEIGHTS_FILE).to(self.device).eval()
        self._preprocessing = self._parsed("preprocessing")
        self._inferer = self._parsed("inferer")
        self._postprocessing = _probability_steps(self._parsed("postprocessing"))
        self.labels = _read_labels(self.root / "configs" / "metadata.json")

    def __repr__(self) -> str:
        return (
            f"MonaiBundle(root={str(self.root)!r}, network={type(self.network).__name__}, "
            f"labels={self.labels})"
        )

    def _check_files(self) -> None:
        if not self.root.is_dir():
            raise CheckpointError(f"{self.root}: no such bundle folder; {_NEEDS}.")
        if not self.config_file.is_file():
            others = sorted(p.name for p in (self.root / "configs").glob("inference.*"))
            hint = (
                f" Found configs/{others[0]}: pass config_file='configs/{others[0]}'."
                if others
                else ""
            )
            raise CheckpointError(f"{self.config_file}: missing; {_NEEDS}.{hint}")
        if not (self.root / _WEIGHTS_FILE).is_file():
            raise CheckpointError(f"{self.root / _WEIGHTS_FILE}: missing; {_NEEDS}.")

    def _parsed(self, item_id: str) -> Any:
        try:
            return self._parser.get_parsed_content(item_id)
        except Exception as err:  # MONAI wraps whatever the config's own code raises
            raise CheckpointError(
                f"{self.config_file}: cannot build {item_id!r}: {_first_line(err)}"
            ) from err

    @property
    def patch_size(self) -> list[int] | None:
        """The inferer's window size (``roi_size`` of a sliding-window inferer), else ``None``."""
        roi = getattr(self._inferer, "roi_size", None)
        return [int(v) for v in roi] if roi is not None else None

    def preprocess(self, image_files: Sequence[str | Path] | str | Path) -> Any:
        """Run the bundle's ``preprocessing`` on ``{"image": file}`` (several files: channels).

        Returns:
            The transformed dictionary; ``item["image"]`` is a ``MetaTensor`` whose
            ``applied_operations`` let ``Invertd`` map predictions back to the original grid.
        """
        if isinstance(image_files, (str, Path)):  # one file, not a sequence of characters
            image_files = [image_files]
        files = [str(f) for f in image_files]
        if not files:
            raise ValueError("MonaiBundle.preprocess: no image files given.")
        return self._preprocessing({CommonKeys.IMAGE: files[0] if len(files) == 1 else files})

    def network_input(self, item: Mapping[str, Any]) -> torch.Tensor:
        """The ``[C, *spatial]`` float tensor the bundle's inferer receives for ``item``.

        The spatial axes are the bundle's own (MONAI's ``(x, y, z)`` of the preprocessed grid, or
        whatever the bundle's transforms make of them), since that is what ``network`` was trained on;
        use it unchanged for calibration inputs.
        """
        image = item[CommonKeys.IMAGE]
        image = image.as_tensor() if isinstance(image, MetaTensor) else torch.as_tensor(image)
        return image.float()

    def predict(self, network: nn.Module, item: Mapping[str, Any]) -> torch.Tensor:
        """Class probabilities of ``network`` on ``item``, on the original image grid.

        The steps are those of the bundle's own evaluation: ``inferer(image[None], network)``, then
        ``postprocessing`` on the decollated ``{"image", "pred"}`` item without the steps that
        discretise, edit labels or save (``AsDiscrete(d)``, ``KeepLargestConnectedComponent(d)``,
        ``RemoveSmallObjects(d)``, ``LabelFilter(d)``, ``FillHoles(d)``, ``LabelToContour(d)``,
        ``SaveImage(d)``): the harness needs probabilities for its calibration metrics and does its
        own argmax and file writing. ``argmax`` commutes with the kept steps (softmax, and
        ``Invertd`` with nearest interpolation), so the labels equal the bundle's own except where a
        dropped step edits labels (e.g. connected-component filtering) or ``Invertd`` interpolates
        probabilities before an argmax that the bundle took first. A postprocessing without an
        activation gets a softmax over channels. Autocast (the evaluator's ``amp``) is not used: a
        quantized network must run in float32.

        Args:
            network: ``self.network`` or a (fake-quantized) copy of it; inputs go to its device.
            item: a dictionary from :meth:`preprocess`.

        Returns:
            ``[K, D, H, W]`` float32 on the CPU, axes ``(k, j, i)`` of the image file (the order of
            the harness's label arrays).

        Raises:
            CheckpointError: the postprocessing does not return to the original image grid.
        """
        param = next(network.parameters(), None)
        device = param.device if param is not None else self.device
        with torch.no_grad():
            logits = self._inferer(self.network_input(item)[None].to(device), network)
            if not isinstance(logits, torch.Tensor):
                raise CheckpointError(
                    f"{self.config_file}: the inferer returned {type(logits).__name__}, expected one "
                    "tensor of logits."
                )
            data = dict(item)
            data[CommonKeys.PRED] = logits[0]
            for step in self._postprocessing:
                data = step(data)
        probs = data[CommonKeys.PRED]
        probs = probs.as_tensor() if isinstance(probs, MetaTensor) else torch.as_tensor(probs)
        expected = _original_shape(item)
        if probs.ndim != 4 or (expected is not None and tuple(probs.shape[1:]) != expected):
            raise CheckpointError(
                f"{self.config_file}: postprocessing returned {tuple(probs.shape)}, expected "
                f"[K, {', '.join(map(str, expected or ('?',) * 3))}] (the original image grid); "
                "it needs an Invertd of the preprocessing on 'pred'."
            )
        return probs.detach().float().cpu().permute(0, 3, 2, 1).contiguous()


def _first_line(err: BaseException) -> str:
    """``Type: first line`` of the innermost cause (MONAI chains a generic 'Failed to ...' on top)."""
    while err.__cause__ is not None:
        err = err.__cause__
    return f"{type(err).__name__}: {(str(err).strip().splitlines() or [''])[0]}"


def _probability_steps(postprocessing: Any) -> list[Callable[[dict], dict]]:
    if isinstance(postprocessing, Compose):
        steps = list(postprocessing.flatten().transforms)
    elif callable(postprocessing):
        steps = [postprocessing]
    else:
        steps = list(postprocessing)
    kept = [s for s in steps if not isinstance(s, _DROPPED_STEPS)]
    if not any(isinstance(s, (Activations, Activationsd)) for s in kept):
        kept.insert(0, Activationsd(keys=CommonKeys.PRED, softmax=True))
    return kept


def _original_shape(item: Mapping[str, Any]) -> tuple[int, ...] | None:
    image = item.get(CommonKeys.IMAGE)
    shape = image.meta.get("spatial_shape") if isinstance(image, MetaTensor) else None
    return None if shape is None else tuple(int(s) for s in np.asarray(shape).reshape(-1))


def _load_checked(network: nn.Module, path: Path) -> nn.Module:
    """Load ``models/model.pt`` (a state dict, or MONAI's ``CheckpointLoader`` ``{"model": ...}``)."""
    state = read_checkpoint_file(path)
    if isinstance(state, Mapping) and isinstance(state.get("model"), Mapping):
        state = state["model"]
    if not isinstance(state, Mapping) or not all(
        isinstance(v, torch.Tensor) for v in state.values()
    ):
        found = sorted(state)[:_SHOW] if isinstance(state, Mapping) else type(state).__name__
        raise CheckpointError(
            f"{path}: expected a state dict (or {{'model': state dict}}), got {found}; {_NEEDS}."
        )
    try:
        return load_state_dict_checked(network, state, str(path))
    except CheckpointMismatchError as err:
        raise CheckpointMismatchError(
            f"{err} In a bundle, models/model.pt must be the state dict of the network_def that "
            "configs/inference.json defines (check its channels, classes and sizes).",
            err.missing,
            err.unexpected,
            err.mismatched,
        ) from err


def _read_labels(path: Path) -> dict[int, str] | None:
    if not path.is_file():
        return None
    try:
        meta = json.loads(path.read_text())
    except ValueError as err:
        raise CheckpointError(f"{path}: not valid JSON ({err}); fix or remove it.") from err
    try:
        channels = meta["network_data_format"]["outputs"][CommonKeys.PRED]["channel_def"]
        return {int(k): str(v) for k, v in channels.items()}
    except (ValueError, KeyError, TypeError, AttributeError):
        return None  # the metadata does not name the output channels
