"""Index a dataset folder (nnU-Net raw or Medical Segmentation Decathlon) and check it up front.

Two layouts are read:

* **nnU-Net raw** (``DatasetXXX_Name``): ``dataset.json`` with ``channel_names`` (``{"0": "CT"}``),
  ``labels`` (name -> id, ``{"background": 0, "liver": 1}``), ``numTraining`` and
  ``file_ending``; images ``imagesTr/<case>_0000<ending>`` (one file per channel, ``_0001``...),
  labels ``labelsTr/<case><ending>``; optional ``imagesTs``/``labelsTs`` in the same layout.
  A ``dataset`` key with explicit file lists is honoured through nnunetv2's own helper.
* **MSD** (``TaskXX_Name``, also nnU-Net v1): ``dataset.json`` with ``modality``
  (``{"0": "CT"}``), ``labels`` (id -> name, ``{"0": "background"}``) and ``training``
  (``[{"image": "./imagesTr/x.nii.gz", "label": "./labelsTr/x.nii.gz"}]``). Multi-modal images
  are single 4D files whose last axis is the channel. MSD ``test`` images carry no labels and
  are therefore not indexed.

Header checks (:func:`check_headers`) read only NIfTI headers, so they are cheap enough to run
when a dataset is opened; voxel content is checked when a case is prepared.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np

from benchmark.data.errors import (
    DatasetJsonError,
    DatasetNotFoundError,
    EmptyDatasetError,
    GeometryMismatchError,
    ImageReadError,
    MissingFileError,
)

__all__ = [
    "CaseFiles",
    "CaseHeader",
    "DatasetIndex",
    "check_headers",
    "read_dataset",
    "read_header",
]

# Affines of image and label must agree to this many mm (nnU-Net's integrity check is as strict).
_AFFINE_ATOL_MM = 1e-3


@dataclass(frozen=True)
class CaseFiles:
    """Files of one labelled case: one image path per channel (or one 4D file) and the label."""

    case_id: str
    images: tuple[Path, ...]
    label: Path


@dataclass(frozen=True)
class CaseHeader:
    """Geometry read from a case's NIfTI headers.

    Attributes:
        shape: spatial shape in NIfTI voxel order ``(i, j, k)``.
        affine: ``4 x 4`` voxel-to-world (RAS mm) matrix of the label.
        channels: number of image channels.
    """

    shape: tuple[int, int, int]
    affine: np.ndarray
    channels: int

    @property
    def spacing_mm(self) -> tuple[float, float, float]:
        """Voxel size in ``[D, H, W]`` = ``(k, j, i)`` order, mm."""
        zooms = np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0))
        return (float(zooms[2]), float(zooms[1]), float(zooms[0]))


@dataclass
class DatasetIndex:
    """What a dataset folder holds, as declared by its ``dataset.json`` and found on disk.

    Attributes:
        root: the dataset folder.
        format: ``nnunet_raw`` or ``msd``.
        labels: ``{id: name}`` including ``0`` (background).
        channel_names: one modality name per input channel (``("CT",)``).
        training: labelled training cases by id (``imagesTr``/``labelsTr``).
        test: labelled test cases by id (``imagesTs``/``labelsTs``; empty if absent).
        dataset_json: the parsed ``dataset.json``.
    """

    root: Path
    format: str
    labels: dict[int, str]
    channel_names: tuple[str, ...]
    training: dict[str, CaseFiles]
    test: dict[str, CaseFiles] = field(default_factory=dict)
    dataset_json: dict = field(default_factory=dict)

    def case(self, case_id: str) -> CaseFiles:
        """Files of one case (training or test); raises ``KeyError`` naming known ids."""
        if case_id in self.training:
            return self.training[case_id]
        if case_id in self.test:
            return self.test[case_id]
        known = sorted(self.training) + sorted(self.test)
        raise KeyError(f"case {case_id!r} is not in {self.root}; known cases: {known[:10]}...")


def read_dataset(root: str | Path, fmt: str) -> DatasetIndex:
    """Parse ``dataset.json`` and list the labelled cases of a dataset folder.

    Args:
        root: the folder holding ``dataset.json``.
        fmt: ``nnunet_raw`` or ``msd``.

    Raises:
        DatasetNotFoundError: ``root`` does not exist.
        EmptyDatasetError: ``root`` is empty or declares no training cases.
        DatasetJsonError: ``dataset.json`` is missing, not JSON, or lacks a key.
        MissingFileError: a declared image or label file is absent.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetNotFoundError(f"dataset folder {root} does not exist; check data.root")
    if not any(root.iterdir()):
        raise EmptyDatasetError(
            f"dataset folder {root} is empty; point data.root at a folder holding dataset.json "
            "and imagesTr/labelsTr"
        )
    meta = _load_json(root / "dataset.json")
    if fmt == "msd" or (fmt == "nnunet_raw" and "training" in meta and "channel_names" not in meta):
        index = _read_msd(root, meta)
    elif fmt == "nnunet_raw":
        index = _read_nnunet(root, meta)
    else:
        raise ValueError(f"read_dataset: format {fmt!r} is not 'nnunet_raw' or 'msd'")
    if not index.training:
        raise EmptyDatasetError(f"{root} holds no labelled training cases (imagesTr/labelsTr)")
    return index


