"""Errors a user can act on: one line without traceback, Ctrl-C in one line, and ROI sizes
checked against the network's total stride before any work."""

from __future__ import annotations

import importlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.errors import HydraException

import benchmark.infer
from benchmark.config import ConfigError, build_point
from benchmark.deploy.layer_policy import parse_policy
from benchmark.errors import error_message, is_expected, run_cli
from benchmark.models import build_model, load_model_config
from benchmark.models.stride import input_grid, size_problem
from benchmark.pipeline.job import STATUS_FILE, run_job
from benchmark.points.context import spec_bits
from benchmark.preflight import (
    SweepError,
    check_input_size,
    check_point,
    check_sweep,
    sweep_jobs,
)
from tests.runs import run_task

REPO = Path(__file__).resolve().parents[2]
CONF = REPO / "conf"


def _compose(*overrides: str, hydra_config: bool = False):
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        return compose("config", overrides=list(overrides), return_hydra_config=hydra_config)


def _cli(tmp_path: Path, *args: str, env: dict[str, str] | None = None):
    paths = [
        f"paths.results_dir={tmp_path / 'results'}",
        f"paths.log_dir={tmp_path / 'logs'}",
        f"paths.cache_dir={tmp_path / 'cache'}",
    ]
    return subprocess.run(
        [sys.executable, "-m", "benchmark.run", *args, *paths],
        cwd=REPO,
        env={
            **os.environ,
            "OMP_NUM_THREADS": "1",
            "MEDQBENCH_CACHE": str(tmp_path / "cache"),
            **(env or {}),
        },
        capture_output=True,
        text=True,
        timeout=300,
    )


# --- the command line -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "override, says",
    [
        ("+precision.bits=3", "error: invalid config at 'precision.bits': Key 'bits' not in"),
        ("precision=w3a5", "error: In 'config': Could not find 'precision/w3a5'; Available opt"),
        ("inference.roi_size=[7,7,7]", "error: inference.roi_size=[7, 7, 7] does not fit model="),
    ],
)
def test_an_error_is_one_line_without_traceback(tmp_path, override, says):
    done = _cli(tmp_path, override)
    assert done.returncode == 1
    assert done.stderr.splitlines() == [done.stderr.rstrip("\n")], done.stderr
    assert done.stderr.startswith(says) and "Traceback" not in done.stdout + done.stderr
    assert not (tmp_path / "results").exists() and not (tmp_path / "cache").exists()


def test_the_traceback_is_shown_on_request(tmp_path):
    done = _cli(tmp_path, "+precision.bits=3", env={"MEDQBENCH_TRACEBACK": "1"})
    assert done.returncode == 1
    assert "Traceback (most recent call last)" in done.stderr
    assert "ConfigError: invalid config at 'precision.bits'" in done.stderr


