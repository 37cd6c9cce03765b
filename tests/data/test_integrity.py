"""The upfront integrity check: every case read once, every problem listed, the result cached."""

from __future__ import annotations

import gzip
import json
import os

import nibabel as nib
import numpy as np
import pytest

from benchmark.data import ImageReadError, UnknownLabelError, open_dataset
from benchmark.data.__main__ import main
from benchmark.data.integrity import (
    DatasetIntegrityError,
    dataset_layout,
    verify_dataset,
    verify_index,
)
from benchmark.data.reader import read_dataset
from benchmark.errors import run_cli

SHAPE, SPACING = (16, 16, 12), (1.5, 1.5, 3.0)


def _bad_label(kit, folder, case_id, value):
    label = np.zeros(SHAPE, np.uint8)
    label[2:5, 2:5, 2:5] = value
    kit.save(folder / "labelsTr" / f"{case_id}.nii.gz", label, kit.affine_for(SPACING))


def test_undeclared_labels_of_every_case_are_found_at_open(tmp_path, tiny_nnunet, kit):
    _bad_label(kit, tiny_nnunet, "tiny_tr02", 7)
    _bad_label(kit, tiny_nnunet, "tiny_tr05", 9)
    with pytest.raises(UnknownLabelError) as err:
        open_dataset(kit.nnunet_cfg(tiny_nnunet))
    message = str(err.value)
    assert message.startswith(f"2 of 6 cases of {tiny_nnunet} fail the integrity check")
    assert "tiny_tr02.nii.gz holds values [7]" in message
    assert "tiny_tr05.nii.gz holds values [9]" in message
    assert not list((tmp_path / "cache").rglob("*.npz"))  # nothing was prepared


def test_truncated_and_non_finite_images_are_found(tiny_nnunet, kit):
    path = tiny_nnunet / "imagesTr" / "tiny_tr01_0000.nii.gz"
    path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes())[:-3000]))
    with pytest.raises(ImageReadError, match=r"tiny_tr01_0000\.nii\.gz.*truncated"):
        open_dataset(kit.nnunet_cfg(tiny_nnunet))
    image = np.zeros(SHAPE, np.float32)
    image[0, 0, 0] = np.nan
    kit.save(tiny_nnunet / "imagesTr" / "tiny_tr03_0000.nii.gz", image, kit.affine_for(SPACING))
    with pytest.raises(DatasetIntegrityError) as err:  # two kinds of problem: the common type
        open_dataset(kit.nnunet_cfg(tiny_nnunet))
    assert "2 of 6 cases" in str(err.value) and "tiny_tr03_0000.nii.gz holds NaN" in str(err.value)


def test_a_damaged_gzip_checksum_is_found_although_the_voxels_load(tiny_nnunet, kit):
    path = tiny_nnunet / "labelsTr" / "tiny_tr04.nii.gz"
    data = bytearray(path.read_bytes())
    data[-8] ^= 0xFF  # the CRC-32 of the gzip trailer: nibabel never reads it
    path.write_bytes(bytes(data))
    assert np.asanyarray(nib.load(path).dataobj).shape == SHAPE
    with pytest.raises(ImageReadError, match=r"tiny_tr04\.nii\.gz.*CRC check failed"):
        open_dataset(kit.nnunet_cfg(tiny_nnunet))


def test_passing_cases_are_not_read_again_until_their_files_change(tiny_nnunet, kit):
    index = read_dataset(tiny_nnunet, "nnunet_raw")
    assert verify_index(index).n_read == 6
    assert verify_index(index).n_read == 0
    # A corruption that keeps size and time is invisible to the record: proof nothing was read.
    path = tiny_nnunet / "labelsTr" / "tiny_tr04.nii.gz"
    stat = path.stat()
    raw = bytearray(path.read_bytes())
    middle = len(raw) // 2
    raw[middle : middle + 32] = bytes(32)  # a broken deflate stream
    path.write_bytes(bytes(raw))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert verify_index(index).ok
    forced = verify_index(index, force=True)
    assert forced.n_read == 6 and not forced.ok
    assert isinstance(forced.problems[0], ImageReadError)
    assert "tiny_tr04.nii.gz" in str(forced.problems[0])
    # a failing case is read again on every check, a touched one once
    assert verify_index(index).n_read == 1
    _bad_label(kit, tiny_nnunet, "tiny_tr04", 1)
    assert verify_index(index).n_read == 1 and verify_index(index).n_read == 0


def test_changed_label_declarations_verify_everything_again(tiny_nnunet):
    index = read_dataset(tiny_nnunet, "nnunet_raw")
    assert verify_index(index).ok
    meta = json.loads((tiny_nnunet / "dataset.json").read_text())
    meta["labels"] = {"background": 0, "organ": 1}  # label 2 no longer declared
    (tiny_nnunet / "dataset.json").write_text(json.dumps(meta))
    report = verify_index(read_dataset(tiny_nnunet, "nnunet_raw"))
    assert report.n_read == 6 and len(report.problems) == 6


def test_layouts_and_msd(tiny_msd, tiny_nnunet, tmp_path):
    assert dataset_layout(tiny_msd) == "msd" and dataset_layout(tiny_nnunet) == "nnunet_raw"
    assert dataset_layout(tmp_path) is None
    report = verify_dataset(tiny_msd)  # format from dataset.json
    assert report.ok and report.n_cases == 5


def test_command_line(tiny_nnunet, kit, capsys):
    assert main(["verify", str(tiny_nnunet)]) == 0
    assert capsys.readouterr().out.strip() == (
        f"{tiny_nnunet}: 6 cases, all pass (6 read, 0 unchanged since they last passed)"
    )
    _bad_label(kit, tiny_nnunet, "tiny_tr00", 4)
    assert main(["verify", str(tiny_nnunet)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: 1 of 6 cases") and "tiny_tr00.nii.gz holds values [4]" in err
    assert run_cli(lambda: main(["verify", str(tiny_nnunet.parent / "nowhere")])) == 1
    err = capsys.readouterr().err
    assert "does not exist" in err and len(err.strip().splitlines()) == 1
