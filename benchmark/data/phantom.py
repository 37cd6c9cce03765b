"""Write the embedded abdominal CT phantom as an nnU-Net raw dataset (``Dataset900_Phantom``).

The same reader then serves the phantom and real data. Generation is deterministic (case ``i``
depends only on ``seed``, ``i`` and ``inplane_voxels``, and NIfTI files are gzipped without a
timestamp, so the same arguments give identical bytes) and atomic (see
:func:`benchmark.data.builder.build_raw_dataset`).
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from benchmark.data.builder import build_raw_dataset, write_nifti
from benchmark.data.cache import cache_root
from benchmark.data.phantom_anatomy import PHANTOM_LABELS, synthesize_case

if TYPE_CHECKING:
    from benchmark.data.config import DataConfig

__all__ = ["GENERATOR_VERSION", "PHANTOM_FOLDER", "ensure_phantom", "generate_phantom"]

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
