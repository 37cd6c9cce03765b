"""python -m benchmark.metrics on tiny NIfTI files: tables, JSON and clear errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from benchmark.metrics import dice, nsd
from benchmark.metrics.cli import main

SPACING = (0.8, 1.2, 2.5)


def _save(path: Path, data: np.ndarray, spacing=SPACING, dtype=np.uint8) -> Path:
    image = nib.Nifti1Image(data.astype(dtype), np.diag([*spacing, 1.0]))
    nib.save(image, str(path))
    return path


def _pair(seed=0):
    gt = np.zeros((12, 10, 8), np.uint8)
    gt[2:8, 2:7, 2:6] = 1
    gt[8:11, 3:9, 1:4] = 2
    pred = np.roll(gt, seed + 1, axis=0)
    return pred, gt


def test_file_pair_json_uses_header_spacing(tmp_path, capsys):
    pred, gt = _pair()
    # Label maps stored as integral floats (common in NIfTI) are accepted.
    p = _save(tmp_path / "p.nii.gz", pred, dtype=np.float32)
    g = _save(tmp_path / "case_01.nii.gz", gt)
    assert main([str(p), str(g), "--tolerance", "1.0", "--json"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert [r["class"] for r in records] == [1, 2]
    expected_nsd = nsd(pred, gt, SPACING, 1.0, [1, 2])
    expected_dsc = dice(pred, gt, [1, 2])
    for r in records:
        assert r["case"] == "case_01" and r["tolerance_mm"] == 1.0
        assert r["nsd"] == pytest.approx(expected_nsd[r["class"]])
        assert r["dsc"] == pytest.approx(expected_dsc[r["class"]])
        assert {"hd95", "status"} <= set(r)


def test_folders_table_and_empty_structures(tmp_path, capsys):
    (tmp_path / "pred").mkdir()
    (tmp_path / "gt").mkdir()
    for i in range(2):
        pred, gt = _pair(i)
        _save(tmp_path / "pred" / f"c{i}.nii.gz", pred)
        _save(tmp_path / "gt" / f"c{i}.nii.gz", gt)
    assert main([str(tmp_path / "pred"), str(tmp_path / "gt"), "--labels", "1", "3"]) == 0
    out = capsys.readouterr().out
    assert "NSD tolerance 2.0 mm" in out
    assert out.count("c0") == 2 and out.count("c1") == 2 and "both_empty" in out
    assert main([str(tmp_path / "pred"), str(tmp_path / "gt"), "--labels", "3", "--json"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert records[0]["dsc"] is None and records[0]["status"] == "both_empty"


@pytest.mark.parametrize(
    "problem, message",
    [
        ("shape", "shape mismatch"),
        ("affine", "affine mismatch"),
        ("missing", "without a counterpart"),
        ("float", "non-integer values"),
        ("mixed", "both be NIfTI files or both be folders"),
        ("unreadable", "not a readable NIfTI file"),
    ],
)
def test_errors_name_the_files(tmp_path, capsys, problem, message):
    pred, gt = _pair()
    (tmp_path / "pred").mkdir()
    (tmp_path / "gt").mkdir()
    g = _save(tmp_path / "gt" / "a.nii.gz", gt)
    p = tmp_path / "pred" / "a.nii.gz"
    if problem == "shape":
        _save(p, pred[:-1])
    elif problem == "affine":
        _save(p, pred, spacing=(1.0, 1.2, 2.5))
    elif problem == "float":
        _save(p, pred + 0.5, dtype=np.float32)
    elif problem == "unreadable":
        p.write_bytes(b"not a nifti")
    else:
        _save(p, pred)
    if problem == "missing":
        _save(tmp_path / "gt" / "b.nii.gz", gt)
        args = [str(tmp_path / "pred"), str(tmp_path / "gt")]
    elif problem == "mixed":
        args = [str(tmp_path / "pred"), str(g)]
    else:
        args = [str(p), str(g)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err
    if problem != "mixed":
        assert ("b.nii.gz" if problem == "missing" else "a.nii.gz") in err


def test_module_entry_point(tmp_path):
    pred, gt = _pair()
    p, g = _save(tmp_path / "p.nii", pred), _save(tmp_path / "g.nii", gt)
    done = subprocess.run(
        [sys.executable, "-m", "benchmark.metrics", str(p), str(g), "--json"],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert len(json.loads(done.stdout)) == 2
