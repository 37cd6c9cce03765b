"""Write the embedded abdominal CT phantom as an nnU-Net raw dataset (``Dataset900_Phantom``).

The same reader then serves the phantom and real data. Generation is deterministic (case ``i``
depends only on ``seed``, ``i`` and ``inplane_voxels``, and NIfTI files are gzipped without a
timestamp, so the same arguments give identical bytes) and atomic (see
:func:`benchmark.data.builder.build_raw_dataset`).

A ``data.root`` given for a generated dataset is checked first (:func:`check_generation_root`):
synthetic cases are written only into a folder that exists and is empty or holds only data
made by these generators, never into or beside a real dataset, never into a new path.
"""

from __future__ import annotations

import logging
import re
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from benchmark.data.builder import build_raw_dataset, write_nifti
from benchmark.data.cache import cache_root
from benchmark.data.errors import DataConfigError
from benchmark.data.integrity import dataset_layout
from benchmark.data.phantom_anatomy import PHANTOM_LABELS, synthesize_case

if TYPE_CHECKING:
    from benchmark.data.config import DataConfig

__all__ = [
    "GENERATOR_VERSION",
    "PHANTOM_FOLDER",
    "check_generation_root",
    "ensure_phantom",
    "generate_phantom",
]

log = logging.getLogger(__name__)

PHANTOM_FOLDER = "Dataset900_Phantom"
# Bump when the generator's output changes, so cached phantoms are regenerated.
GENERATOR_VERSION = 1


def _write_case(seed: int, inplane_voxels: int, folder: str, case_id: str, index: int) -> None:
    rng = np.random.default_rng(np.random.SeedSequence([seed, index]))
    hu, label, affine = synthesize_case(rng, inplane_voxels)
    write_nifti(Path(folder) / "imagesTr" / f"{case_id}_0000.nii.gz", hu, affine)
    write_nifti(Path(folder) / "labelsTr" / f"{case_id}.nii.gz", label, affine)


def generate_phantom(
    root: str | Path,
    n_cases: int = 30,
    seed: int = 0,
    inplane_voxels: int = 96,
    workers: int | None = None,
) -> Path:
    """Generate ``<root>/Dataset900_Phantom`` (or reuse it if it was made with the same arguments).

    Each case is an abdominal CT-like slab of ``inplane_voxels^2 x (33-47)`` voxels covering
    about 300 x 300 x 150 mm (spacing about 2.8-3.4 mm in-plane and 3.2-4.6 mm between slices at
    the default 96 voxels), with 8 labelled organs (:data:`PHANTOM_LABELS`).

    Args:
        root: folder to create the dataset in.
        n_cases: number of cases (``phantom_000`` ...), all in ``imagesTr``/``labelsTr``.
        seed: generator seed.
        inplane_voxels: in-plane grid size (>= 16); smaller is faster and coarser.
        workers: processes to use; ``None`` uses up to 2 when there are 4+ cases.

    Returns:
        Path of the dataset folder.

    Raises:
        DatasetError: ``root`` already holds a phantom generated with other arguments.
    """
    if n_cases < 1 or inplane_voxels < 16:
        raise ValueError(
            f"need n_cases >= 1 and inplane_voxels >= 16, got {n_cases}, {inplane_voxels}"
        )
    record = {
        "n_cases": n_cases,
        "seed": seed,
        "inplane_voxels": inplane_voxels,
        "version": GENERATOR_VERSION,
    }
    meta = {
        "name": "Phantom",
        "description": "Synthetic abdominal CT (medqbench embedded phantom)",
        "channel_names": {"0": "CT"},
        "labels": {name: lid for lid, name in PHANTOM_LABELS.items()},
        "numTraining": n_cases,
        "file_ending": ".nii.gz",
        "medqbench_phantom": record,
    }
    return build_raw_dataset(
        root,
        PHANTOM_FOLDER,
        meta,
        "medqbench_phantom",
        [f"phantom_{i:03d}" for i in range(n_cases)],
        partial(_write_case, seed, inplane_voxels),
        workers,
    )


def ensure_phantom(config: DataConfig) -> Path:
    """The phantom folder of a data config, generated on first use.

    ``root: null`` means ``<cache>/phantom/n<N>-s<seed>-v<voxels>-g<version>``, so differently
    configured phantoms never share a folder.
    """
    if config.root is not None:
        root = Path(config.root).expanduser()
    else:
        key = f"n{config.n_cases}-s{config.seed}-v{config.inplane_voxels}-g{GENERATOR_VERSION}"
        root = cache_root(config.cache_dir) / "phantom" / key
    return generate_phantom(root, config.n_cases, config.seed, config.inplane_voxels)