def _corrupt_dataset(root: Path) -> Path:
    """Four 32^3 cases in nnU-Net raw layout; the image of case c2 is cut in half."""
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        label = np.zeros((32, 32, 32), np.uint8)
        label[8:24, 8:24, 8:24] = 1
        image = (label * 100 + rng.normal(0, 10, label.shape)).astype(np.float32)
        nib.save(nib.Nifti1Image(image, np.eye(4)), str(root / "imagesTr" / f"c{i}_0000.nii.gz"))
        nib.save(nib.Nifti1Image(label, np.eye(4)), str(root / "labelsTr" / f"c{i}.nii.gz"))
    meta = {
        "channel_names": {"0": "CT"},
        "labels": {"background": 0, "organ": 1},
        "numTraining": 4,
        "file_ending": ".nii.gz",
    }
    (root / "dataset.json").write_text(json.dumps(meta))
    broken = root / "imagesTr" / "c2_0000.nii.gz"
    broken.write_bytes(broken.read_bytes()[: broken.stat().st_size // 2])
    return broken


def test_a_corrupt_volume_is_named_without_traceback(tmp_path):
    broken = _corrupt_dataset(tmp_path / "Dataset001_Cut")
    done = _cli(
        tmp_path,
        "model.checkpoint=null",
        "data=msd_spleen",
        "data.format=nnunet_raw",
        f"data.root={broken.parents[1]}",
        "data.split.splits_file=null",
        "data.split.fractions=[0.5,0.25,0.25]",
    )
    assert done.returncode == 1
    assert "Traceback" not in done.stdout + done.stderr
    assert done.stderr.startswith("error: ") and str(broken) in done.stderr
    assert len(done.stderr.splitlines()) <= 2, done.stderr  # the problem, and the file's line


def test_ctrl_c_prints_one_line_and_exits_130(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MEDQBENCH_CACHE": str(tmp_path / "cache")}
    run_dir = tmp_path / "job"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "benchmark.run",
            f"paths.results_dir={tmp_path / 'results'}",
            f"paths.cache_dir={tmp_path / 'cache'}",
            f"hydra.run.dir={run_dir}",
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not (run_dir / "status.json").exists() and time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert "Traceback" not in out + err and "KeyboardInterrupt" not in err
    assert err.splitlines()[-1].startswith("interrupted: finished runs are kept")


class _CtrlCWhileCollected:
    """Ctrl-C raised inside ``__del__``, where Python prints and drops every exception (as in
    the fork hooks of a worker pool)."""

    def __del__(self):
        signal.raise_signal(signal.SIGINT)


def test_a_ctrl_c_python_dropped_still_ends_the_command_with_130(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(sys, "unraisablehook", sys.__unraisablehook__)  # Python's, not pytest's
    steps = []

    def main():
        _CtrlCWhileCollected()  # collected at once: its KeyboardInterrupt is dropped
        steps.append("went on")

    assert run_cli(main) == 130
    # no "Exception ignored ... Traceback" for the dropped Ctrl-C: the one line only
    assert steps == ["went on"] and capsys.readouterr().err.strip() == "interrupted"

    def sweep():
        _CtrlCWhileCollected()
        return run_job(lambda: steps.append("next job built"), {}, output_dir=tmp_path)

    assert run_cli(sweep) == 130
    assert steps == ["went on"]  # the next job stopped before building its point
    assert json.loads((tmp_path / STATUS_FILE).read_text())["status"] == "interrupted"
    assert run_cli(lambda: 0) == 0  # the next command starts without the old Ctrl-C


def test_a_dropped_ctrl_c_stops_an_evaluation_before_its_next_case(
    fake_layers, make_cfg, calls, capsys, monkeypatch
):
    monkeypatch.setattr(sys, "unraisablehook", sys.__unraisablehook__)
    predict = benchmark.infer.predict_probabilities

    def predict_then_drop_ctrl_c(*args, **kwargs):
        probs = predict(*args, **kwargs)
        _CtrlCWhileCollected()
        return probs

    monkeypatch.setattr(benchmark.infer, "predict_probabilities", predict_then_drop_ctrl_c)
    cfg = make_cfg("precision=fp32", "granularity=none")
    assert run_cli(lambda: run_task(cfg)) == 130
    assert calls.predict_fp32 == 1  # of the two test cases, the second never started
    assert capsys.readouterr().err.strip() == "interrupted"


@pytest.mark.parametrize("command", ["benchmark.report", "benchmark.plots"])
def test_a_file_that_is_not_parquet_is_one_line(tmp_path, capsys, command):
    main = importlib.import_module(f"{command}.__main__").main
    bad = tmp_path / "results.parquet"
    bad.write_text("experiment,model\nsmoke,tiny_nnunet\n")  # a CSV under the wrong name
    assert run_cli(lambda: main([str(bad)])) == 1
    err = capsys.readouterr().err
    assert err.splitlines() == [err.rstrip("\n")] and err.startswith(f"error: {bad} is not a")


# --- benchmark.errors ----------------------------------------------------------------------------


def test_errors_raised_on_purpose_are_told_from_defects():
    with pytest.raises(ValueError) as on_purpose:  # a `raise` statement of the harness
        parse_policy("fastest")
    with pytest.raises(ConfigError) as own_type:
        build_point(_compose("precision.name=w99a8"))
    with pytest.raises(AttributeError) as defect:  # not a `raise` of ours: a wrong argument
        spec_bits(None)
    with pytest.raises(ValueError) as library:
        np.zeros(3).reshape(2)
    assert is_expected(on_purpose.value) and is_expected(own_type.value)
    assert is_expected(FileNotFoundError(2, "No such file or directory", "x.nii.gz"))
    assert not is_expected(defect.value) and not is_expected(library.value)


def test_hydra_reports_become_one_line():
    with pytest.raises(HydraException) as missing:
        _compose("precision=w3a5")
    with pytest.raises(HydraException) as unknown:
        _compose("model.foo=1")
    options = error_message(missing.value)
    assert "\n" not in options and "Config search path" not in options
    assert "Available options in 'precision': bf16, fp16, fp32, fp8_e4m3" in options
    assert error_message(unknown.value).startswith("Could not override 'model.foo'.")
    assert "Key 'foo' not in 'ModelConfig'" in error_message(unknown.value)
    assert "full_key" not in error_message(unknown.value)


def test_run_cli_statuses_and_the_traceback_switch(capsys, monkeypatch):
    monkeypatch.delenv("MEDQBENCH_TRACEBACK", raising=False)
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)

    def config_error():
        build_point(_compose("precision.name=w99a8"))

    def interrupted():
        raise KeyboardInterrupt

    assert run_cli(lambda: 3) == 3 and run_cli(lambda: None) == 0
    assert run_cli(config_error) == 1
    assert capsys.readouterr().err.splitlines() == [
        "error: precision.name='w99a8': weight bits 99 is outside 2..16; pick N, M in 2..16"
    ]
    assert run_cli(interrupted, interrupted="stopped") == 130
    assert capsys.readouterr().err.strip() == "stopped"
    assert "HYDRA_FULL_ERROR" not in os.environ  # set for Hydra during the call only
    with pytest.raises(AttributeError):  # a defect keeps its traceback
        run_cli(lambda: spec_bits(None))
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    with pytest.raises(ConfigError):
        run_cli(config_error)


# --- ROI and patch sizes against the total stride ---------------------------------------------


def _runs(model: torch.nn.Module, size: tuple[int, int, int]) -> bool:
    try:
        with torch.no_grad():
            return tuple(model(torch.zeros(1, 1, *size)).shape[2:]) == size
    except (RuntimeError, ValueError):
        return False


@pytest.mark.parametrize(
    "name", ["tiny_nnunet", "tiny_stunet", "tiny_swinunetr", "tiny_medformer", "tiny_unetr"]
)
def test_the_size_check_agrees_with_the_network(name):
    """Every size the check accepts runs through the real network, every one it refuses fails."""
    torch.manual_seed(0)
    cfg = load_model_config(name)
    model = build_model(cfg, 1, 3).eval()
    grid = input_grid(cfg.net)
    sizes = [(16, 16, 16), (16, 16, 32), (24, 32, 32), (32, 32, 32), (48, 64, 64)]
    verdicts = {size: size_problem(size, grid) is None for size in sizes}
    verdicts[tuple(cfg.patch_size)] = size_problem(cfg.patch_size, grid) is None
    assert verdicts[tuple(cfg.patch_size)], name
    assert {size: _runs(model, size) for size in verdicts} == verdicts


def test_the_stride_comes_from_the_config():
    net = dict(load_model_config("tiny_nnunet").net)
    grid = input_grid({**net, "strides": [1, [1, 2, 2], 2, 2, 2]})
    assert grid.multiple == (8, 16, 16) and grid.min_bottleneck_voxels == 2
    # without instance normalisation a one-voxel bottleneck is fine
    assert size_problem([16, 16, 16], input_grid({**net, "norm": "batch"})) is None
    assert "nearest size that fits is [16, 16, 32]" in size_problem([7, 7, 7], input_grid(net))


def test_the_stride_of_a_plans_file(tmp_path):
    plans = tmp_path / "nnUNetPlans.json"
    arch = {
        "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
        "arch_kwargs": {
            "n_stages": 3,
            "strides": [[1, 1, 1], [1, 2, 2], [2, 2, 2]],
            "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
        },
        "_kw_requires_import": ["norm_op"],
    }
    plans.write_text(json.dumps({"configurations": {"3d_fullres": {"architecture": arch}}}))
    net = {**load_model_config("nnunet").net, "plans": str(plans)}
    grid = input_grid(net)
    assert grid.multiple == (2, 4, 4) and str(plans) in grid.derivation


def test_a_single_point_names_the_roi_and_the_stride():
    with pytest.raises(ConfigError) as info:
        check_point(_compose("model=tiny_swinunetr", "inference.roi_size=[48,64,64]"))
    message = str(info.value)
    assert message.startswith("inference.roi_size=[48, 64, 64] does not fit model=tiny_swinunetr")
    assert "total stride [32, 32, 32]" in message and "[64, 64, 64]" in message
    with pytest.raises(ConfigError, match=r"model.patch_size=\[32, 32, 32\] \(the ROI while"):
        check_point(_compose("model=tiny_stunet", "model.patch_size=[32,32,32]"))
    assert check_point(_compose("inference.roi_size=[32,32,48]")).inference.roi_size == [32, 32, 48]


def test_a_sweep_names_each_point_whose_roi_does_not_fit():
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        overrides = ["experiment=smoke", "inference.roi_size=[32,32,32]"]
        cfg = compose("config", overrides=overrides, return_hydra_config=True)
        with pytest.raises(SweepError) as info:
            check_sweep(cfg, "config")
    message = str(info.value)
    assert message.startswith("9 of 18 sweep points cannot run")  # the SwinUNETR half
    assert "model=tiny_swinunetr precision=w4a4 granularity=adaptive" in message
    assert "model=tiny_nnunet" not in message
    assert "1x1x1 voxel bottleneck at the total stride [32, 32, 32]" in message


def test_the_checked_points_are_the_points_hydra_launches():
    """A command-line axis replaces the preset's (experiment=smoke model=tiny_nnunet runs 9
    points, not 18 with tiny_nnunet twice): compared with Hydra's basic sweeper itself."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        overrides = ["experiment=smoke", "model=tiny_nnunet"]
        cfg = compose("config", overrides=overrides, return_hydra_config=True)
        jobs = sweep_jobs(cfg)
        params = [f"{k}={v}" for k, v in cfg.hydra.sweeper.params.items()] + overrides
        parsed = OverridesParser.create().parse_overrides(params)
        (launched,) = BasicSweeper.split_arguments(parsed, None)
    assert sorted(map(sorted, jobs)) == sorted(map(sorted, launched))
    assert len(jobs) == 9 and all("model=tiny_nnunet" in job for job in jobs)


def test_a_folder_that_is_the_model_brings_its_own_patch_size(tmp_path):
    """An nnU-Net results folder's network comes from its plans.json, not from model.net."""
    (tmp_path / "plans.json").write_text("{}")
    registry_point = _compose("model.patch_size=[7,7,7]")
    with pytest.raises(ConfigError, match="model.patch_size=\\[7, 7, 7\\]"):
        check_input_size(registry_point)
    check_input_size(_compose("model.patch_size=[7,7,7]", f"model.checkpoint={tmp_path}"))
