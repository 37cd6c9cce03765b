"""Files that are not checkpoints: one CheckpointError naming the file and the expected format."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest
import torch

from benchmark.models import CheckpointError, read_state_dict

EXPECTED = "expected a file written by torch.save"


class _Opaque:
    """A class torch.load(weights_only=True) must refuse to rebuild."""


def _state() -> dict[str, torch.Tensor]:
    return {"conv.weight": torch.arange(24.0).reshape(2, 3, 4), "conv.bias": torch.ones(2)}


def _write(path, kind: str):
    if kind == "random":
        path.write_bytes(np.random.default_rng(3055726822).bytes(4096))
    elif kind == "text":
        path.write_text("model weights are at https://example.org/weights.pt\n")
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "zip_without_data_pkl":
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("weights.txt", "1 2 3")
    elif kind == "truncated_zip":
        torch.save(_state(), path)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif kind == "truncated_legacy":
        torch.save(_state(), path, _use_new_zipfile_serialization=False)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path


@pytest.mark.parametrize(
    "kind, says",
    [
        ("random", "is not a PyTorch checkpoint: its first bytes match no known format"),
        ("text", "is not a PyTorch checkpoint: it holds text"),
        ("empty", "is not a PyTorch checkpoint: it is empty"),
        ("zip_without_data_pkl", "is a zip archive but not a PyTorch checkpoint"),
        ("truncated_zip", "is truncated or corrupt"),
        ("truncated_legacy", "is truncated or corrupt"),
    ],
)
def test_a_file_that_is_not_a_checkpoint_is_named_with_the_expected_format(tmp_path, kind, says):
    path = _write(tmp_path / f"{kind}.pt", kind)
    with pytest.raises(CheckpointError) as info:
        read_state_dict(path, "state_dict")
    message = str(info.value)
    assert message.startswith(f"{path} ") or message.startswith(f"{path}:"), message
    assert says in message and EXPECTED in message
    assert "\n" not in message and "code objects" not in message


def test_objects_that_need_code_are_refused_with_the_class_and_the_fix(tmp_path):
    path = tmp_path / "pickled_module.pt"
    torch.save({"model": _Opaque(), **_state()}, path)
    with pytest.raises(CheckpointError) as info:
        read_state_dict(path, "state_dict")
    message = str(info.value)
    assert str(path) in message and "_Opaque" in message
    assert "torch.save(model.state_dict()" in message and "\n" not in message


@pytest.mark.parametrize("legacy", [False, True])
def test_real_checkpoints_in_both_torch_formats_still_load(tmp_path, legacy):
    path = tmp_path / "weights.pt"
    torch.save(_state(), path, _use_new_zipfile_serialization=not legacy)
    loaded = read_state_dict(path, "state_dict")
    assert set(loaded) == set(_state())
    assert torch.equal(loaded["conv.weight"], _state()["conv.weight"])
