"""Optional real anatomy: many subjects from the Colin27 T1 brain and the AAL atlas.

Debian's ``mricron-data`` package ships, on one 1 mm MNI grid, the Colin27 average T1 brain
(``ch2.nii.gz``; Holmes et al., J Comput Assist Tomogr 1998) and the AAL atlas of 116
expert-drawn regions (``aal.nii.gz`` with names in ``aal.nii.txt``; Tzourio-Mazoyer et al.,
NeuroImage 2002). Subjects are made from that one brain by a random affine plus a smooth
elastic warp, a multiplicative bias field and Rician noise. The label of every output voxel is
the atlas label at the warped position (nearest neighbour), so labels stay exact.

Nothing of it is shipped with this project: when the package is absent, :func:`ensure_colin27`
raises :class:`~benchmark.data.errors.DatasetNotFoundError` saying how to install it.
"""

from __future__ import annotations

from functools import lru_cache, partial
from pathlib import Path
from typing import TYPE_CHECKING

import nibabel as nib
import numpy as np
from scipy import ndimage

from benchmark.data.builder import build_raw_dataset, write_nifti
from benchmark.data.cache import cache_root
from benchmark.data.errors import DatasetNotFoundError
from benchmark.data.phantom_anatomy import smooth_random_field

if TYPE_CHECKING:
    from benchmark.data.config import DataConfig

__all__ = [
    "COLIN27_FOLDER",
    "MRICRON_TEMPLATES",
    "colin27_available",
    "ensure_colin27",
    "generate_colin27",
]

MRICRON_TEMPLATES = Path("/usr/share/mricron/templates")
COLIN27_FOLDER = "Dataset901_Colin27"
_FILES = ("ch2.nii.gz", "aal.nii.gz", "aal.nii.txt")
GENERATOR_VERSION = 1


def _template_files(templates_dir: str | Path | None) -> tuple[Path, Path, Path]:
    folder = Path(templates_dir) if templates_dir is not None else MRICRON_TEMPLATES
    paths = tuple(folder / f for f in _FILES)
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise DatasetNotFoundError(
            f"the colin27 dataset needs Debian's mricron-data package; missing {missing}. "
            "Install it (apt-get install mricron-data) or choose another dataset"
        )
    return paths  # type: ignore[return-value]


def colin27_available(templates_dir: str | Path | None = None) -> bool:
    """Whether the Colin27 T1 and the AAL atlas (with its names) are installed."""
    try:
        _template_files(templates_dir)
    except DatasetNotFoundError:
        return False
    return True


def _aal_labels(names_file: Path) -> dict[int, str]:
    """``{0: background, 1: Precentral_L, ...}`` from lines ``"<index> <name> <code>"``."""
    labels = {0: "background"}
    for line in names_file.read_text().splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0].isdigit():
            labels[int(parts[0])] = parts[1]
    return labels


@lru_cache(maxsize=2)
def _templates(t1_file: str, aal_file: str, sigma_vox: float):
    """Template T1 (anti-alias blurred for the output voxel size), atlas and their affine."""
    t1 = nib.load(t1_file)
    aal = nib.load(aal_file)
    if t1.shape != aal.shape or not np.allclose(t1.affine, aal.affine, atol=1e-3):
        raise DatasetNotFoundError(f"{t1_file} and {aal_file} are not on one grid")
    image = ndimage.gaussian_filter(np.asarray(t1.dataobj, dtype=np.float32), sigma_vox)
    return image, np.asarray(aal.dataobj).astype(np.uint8), np.asarray(t1.affine)