def read_header(path: Path) -> nib.Nifti1Image:
    """Open a NIfTI lazily (header only), turning every failure into a named error.

    Beyond what nibabel checks when it parses the header, an uncompressed ``.nii`` shorter than
    its header promises (truncated) and voxels of a type that is no scalar intensity or label
    (RGB, complex) are refused here, before any case is prepared.

    Raises:
        MissingFileError: ``path`` does not exist.
        ImageReadError: the header cannot be parsed, the file is truncated, or its voxel type
            is unsupported.
    """
    if not path.is_file():
        raise MissingFileError(
            f"{path} does not exist; restore it or remove the case from the dataset"
        )
    try:
        with nib.imageglobals.LoggingOutputSuppressor():  # nibabel also logs what it raises
            image = nib.load(str(path))
            dtype = np.dtype(image.get_data_dtype())
    except Exception as exc:  # nibabel, gzip and zlib raise many unrelated types for a broken file
        raise ImageReadError(
            f"cannot read NIfTI header of {path}: {_reason(exc)}; re-export or re-download the file"
        ) from exc
    if dtype.kind not in "biuf":
        raise ImageReadError(
            f"{path} holds voxels of type {dtype} ({dtype.kind!r}), neither an intensity nor a "
            "label type; convert it to an integer or float image"
        )
    _check_length(path, image, dtype)
    return image


def _reason(exc: Exception) -> str:
    """An exception's message on one line (nibabel's span several)."""
    return " ".join(str(exc).split()) or type(exc).__name__


def _check_length(path: Path, image: nib.Nifti1Image, dtype: np.dtype) -> None:
    """Refuse an uncompressed NIfTI shorter than its voxel data's offset plus length."""
    offset = getattr(image.dataobj, "offset", None)  # where nibabel will start reading voxels
    if not path.name.endswith(".nii") or offset is None:
        return
    expected = int(offset) + int(np.prod(image.shape)) * dtype.itemsize
    size = path.stat().st_size
    if size < expected:
        raise ImageReadError(
            f"{path} is truncated: its header promises {expected} bytes ({list(image.shape)} "
            f"voxels of {dtype} from byte {int(offset)}), the file holds {size}; re-export or "
            "re-download it"
        )


