"""Unreadable NIfTI files fail when a dataset is opened, as one ImageReadError naming the file."""

from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import pytest

from benchmark.data import ImageReadError
from benchmark.data.reader import check_headers, read_dataset, read_header


def _nifti_bytes(tmp_path, array: np.ndarray, name: str) -> bytes:
    path = tmp_path / name
    nib.save(nib.Nifti1Image(array, np.eye(4)), str(path))
    data = path.read_bytes()
    path.unlink()
    return data


def _broken(tmp_path, kind: str):
    """A file of one kind of damage, named as a NIfTI file."""
    label = np.zeros((12, 12, 12), np.uint8)
    label[3:9, 3:9, 3:9] = 1
    plain = _nifti_bytes(tmp_path, label, "x.nii")
    packed = _nifti_bytes(tmp_path, label, "x.nii.gz")
    suffix = ".nii" if kind in ("truncated_nii", "wrong_magic", "unknown_datatype") else ".nii.gz"
    path = tmp_path / f"{kind}{suffix}"
    if kind == "truncated_nii":
        path.write_bytes(plain[: 352 + 100])
    elif kind == "wrong_magic":
        path.write_bytes(plain[:344] + b"xx1\x00" + plain[348:])
    elif kind == "unknown_datatype":
        header = bytearray(plain)
        header[70:72] = (9999).to_bytes(2, "little")  # NIfTI-1 'datatype' field
        path.write_bytes(bytes(header))
    elif kind == "not_gzip":
        path.write_bytes(plain)
    elif kind == "gzip_of_text":
        path.write_bytes(gzip.compress(b"this is not an image " * 40))
    elif kind == "broken_compression":
        damaged = bytearray(packed)
        damaged[20:40] = b"\xff" * 20  # inside the compressed header
        path.write_bytes(bytes(damaged))
    elif kind == "complex_voxels":
        nib.save(nib.Nifti1Image(label.astype(np.complex64), np.eye(4)), str(path))
    elif kind == "rgb_voxels":
        rgb = np.zeros(label.shape, dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
        nib.save(nib.Nifti1Image(rgb, np.eye(4)), str(path))
    return path


KINDS = [
    ("truncated_nii", "is truncated"),
    ("wrong_magic", "cannot read NIfTI header"),
    ("unknown_datatype", "cannot read NIfTI header"),
    ("not_gzip", "cannot read NIfTI header"),
    ("gzip_of_text", "cannot read NIfTI header"),
    ("broken_compression", "cannot read NIfTI header"),
    ("complex_voxels", "neither an intensity nor a label type"),
    ("rgb_voxels", "neither an intensity nor a label type"),
]


@pytest.mark.parametrize("kind, says", KINDS)
def test_every_unreadable_file_is_one_named_line(tmp_path, capfd, kind, says):
    path = _broken(tmp_path, kind)
    with pytest.raises(ImageReadError) as info:
        read_header(path)
    message = str(info.value)
    assert str(path) in message and says in message
    assert "\n" not in message
    captured = capfd.readouterr()
    assert captured.err == "" and captured.out == ""  # nibabel's own log lines stay silent


def test_a_complete_file_passes(tmp_path):
    path = tmp_path / "ok.nii"
    nib.save(nib.Nifti1Image(np.ones((12, 12, 12), np.int16), np.eye(4)), str(path))
    assert read_header(path).shape == (12, 12, 12)


def test_a_truncated_case_is_found_when_the_dataset_is_opened(tiny_nnunet):
    """Header checks catch a cut uncompressed image before any case is prepared."""
    index = read_dataset(tiny_nnunet, "nnunet_raw")
    case = index.training[sorted(index.training)[0]]
    image = nib.load(str(case.images[0]))
    cut = case.images[0].with_name(case.images[0].name.replace(".nii.gz", ".nii"))
    nib.save(nib.Nifti1Image(np.asanyarray(image.dataobj), image.affine), str(cut))
    cut.write_bytes(cut.read_bytes()[:-64])
    cut_case = type(case)(case.case_id, (cut,), case.label)
    with pytest.raises(ImageReadError, match=rf"{cut} is truncated: its header promises \d+ bytes"):
        check_headers(cut_case, 1)