def _write_case(
    t1_file: str, aal_file: str, seed: int, voxel_mm: float, folder: str, case_id: str, index: int
) -> None:
    rng = np.random.default_rng(np.random.SeedSequence([seed, index]))
    u = rng.uniform
    image, atlas, src_affine = _templates(t1_file, aal_file, 0.4 * max(voxel_mm - 1.0, 0.0))
    # Output grid: the template's field of view at voxel_mm, RAS.
    shape = tuple(int(np.ceil(n / voxel_mm)) for n in image.shape)
    out_affine = np.diag([voxel_mm, voxel_mm, voxel_mm, 1.0])
    out_affine[:3, 3] = src_affine[:3, 3]
    grid = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape], indexing="ij"))
    world = (
        np.einsum("ij,j...->i...", out_affine[:3, :3], grid) + out_affine[:3, 3, None, None, None]
    )
    # Random affine about the brain centre, then a smooth elastic warp (~3 mm rms).
    centre = (src_affine @ np.r_[(np.array(image.shape) - 1) / 2, 1.0])[:3]
    angles = np.deg2rad(u(-6, 6, size=3))
    rot = np.eye(3)
    for axis, a in enumerate(angles):
        c, s = np.cos(a), np.sin(a)
        r = np.eye(3)
        i, j = [k for k in range(3) if k != axis]
        r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
        rot = rot @ r
    lin = rot @ np.diag(u(0.92, 1.08, size=3))
    src = np.einsum("ij,j...->i...", lin, world - centre[:, None, None, None])
    src = src + (centre + u(-4, 4, size=3))[:, None, None, None]
    src = src + np.stack([3.0 * smooth_random_field(rng, (5, 6, 5), shape) for _ in range(3)])
    vox = np.einsum("ij,j...->i...", np.linalg.inv(src_affine)[:3, :3], src)
    vox = vox + np.linalg.inv(src_affine)[:3, 3, None, None, None]
    label = ndimage.map_coordinates(atlas, vox, order=0, mode="constant", cval=0)
    t1 = ndimage.map_coordinates(image, vox, order=1, mode="constant", cval=0.0)
    # Scanner: smooth multiplicative bias (about +-25 %), gain, Rician noise.
    t1 = t1 * np.exp(0.12 * smooth_random_field(rng, (3, 3, 3), shape)) * u(0.85, 1.15)
    sigma = u(2.0, 6.0)
    noisy = np.hypot(t1 + rng.normal(0, sigma, shape), rng.normal(0, sigma, shape))
    write_nifti(
        Path(folder) / "imagesTr" / f"{case_id}_0000.nii.gz",
        np.clip(np.rint(noisy), 0, 32767).astype(np.int16),
        out_affine,
    )
    write_nifti(Path(folder) / "labelsTr" / f"{case_id}.nii.gz", label.astype(np.uint8), out_affine)


def generate_colin27(
    root: str | Path,
    n_cases: int = 20,
    seed: int = 0,
    voxel_mm: float = 2.0,
    templates_dir: str | Path | None = None,
    workers: int | None = None,
) -> Path:
    """Generate ``<root>/Dataset901_Colin27`` in nnU-Net raw format (117 labels with background).

    Args:
        root: folder to create the dataset in.
        n_cases: number of subjects (``colin27_000`` ...).
        seed: generator seed (same seed, identical files).
        voxel_mm: isotropic output voxel size; 2 mm gives 91 x 109 x 91 voxels.
        templates_dir: where ``ch2.nii.gz``, ``aal.nii.gz`` and ``aal.nii.txt`` are
            (default: mricron-data's ``/usr/share/mricron/templates``).
        workers: processes; ``None`` means up to 2 when there are 4 or more cases.

    Raises:
        DatasetNotFoundError: mricron-data (or the given folder) lacks the template files.
    """
    t1_file, aal_file, names_file = _template_files(templates_dir)
    record = {"n_cases": n_cases, "seed": seed, "voxel_mm": voxel_mm, "version": GENERATOR_VERSION}
    meta = {
        "name": "Colin27",
        "description": "Colin27 T1 + AAL atlas (mricron-data), elastically deformed subjects",
        "channel_names": {"0": "T1"},
        "labels": {name: lid for lid, name in _aal_labels(names_file).items()},
        "numTraining": n_cases,
        "file_ending": ".nii.gz",
        "medqbench_colin27": record,
    }
    return build_raw_dataset(
        root,
        COLIN27_FOLDER,
        meta,
        "medqbench_colin27",
        [f"colin27_{i:03d}" for i in range(n_cases)],
        partial(_write_case, str(t1_file), str(aal_file), seed, voxel_mm),
        workers,
    )


def ensure_colin27(config: DataConfig) -> Path:
    """The Colin27 folder of a data config (``root: null`` = ``<cache>/colin27/<key>``)."""
    if config.root is not None:
        root = Path(config.root).expanduser()
    else:
        key = f"n{config.n_cases}-s{config.seed}-g{GENERATOR_VERSION}"
        root = cache_root(config.cache_dir) / "colin27" / key
    return generate_colin27(root, config.n_cases, config.seed)
