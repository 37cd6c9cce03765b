"""``python -m benchmark.metrics`` on unreadable volumes: one ``error:`` line naming the file."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from benchmark.metrics.cli import main

REPO = Path(__file__).resolve().parents[2]


def _label() -> np.ndarray:
    """Noisy labels, so the compressed voxel data (not the header) fills most of the file."""
    return np.random.default_rng(0).integers(0, 3, (32, 32, 32), dtype=np.uint8)


def _save(path: Path, array: np.ndarray) -> Path:
    nib.save(nib.Nifti1Image(array, np.eye(4)), str(path))
    return path


def _damaged(folder: Path, kind: str) -> Path:
    """A prediction file with one kind of damage (the reference beside it is intact)."""
    packed = _save(folder / "intact.nii.gz", _label()).read_bytes()
    plain = _save(folder / "intact.nii", _label()).read_bytes()
    path = folder / (
        f"{kind}.nii" if kind in ("truncated_nii", "wrong_magic") else f"{kind}.nii.gz"
    )
    if kind == "truncated_gzip":
        path.write_bytes(packed[: len(packed) // 2])
    elif kind == "broken_compression":
        damaged = bytearray(packed)
        damaged[len(damaged) // 2 : len(damaged) // 2 + 16] = b"\xff" * 16
        path.write_bytes(bytes(damaged))
    elif kind == "truncated_nii":
        path.write_bytes(plain[: 352 + 500])  # the header and the first voxels
    elif kind == "wrong_magic":
        path.write_bytes(plain[:344] + b"xx1\x00" + plain[348:])
    elif kind == "gzip_of_text":
        path.write_bytes(gzip.compress(b"no image here " * 50))
    elif kind == "rgb_voxels":
        _save(path, np.zeros((32, 32, 32), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")]))
    elif kind == "complex_voxels":
        _save(path, _label().astype(np.complex64))
    return path


KINDS = [
    "truncated_gzip",
    "broken_compression",
    "truncated_nii",
    "wrong_magic",
    "gzip_of_text",
    "rgb_voxels",
    "complex_voxels",
]


@pytest.mark.parametrize("kind", KINDS)
def test_unreadable_prediction_is_one_line_naming_the_file(tmp_path, capfd, kind):
    pred = _damaged(tmp_path, kind)
    gt = _save(tmp_path / "reference.nii.gz", _label())
    assert main([str(pred), str(gt)]) == 2
    captured = capfd.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("error: ") and str(pred) in lines[0]
    assert captured.out == ""


def test_the_module_prints_no_traceback_from_the_decompressor(tmp_path):
    pred = _damaged(tmp_path, "truncated_gzip")
    gt = _save(tmp_path / "reference.nii.gz", _label())
    done = subprocess.run(
        [sys.executable, "-m", "benchmark.metrics", str(pred), str(gt)],
        cwd=REPO,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert done.stderr.splitlines() == [done.stderr.strip()] and "Traceback" not in done.stderr
    assert str(pred) in done.stderr and "truncated" in done.stderr
