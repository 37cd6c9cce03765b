"""Trainer: learning far above chance, bit-identical resume after interruption, refusals."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from benchmark.train import ResumeError, Trainer, TrainResult, train
from benchmark.train.checkpoint import load_checkpoint
from tests.train.conftest import make_cfg


class _Interrupt(KeyboardInterrupt):
    """Stands in for Ctrl-C / a killed job between two epochs."""


def _stop_after(epoch: int):
    def callback(trainer, done, entry):
        if done == epoch:
            raise _Interrupt

    return callback


def _same_state(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_resume_after_interruption_is_bit_identical(tmp_path, small_data_cfg, small_dataset):
    cfg = make_cfg(small_data_cfg, epochs=4, val_every=2)
    straight = train(cfg, output_dir=tmp_path / "straight", dataset=small_dataset)

    interrupted = Trainer(
        cfg, output_dir=tmp_path / "resumed", dataset=small_dataset, callbacks=[_stop_after(2)]
    )
    with pytest.raises(_Interrupt):
        interrupted.fit()
    assert load_checkpoint(tmp_path / "resumed" / "checkpoint.pt")["epoch"] == 2
    assert not (tmp_path / "resumed" / "model_final.pt").exists()

    resumed = train(cfg, output_dir=tmp_path / "resumed", dataset=small_dataset)
    assert resumed.resumed_from == 2
    assert resumed.epochs == 4 and [h["epoch"] for h in resumed.history] == [1, 2, 3, 4]
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in straight.history]
    assert _same_state(resumed.model.state_dict(), straight.model.state_dict())
    assert resumed.final_val.mean_dsc == straight.final_val.mean_dsc
    # optimizer and scheduler continued too: identical final states
    a = load_checkpoint(tmp_path / "straight" / "checkpoint.pt")
    b = load_checkpoint(tmp_path / "resumed" / "checkpoint.pt")
    assert a["scheduler"]["last_epoch"] == b["scheduler"]["last_epoch"] == 8
    for sa, sb in zip(
        a["optimizer"]["state"].values(), b["optimizer"]["state"].values(), strict=True
    ):
        assert torch.equal(sa["exp_avg"], sb["exp_avg"]) and torch.equal(sa["step"], sb["step"])


def test_same_seed_same_weights_other_seed_differs(tmp_path, small_data_cfg, small_dataset):
    cfg = make_cfg(small_data_cfg, epochs=1, max_val_cases=1)
    a = train(cfg, output_dir=tmp_path / "a", dataset=small_dataset)
    b = train(cfg, output_dir=tmp_path / "b", dataset=small_dataset)
    c = train(
        make_cfg(small_data_cfg, epochs=1, seed=1), output_dir=tmp_path / "c", dataset=small_dataset
    )
    assert _same_state(a.model.state_dict(), b.model.state_dict())
    assert not _same_state(a.model.state_dict(), c.model.state_dict())


def test_finished_run_is_not_retrained(tmp_path, small_data_cfg, small_dataset):
    cfg = make_cfg(small_data_cfg, epochs=1)
    first = train(cfg, output_dir=tmp_path, dataset=small_dataset)
    again = train(cfg, output_dir=tmp_path, dataset=small_dataset)
    assert again.resumed_from == 1 and len(again.history) == 1
    assert _same_state(first.model.state_dict(), again.model.state_dict())
    assert again.final_val.mean_dsc == first.final_val.mean_dsc


def test_resume_refuses_a_checkpoint_of_another_recipe(tmp_path, small_data_cfg, small_dataset):
    train(make_cfg(small_data_cfg, epochs=1), output_dir=tmp_path, dataset=small_dataset)
    with pytest.raises(ResumeError, match=r"trainer\.lr: checkpoint 0\.003 vs now 0\.01"):
        train(
            make_cfg(small_data_cfg, epochs=2, lr=0.01), output_dir=tmp_path, dataset=small_dataset
        )
    # resume=false starts over instead
    fresh = train(
        make_cfg(small_data_cfg, epochs=1, lr=0.01, resume=False),
        output_dir=tmp_path,
        dataset=small_dataset,
    )
    assert fresh.resumed_from == 0


def test_outputs_record_and_export(tmp_path, small_data_cfg, small_dataset):
    cfg = make_cfg(small_data_cfg, epochs=1, export_dir=str(tmp_path / "weights"))
    result = train(cfg, output_dir=tmp_path / "run", dataset=small_dataset, command="python -m x")
    assert isinstance(result, TrainResult)
    for name in ("checkpoint.pt", "model_final.pt", "model_best.pt", "history.json", "record.json"):
        assert (tmp_path / "run" / name).is_file(), name
    record = json.loads((tmp_path / "weights" / "test_unet.json").read_text())
    assert record == json.loads((tmp_path / "run" / "record.json").read_text())
    assert record["command"] == "python -m x" and record["seed"] == 0 and record["epochs"] == 1
    assert record["val_mean_dsc"] == round(result.final_val.mean_dsc, 4)
    assert set(record["val_dsc"]) == {v for k, v in small_dataset.labels.items() if k != 0}
    assert record["data_config"]["n_cases"] == small_data_cfg["n_cases"]
    state = torch.load(tmp_path / "weights" / "test_unet.pt", weights_only=True)
    assert _same_state(state, result.model.state_dict())


def _chance_dsc(dataset, case_ids) -> dict[str, float]:
    """Expected DSC of a prediction drawn independently of the image with the true class
    frequencies: 2 p^2 / (p + p) = p, the class's volume fraction (mean over cases)."""
    fractions: dict[str, list[float]] = {}
    for case_id in case_ids:
        label = np.asarray(dataset.prepare(case_id).label)
        for value, name in dataset.labels.items():
            if value != 0:
                fractions.setdefault(name, []).append(float((label == value).mean()))
    return {name: float(np.mean(f)) for name, f in fractions.items()}


@pytest.mark.slow
def test_tiny_model_learns_far_above_chance(tmp_path, small_data_cfg, small_dataset):
    cfg = make_cfg(
        small_data_cfg,
        epochs=6,
        iterations_per_epoch=10,
        batch_size=2,
        lr=0.01,
        val_every=6,
        max_val_cases=None,
    )
    result = train(cfg, output_dir=tmp_path, dataset=small_dataset)
    chance = _chance_dsc(small_dataset, small_dataset.split("val"))
    assert result.history[-1]["loss"] < result.history[0]["loss"]
    assert result.final_val.per_class["liver"] > max(0.7, 5 * chance["liver"])
    assert result.final_val.mean_dsc > 5 * float(np.mean(list(chance.values())))
    assert not math.isnan(result.best_val_dsc)