# Folder names of nnU-Net raw (Dataset011_BTCV) and Decathlon (Task09_Spleen) datasets.
_DATASET_NAME = re.compile(r"^(Dataset\d{3}|Task\d{2,3})_(\w+)$")
# The ten Decathlon tasks; conf/data/msd_<snake_case name>.yaml exists for each.
_DECATHLON_TASKS = {
    "BrainTumour",
    "Heart",
    "Liver",
    "Hippocampus",
    "Prostate",
    "Lung",
    "Pancreas",
    "HepaticVessel",
    "Spleen",
    "Colon",
}
_UNSET = "leave data.root unset (null) to generate into the cache"


def check_generation_root(root: Path, fmt: str, folder_name: str) -> None:
    """Refuse a ``data.root`` that a generator (``fmt``, writing ``folder_name``) must not fill.

    Accepted: an existing folder that is empty, or that holds only datasets made by the
    built-in generators (so an earlier phantom is reused) and their lock and temporary entries.
    Refused, with the ``data=`` to use instead: a real nnU-Net raw or Decathlon dataset (the
    folder itself or one inside it), a path that does not exist (a mistyped dataset path must
    not turn into minutes of runs on synthetic data), a file, a generated dataset folder itself
    (its parent is the root), an empty folder named like a real dataset, or any other content.

    Raises:
        DataConfigError: naming the folder, what it holds and what to run instead.
    """
    problem = _root_problem(root, fmt, folder_name)
    if problem is not None:
        why, advice = problem
        raise DataConfigError(
            f"data.root={root} {why}; data={fmt} generates synthetic data and will not write "
            f"there. {advice}"
        )
    log.info("%s data (synthetic) in %s", fmt, root / folder_name)


def _root_problem(root: Path, fmt: str, folder_name: str) -> tuple[str, str] | None:
    """``(what is wrong, what to do)`` for a refused root, else ``None``."""
    if not root.exists():
        return "does not exist", (
            "To evaluate your own dataset, choose its data config (data=btcv, data=msd_spleen, "
            "...) and point data.root at the folder holding dataset.json; to generate the "
            f"{fmt} data there, create the empty folder first (mkdir {root}), or {_UNSET}"
        )
    if not root.is_dir():
        return "is a file, not a folder", f"Choose a folder, or {_UNSET}"
    layout = dataset_layout(root)
    if layout == "generated":
        return "is a generated dataset folder itself", (
            f"Set data.root to the folder that holds it: data.root={root.parent}"
        )
    if layout == "raw_without_json":
        return "looks like a dataset folder (imagesTr/labelsTr)", (
            "Give it a dataset.json and choose its data config (format nnunet_raw or msd)"
        )
    if layout is not None:
        kind = "a Decathlon (MSD)" if layout == "msd" else "an nnU-Net raw"
        return f"holds {kind} dataset", _use_instead(root, layout)
    other, datasets = _foreign_entries(root)
    if datasets:
        names = ", ".join(p.name for p, _ in datasets)
        return f"holds the dataset(s) {names}", _use_instead(*datasets[0])
    if other:
        listed = ", ".join(p.name for p in other[:5]) + (" ..." if len(other) > 5 else "")
        return f"is not empty (holds {listed})", (
            "Generated data goes only into an empty folder or one holding an earlier "
            f"{folder_name}: choose another folder, or {_UNSET}"
        )
    if not (root / folder_name).exists() and _DATASET_NAME.match(root.name):
        return "is empty but named like a real dataset", (
            "Copy the dataset there and choose its data config, or generate into a folder "
            f"named otherwise (or {_UNSET})"
        )
    return None


def _use_instead(folder: Path, layout: str) -> str:
    """The data config to run a real dataset folder with, as advice."""
    match = _DATASET_NAME.match(folder.name)
    task = match.group(2) if match else folder.name
    if layout == "msd":
        name, template = f"msd_{_snake(task)}", "msd_spleen"
        if task in _DECATHLON_TASKS:
            return f"To evaluate {folder.name}, run with data={name} data.root={folder}"
    else:
        name, template = task.lower(), "btcv"
        if name == "btcv":
            return f"To evaluate {folder.name}, run with data=btcv data.root={folder}"
    return (
        f"To evaluate {folder.name}, copy conf/data/{template}.yaml to conf/data/{name}.yaml "
        f"(format: {layout}; set name and expected_num_classes), then run with data={name} "
        f"data.root={folder}"
    )


def _snake(name: str) -> str:
    """``HepaticVessel`` -> ``hepatic_vessel`` (Decathlon task name -> config name)."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).lower()


def _foreign_entries(root: Path) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Entries of ``root`` the generators did not make: real datasets, and everything else.

    Generator entries are generated datasets and the ``.DatasetXXX_Name.*`` lock files and
    temporary folders beside them.
    """
    other: list[Path] = []
    datasets: list[tuple[Path, str]] = []
    for entry in sorted(root.iterdir()):
        if entry.name.startswith(".") and _DATASET_NAME.match(entry.name[1:].split(".")[0]):
            continue
        layout = dataset_layout(entry) if entry.is_dir() else None
        if layout == "generated":
            continue
        if layout in ("nnunet_raw", "msd"):
            datasets.append((entry, layout))
        else:
            other.append(entry)
    return other, datasets