def check_headers(case: CaseFiles, n_channels: int) -> CaseHeader:
    """Check that all files of a case exist, parse, and share one voxel grid.

    Raises:
        MissingFileError, ImageReadError: a file is absent or unreadable.
        GeometryMismatchError: shapes, channel count or affines disagree.
    """
    label = read_header(case.label)
    if len(label.shape) != 3 and not (len(label.shape) == 4 and label.shape[3] == 1):
        raise GeometryMismatchError(f"label {case.label} must be 3D, has shape {label.shape}")
    shape = tuple(int(s) for s in label.shape[:3])
    channels = 0
    for path in case.images:
        img = read_header(path)
        channels += img.shape[3] if len(img.shape) == 4 else 1
        if tuple(img.shape[:3]) != shape:
            raise GeometryMismatchError(
                f"case {case.case_id!r}: image {path} has spatial shape {tuple(img.shape[:3])} but "
                f"label {case.label} has {shape}; resample one onto the other's grid"
            )
        if not np.allclose(img.affine, label.affine, atol=_AFFINE_ATOL_MM):
            raise GeometryMismatchError(
                f"case {case.case_id!r}: affine of image {path} differs from label {case.label} "
                f"(max |diff| {np.abs(img.affine - label.affine).max():.4g} mm); they must share "
                "one voxel-to-world map (fix the header of one of them)"
            )
    if channels != n_channels:
        raise GeometryMismatchError(
            f"case {case.case_id!r}: {channels} image channel(s) in {[str(p) for p in case.images]} "
            f"but dataset.json declares {n_channels}"
        )
    return CaseHeader(
        shape=shape, affine=np.asarray(label.affine, dtype=np.float64), channels=channels
    )


def _load_json(path: Path) -> dict:
    if not path.is_file():
        raise DatasetJsonError(
            f"{path} is missing; every dataset folder needs a dataset.json (nnU-Net or MSD layout)"
        )
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DatasetJsonError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(meta, dict):
        raise DatasetJsonError(f"{path} must hold a JSON object, got {type(meta).__name__}")
    return meta


def _require(meta: dict, key: str, root: Path) -> object:
    if key not in meta:
        raise DatasetJsonError(f"{root / 'dataset.json'} lacks the key {key!r}; add it")
    return meta[key]


def _channel_names(raw: object, key: str, root: Path) -> tuple[str, ...]:
    if not isinstance(raw, dict) or not raw:
        raise DatasetJsonError(f"{root / 'dataset.json'}: {key!r} must be a non-empty object")
    try:
        order = sorted(raw, key=int)
    except ValueError as exc:
        raise DatasetJsonError(f"{root / 'dataset.json'}: {key!r} keys must be integers") from exc
    return tuple(str(raw[k]) for k in order)


def _checked_labels(labels: dict[int, str], root: Path) -> dict[int, str]:
    if 0 not in labels:
        raise DatasetJsonError(f"{root / 'dataset.json'}: 'labels' must declare background as 0")
    return dict(sorted(labels.items()))


def _read_nnunet(root: Path, meta: dict) -> DatasetIndex:
    names = _channel_names(_require(meta, "channel_names", root), "channel_names", root)
    raw_labels = _require(meta, "labels", root)
    ending = str(_require(meta, "file_ending", root))
    n_training = _require(meta, "numTraining", root)
    if ending not in (".nii.gz", ".nii"):
        raise DatasetJsonError(
            f"{root / 'dataset.json'}: file_ending {ending!r} is not supported; only NIfTI "
            "(.nii.gz / .nii) is read, convert the images (e.g. with SimpleITK)"
        )
    if not isinstance(raw_labels, dict):
        raise DatasetJsonError(f"{root / 'dataset.json'}: 'labels' must map names to ids")
    labels: dict[int, str] = {}
    for name, value in raw_labels.items():
        if not isinstance(value, int) or isinstance(value, bool):
            raise DatasetJsonError(
                f"{root / 'dataset.json'}: label {name!r} has value {value!r}; region-based "
                "(list) labels are not supported, use one integer id per class"
            )
        labels[value] = name
    labels = _checked_labels(labels, root)
    if "dataset" in meta:
        # Explicit file lists: nnunetv2 resolves relative paths and $VARIABLES exactly as it does.
        from nnunetv2.utilities.utils import get_filenames_of_train_images_and_targets

        listed = get_filenames_of_train_images_and_targets(str(root), meta)
        training = {
            cid: CaseFiles(cid, tuple(Path(p) for p in v["images"]), Path(v["label"]))
            for cid, v in sorted(listed.items())
        }
    else:
        training = _scan_split(root, "imagesTr", "labelsTr", ending, len(names), required=True)
    if n_training != len(training):
        raise DatasetJsonError(
            f"{root / 'dataset.json'}: numTraining is {n_training} but {len(training)} cases were "
            f"found in {root / 'imagesTr'}; fix numTraining or the missing files"
        )
    test = _scan_split(root, "imagesTs", "labelsTs", ending, len(names), required=False)
    return DatasetIndex(root, "nnunet_raw", labels, names, training, test, meta)


