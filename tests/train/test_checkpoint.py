"""Checkpoints: atomic writes, weights_only round trip, RNG state restore, version check."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from benchmark.train.checkpoint import (
    CheckpointReadError,
    atomic_torch_save,
    capture_rng_state,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)


def _draws() -> tuple:
    return random.random(), float(np.random.rand()), float(torch.rand(1))


def test_rng_state_round_trip_through_a_checkpoint(tmp_path):
    random.seed(3)
    np.random.seed(3)
    torch.manual_seed(3)
    _draws()
    save_checkpoint(tmp_path / "c.pt", {"epoch": 1, "rng": capture_rng_state()})
    expected = _draws()
    _draws()  # move every generator on
    restore_rng_state(load_checkpoint(tmp_path / "c.pt")["rng"])
    assert _draws() == expected


def test_model_optimizer_scheduler_round_trip(tmp_path, tiny_segnet):
    opt = torch.optim.AdamW(tiny_segnet.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda it: (1 - it / 10) ** 0.9)
    tiny_segnet(torch.randn(1, 1, 8, 8, 8)).mean().backward()
    opt.step()
    sched.step()
    state = {
        "epoch": 3,
        "model": tiny_segnet.state_dict(),
        "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(),
        "history": [{"epoch": 1, "loss": 0.5, "val_per_class": {"liver": float("nan")}}],
        "best_val_dsc": 0.25,
    }
    save_checkpoint(tmp_path / "c.pt", state)
    back = load_checkpoint(tmp_path / "c.pt")
    assert back["version"] == 1 and back["epoch"] == 3 and back["best_val_dsc"] == 0.25
    assert all(torch.equal(v, back["model"][k]) for k, v in state["model"].items())
    opt2 = torch.optim.AdamW(tiny_segnet.parameters(), lr=1e-3)
    opt2.load_state_dict(back["optimizer"])
    exp_avg = next(iter(opt.state_dict()["state"].values()))["exp_avg"]
    assert torch.equal(next(iter(opt2.state_dict()["state"].values()))["exp_avg"], exp_avg)
    sched2 = torch.optim.lr_scheduler.LambdaLR(opt2, lambda it: (1 - it / 10) ** 0.9)
    sched2.load_state_dict(back["scheduler"])
    assert sched2.last_epoch == 1 and sched2.get_last_lr() == sched.get_last_lr()


def test_failed_write_keeps_the_previous_file(tmp_path):
    path = atomic_torch_save({"a": torch.ones(2)}, tmp_path / "x.pt")

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        atomic_torch_save({"a": Unpicklable()}, path)
    assert torch.equal(torch.load(path, weights_only=True)["a"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ["x.pt"]  # no temp file left behind
    assert path.stat().st_mode & 0o044  # readable like a normally written file


def test_foreign_or_corrupt_checkpoint_is_refused(tmp_path):
    torch.save({"version": 99}, tmp_path / "old.pt")
    with pytest.raises(CheckpointReadError, match=r"old\.pt: checkpoint layout version 99"):
        load_checkpoint(tmp_path / "old.pt")
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointReadError, match=r"bad\.pt: cannot read.*trainer\.resume=false"):
        load_checkpoint(tmp_path / "bad.pt")
