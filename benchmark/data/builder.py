"""Write a generated dataset as an nnU-Net raw folder, deterministically and atomically.

Shared by the built-in generators (phantom, Colin27). Cases are written into a temporary
sibling folder that is renamed into place at the end, under an inter-process lock: concurrent
callers generate once and then reuse the finished folder; a crash leaves no half-written
dataset. ``dataset.json`` carries a record of the generator arguments, and an existing folder
made with other arguments is refused rather than silently reused.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import nibabel as nib
import numpy as np

from benchmark.data.cache import file_lock
from benchmark.data.errors import DatasetError

__all__ = ["build_raw_dataset", "write_nifti"]


def write_nifti(path: Path, array: np.ndarray, affine: np.ndarray) -> None:
    """Gzip with ``mtime=0`` (nibabel's writer stamps the time, which breaks byte identity)."""
    img = nib.Nifti1Image(array, affine)
    img.header.set_qform(affine, code=1)
    img.header.set_sform(affine, code=1)
    path.write_bytes(gzip.compress(img.to_bytes(), compresslevel=1, mtime=0))


def build_raw_dataset(
    root: str | Path,
    folder_name: str,
    meta: dict,
    record_key: str,
    case_ids: Sequence[str],
    write_case: Callable[[str, str, int], None],
    workers: int | None = None,
) -> Path:
    """Create ``<root>/<folder_name>`` unless it exists with the same generator record.

    Args:
        root: parent folder.
        folder_name: ``DatasetXXX_Name``.
        meta: ``dataset.json`` content; ``meta[record_key]`` identifies the generator arguments.
        record_key: key of that record.
        case_ids: ids to write.
        write_case: picklable ``f(folder, case_id, index)`` writing
            ``imagesTr/<case_id>_0000.nii.gz`` and ``labelsTr/<case_id>.nii.gz``.
        workers: processes; ``None`` means up to 2 when there are 4 or more cases.

    Raises:
        DatasetError: the folder exists but was made with other arguments.
    """
    root = Path(root).expanduser()
    final = root / folder_name
    root.mkdir(parents=True, exist_ok=True)
    with file_lock(root / f".{folder_name}.lock"):
        if final.exists():
            _check_existing(final, record_key, meta[record_key])
            return final
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder_name}.", dir=root))
        try:
            (tmp / "imagesTr").mkdir()
            (tmp / "labelsTr").mkdir()
            jobs = [(str(tmp), cid, i) for i, cid in enumerate(case_ids)]
            if workers is None:
                workers = min(2, os.cpu_count() or 1) if len(jobs) >= 4 else 1
            if workers > 1:
                # fork: children run numpy/scipy only and skip re-importing torch and MONAI.
                ctx = get_context("fork") if os.name == "posix" else None
                with ProcessPoolExecutor(workers, mp_context=ctx) as pool:
                    list(pool.map(write_case, *zip(*jobs, strict=True)))
            else:
                for job in jobs:
                    write_case(*job)
            (tmp / "dataset.json").write_text(json.dumps(meta, indent=2))
            os.rename(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return final


def _check_existing(folder: Path, record_key: str, record: dict) -> None:
    try:
        found = json.loads((folder / "dataset.json").read_text()).get(record_key)
    except (OSError, ValueError):
        found = None
    if found != record:
        raise DatasetError(
            f"{folder} exists but was not generated with {record} (found {found}); delete it or "
            "choose another data.root"
        )