def _scan_split(
    root: Path, images: str, labels: str, ending: str, n_channels: int, required: bool
) -> dict[str, CaseFiles]:
    """Cases of ``images``/``labels``; unlabelled test images are skipped (cannot be scored)."""
    from nnunetv2.utilities.utils import get_identifiers_from_splitted_dataset_folder

    img_dir, lbl_dir = root / images, root / labels
    if not img_dir.is_dir():
        if required:
            raise EmptyDatasetError(
                f"{img_dir} does not exist; nnU-Net raw datasets need {images}/"
            )
        return {}
    if not lbl_dir.is_dir():
        if required:
            raise MissingFileError(f"{lbl_dir} does not exist; training cases need labels")
        return {}
    cases: dict[str, CaseFiles] = {}
    for cid in get_identifiers_from_splitted_dataset_folder(str(img_dir), ending):
        cid = str(cid)
        channel_files = tuple(img_dir / f"{cid}_{c:04d}{ending}" for c in range(n_channels))
        label = lbl_dir / f"{cid}{ending}"
        if not required and not label.is_file():
            continue
        for path in (*channel_files, label):
            if not path.is_file():
                raise MissingFileError(
                    f"case {cid!r}: {path} is missing (dataset.json declares {n_channels} "
                    f"channel(s), files <case>_0000{ending}...); add it or remove the case"
                )
        cases[cid] = CaseFiles(cid, channel_files, label)
    return cases


def _read_msd(root: Path, meta: dict) -> DatasetIndex:
    names = _channel_names(_require(meta, "modality", root), "modality", root)
    raw_labels = _require(meta, "labels", root)
    if not isinstance(raw_labels, dict):
        raise DatasetJsonError(f"{root / 'dataset.json'}: 'labels' must map ids to names")
    try:
        labels = _checked_labels({int(k): str(v) for k, v in raw_labels.items()}, root)
    except ValueError as exc:
        raise DatasetJsonError(
            f"{root / 'dataset.json'}: MSD 'labels' keys must be integer ids ({exc})"
        ) from exc
    entries = _require(meta, "training", root)
    if not isinstance(entries, list):
        raise DatasetJsonError(f"{root / 'dataset.json'}: 'training' must be a list")
    training: dict[str, CaseFiles] = {}
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or "image" not in entry or "label" not in entry:
            raise DatasetJsonError(
                f"{root / 'dataset.json'}: training[{i}] must be {{'image': ..., 'label': ...}}"
            )
        image, label = root / entry["image"], root / entry["label"]
        cid = _strip_nifti(image.name)
        for path in (image, label):
            if not path.is_file():
                raise MissingFileError(
                    f"{path} (training[{i}] in {root / 'dataset.json'}) does not exist; add it or "
                    "remove the entry"
                )
        training[cid] = CaseFiles(cid, (image,), label)
    if "numTraining" in meta and meta["numTraining"] != len(training):
        raise DatasetJsonError(
            f"{root / 'dataset.json'}: numTraining is {meta['numTraining']} but 'training' lists "
            f"{len(training)} cases"
        )
    return DatasetIndex(root, "msd", labels, names, dict(sorted(training.items())), {}, meta)


def _strip_nifti(name: str) -> str:
    for ending in (".nii.gz", ".nii"):
        if name.endswith(ending):
            return name[: -len(ending)]
    return name
