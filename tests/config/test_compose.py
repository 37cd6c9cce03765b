"""The conf/ tree: every experiment composes and validates, option names match file stems,
sweep values exist, and impossible or mistyped configs fail naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from benchmark.config import GROUP_SCHEMAS, ConfigError, hashed_point, sweep_subdir, validate
from benchmark.quant.algorithms import ALGORITHMS
from benchmark.results import config_hash

CONF = Path(__file__).resolve().parents[2] / "conf"
RUNNER_EXPERIMENTS = ["smoke", "demo", "medquanbench_btcv", "calib_size", "observers"]
GROUPS = [
    "precision",
    "granularity",
    "observer",
    "algorithm",
    "calibration",
    "inference",
    "model",
    "data",
]
# values a user must supply to run the BTCV reproduction
BTCV_REQUIRED = ["data.root=/data/Dataset011_BTCV"] + [
    f"checkpoints.{m}=/ckpt/{m}"
    for m in ("nnunet", "stunet_b", "stunet_l", "stunet_h", "swinunetr", "unetr", "medformer")
]


def _compose(*overrides: str, hydra_config: bool = False):
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        return compose("config", overrides=list(overrides), return_hydra_config=hydra_config)


def _first_point(params) -> list[str]:
    return [f"{k}={str(v).split(',')[0]}" for k, v in params.items()]


def test_default_config_validates():
    cfg = validate(_compose())
    assert cfg.task == "evaluate" and cfg.experiment_name == "adhoc"


@pytest.mark.parametrize("name", sorted(p.stem for p in (CONF / "experiment").glob("*.yaml")))
def test_every_experiment_composes(name):
    text = (CONF / "experiment" / f"{name}.yaml").read_text()
    assert text.startswith("# @package _global_\n"), (
        f"{name}.yaml must start with '# @package _global_'"
    )
    extra = BTCV_REQUIRED if name == "medquanbench_btcv" else []
    cfg = _compose(f"experiment={name}", *extra, hydra_config=True)
    assert cfg.experiment_name, name


@pytest.mark.parametrize("name", RUNNER_EXPERIMENTS)
def test_runner_experiments_are_documented_sweeps_whose_points_validate(name):
    text = (CONF / "experiment" / f"{name}.yaml").read_text()
    header = text.split("defaults:")[0]
    assert f"python -m benchmark.run experiment={name}" in header
    assert "Jobs:" in header and "Cost:" in header
    extra = BTCV_REQUIRED if name == "medquanbench_btcv" else []
    cfg = _compose(f"experiment={name}", *extra, hydra_config=True)
    assert cfg.experiment_name == name
    assert cfg.hydra.mode.name == "MULTIRUN"
    params = cfg.hydra.sweeper.params
    point = _compose(f"experiment={name}", *extra, *_first_point(params))
    validate(point, in_sweep=True)


@pytest.mark.parametrize("name", RUNNER_EXPERIMENTS)
def test_sweep_values_exist(name):
    extra = BTCV_REQUIRED if name == "medquanbench_btcv" else []
    params = _compose(f"experiment={name}", *extra, hydra_config=True).hydra.sweeper.params
    base = _compose()
    for key, values in params.items():
        for value in str(values).split(","):
            if (CONF / key).is_dir():
                assert (CONF / key / f"{value}.yaml").is_file(), (
                    f"{name}: {key}={value} has no conf/{key}/{value}.yaml"
                )
            else:
                assert OmegaConf.select(base, key) is not None, (
                    f"{name}: sweep key {key} is not in the config"
                )


@pytest.mark.parametrize("group", GROUPS)
def test_option_name_equals_file_stem(group):
    """Except algorithm files, which may name a composition or a method with other options
    (tuned_brecq, qat_keep_dynamic): their names must be registered methods."""
    for path in sorted((CONF / group).glob("*.yaml")):
        name = OmegaConf.load(path).get("name")
        if group != "algorithm":
            assert name == path.stem, f"conf/{group}/{path.name}: name={name!r}"
            continue
        names = [name] if isinstance(name, str) else list(name)
        assert all(n in ALGORITHMS for n in names), f"conf/algorithm/{path.name}: name={name!r}"
        if path.stem in ALGORITHMS:  # a file named after a method holds that method
            assert names == [path.stem], f"conf/algorithm/{path.name}: name={name!r}"


@pytest.mark.parametrize("group", list(GROUP_SCHEMAS)[:6])
def test_runner_group_options_extend_and_match_their_schema(group):
    for path in sorted((CONF / group).glob("*.yaml")):
        option = OmegaConf.load(path)
        assert f"/schema/{group}@_here_" in option.pop("defaults"), path
        OmegaConf.merge(
            OmegaConf.structured(GROUP_SCHEMAS[group]), option
        )  # raises on a wrong key or type


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["precision=fp16", "granularity=adaptive"],
            "granularity=adaptive is impossible with precision=fp16",
        ),
        (["precision=w8a8", "granularity=none"], "precision=w8a8 needs a granularity"),
        (["calibration.split=test"], "calibration.split='test'"),
        (["precision.name=w99a4"], "precision.name='w99a4'"),
        (["inference.overlap=1.5"], "inference.overlap=1.5"),
        (["+model.typo=1"], "model.typo"),
        (["model.family=rnn"], "model.family='rnn'"),
        (["data.split.fractions=[1.0]"], "data.split.fractions"),
    ],
)
def test_impossible_configs_name_the_key(overrides, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("+", r"\+")):
        validate(_compose(*overrides))


@pytest.mark.parametrize(
    ("override", "key"),
    [("calibration.n=many", "calibration.n"), ("inference.typo=1", "inference.typo")],
)
def test_wrong_types_and_unknown_keys_fail_at_compose(override, key):
    with pytest.raises(ConfigCompositionException) as info:
        _compose(override)
    assert key in str(info.value) + str(info.value.__cause__)


def test_btcv_needs_checkpoints():
    with pytest.raises(ConfigError, match="checkpoints"):
        validate(
            _compose(
                "experiment=medquanbench_btcv", "data.root=/x", "precision=fp32", "granularity=none"
            )
        )


def test_float_precision_collapses_in_a_sweep_only():
    cfg = _compose("precision=fp32", "granularity=adaptive")
    with pytest.raises(ConfigError):
        validate(cfg)
    assert validate(cfg, in_sweep=True).granularity.name == "none"


def test_hash_ignores_what_does_not_change_results():
    def digest(*overrides):
        return config_hash(hashed_point(validate(_compose(*overrides), in_sweep=True)))

    base = digest("precision=w8a8", "granularity=adaptive")
    assert base == digest(
        "precision=w8a8",
        "granularity=adaptive",
        "paths.results_dir=/elsewhere",
        "run.progress=false",
        "report.plot=true",
    )
    assert base != digest("precision=w8a8", "granularity=per_tensor")
    assert base != digest("precision=w8a8", "granularity=adaptive", "calibration.n=32")
    fp32 = digest("precision=fp32", "granularity=none")
    assert fp32 == digest(
        "precision=fp32", "granularity=adaptive", "observer=mse", "calibration.n=64"
    )


def test_sweep_subdir_is_named_by_the_job_options():
    overrides = [
        "precision=w8a8",
        "model=tiny_nnunet",
        "experiment=smoke",
        "hydra/launcher=joblib",
        "paths.log_dir=/x",
    ]
    assert sweep_subdir(overrides) == "model=tiny_nnunet,precision=w8a8"
    assert sweep_subdir(["data.root=/a/b"]) == "data.root=_a_b"
    assert (
        sweep_subdir(["calibration.n=8", "precision=w4a4", "model=m"])
        == "model=m,precision=w4a4,calibration.n=8"
    )
    long = sweep_subdir([f"quant.option_{i}=value_{i}" for i in range(20)])
    assert len(long) <= 200 and long == sweep_subdir(
        [f"quant.option_{i}=value_{i}" for i in range(20)]
    )
    cfg = _compose("precision=w4a4", hydra_config=True)
    assert cfg.hydra.job.chdir is False


@pytest.mark.parametrize(
    ("launcher", "target"),
    [
        ("basic", "BasicLauncher"),
        ("joblib", "JoblibLauncher"),
        ("submitit_local", "LocalLauncher"),
        ("submitit_slurm", "SlurmLauncher"),
    ],
)
def test_launchers_are_the_plugins_own_options(launcher, target):
    """DESIGN.md names the launchers by the plugins' own option names; none is shadowed."""
    assert not (CONF / "hydra" / "launcher").exists()
    cfg = _compose(f"hydra/launcher={launcher}", hydra_config=True)
    assert cfg.hydra.launcher._target_.endswith(target)
    if launcher.startswith("submitit"):
        # job folders stay inside the sweep folder, beside the jobs' status.json
        folder = OmegaConf.to_container(cfg.hydra.launcher, resolve=False)["submitit_folder"]
        assert folder.startswith("${hydra.sweep.dir}/")
