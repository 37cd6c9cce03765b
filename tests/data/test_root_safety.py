"""``data.root`` with a generated dataset: synthetic cases never land in or beside real data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

import benchmark.config  # noqa: F401  (registers the schemas)
from benchmark.data import DataConfigError, open_dataset
from benchmark.data.integrity import dataset_layout
from benchmark.data.phantom import PHANTOM_FOLDER
from tests.runs import run_config

CONF = Path(__file__).resolve().parents[2] / "conf"
SMALL = {"name": "phantom", "format": "phantom", "n_cases": 2, "inplane_voxels": 24}


def _phantom(root: Path) -> dict:
    return {**SMALL, "root": str(root)}


def _tree(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_a_real_msd_dataset_is_refused_and_named(tmp_path, kit):
    task = kit.write_msd(tmp_path / "raw").rename(tmp_path / "raw" / "Task09_Spleen")
    before = _tree(task)
    with pytest.raises(DataConfigError) as err:
        open_dataset(_phantom(task))
    message = str(err.value)
    assert "holds a Decathlon (MSD) dataset" in message
    assert f"data=msd_spleen data.root={task}" in message
    assert _tree(task) == before  # nothing written: no phantom, no lock file


def test_a_real_nnunet_dataset_is_refused_and_named(tmp_path, kit):
    folder = kit.write_nnunet(tmp_path / "raw").rename(tmp_path / "raw" / "Dataset011_BTCV")
    before = _tree(folder)
    with pytest.raises(DataConfigError, match=f"data=btcv data.root={folder}"):
        open_dataset(_phantom(folder))
    assert _tree(folder) == before


def test_a_folder_of_datasets_is_refused(tmp_path, kit):
    kit.write_nnunet(tmp_path / "raw")
    kit.write_msd(tmp_path / "raw")
    before = _tree(tmp_path / "raw")
    with pytest.raises(DataConfigError, match="holds the dataset.s. Dataset123_Tiny, Task99_Tiny"):
        open_dataset(_phantom(tmp_path / "raw"))
    assert _tree(tmp_path / "raw") == before


def test_a_missing_root_is_not_created(tmp_path):
    root = tmp_path / "typo" / "MyDataset"
    with pytest.raises(DataConfigError, match="does not exist.*mkdir"):
        open_dataset(_phantom(root))
    assert not (tmp_path / "typo").exists()
    with pytest.raises(DataConfigError, match="does not exist"):  # the same rule for colin27
        open_dataset({"name": "colin27", "format": "colin27", "root": str(root)})
    assert not (tmp_path / "typo").exists()


def test_other_content_and_dataset_names_are_refused(tmp_path):
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    with pytest.raises(DataConfigError, match=r"is not empty \(holds notes.txt\)"):
        open_dataset(_phantom(busy))
    named = tmp_path / "Task09_Spleen"  # a download that did not arrive
    named.mkdir()
    with pytest.raises(DataConfigError, match="empty but named like a real dataset"):
        open_dataset(_phantom(named))
    assert _tree(busy) == ["notes.txt"] and _tree(named) == []


def test_an_empty_folder_is_filled_once_and_reused(tmp_path):
    root = tmp_path / "scratch"
    root.mkdir()
    first = open_dataset(_phantom(root))
    assert first.root == root / PHANTOM_FOLDER and dataset_layout(first.root) == "generated"
    assert sorted(p.name for p in root.iterdir()) == [PHANTOM_FOLDER]  # no lock file left
    stamp = (first.root / "dataset.json").stat().st_mtime_ns
    (root / f".{PHANTOM_FOLDER}.lock").write_text("")  # as a killed generator leaves it
    again = open_dataset(_phantom(root))
    assert again.root == first.root and (first.root / "dataset.json").stat().st_mtime_ns == stamp
    with pytest.raises(DataConfigError, match=f"generated dataset folder itself.*={root}$"):
        open_dataset(_phantom(first.root))


def test_a_run_with_a_real_dataset_as_phantom_root_fails_before_any_work(tmp_path, kit):
    task = kit.write_msd(tmp_path / "raw")
    before = _tree(task)
    overrides = [
        "model=tiny_nnunet",
        f"data.root={task}",
        f"data.cache_dir={tmp_path / 'cache'}",
        f"paths.results_dir={tmp_path / 'results'}",
        f"paths.cache_dir={tmp_path / 'cache'}",
        f"paths.log_dir={tmp_path / 'outputs'}",
        "run.progress=false",
    ]
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        cfg = compose("config", overrides=overrides)
    with pytest.raises(DataConfigError, match="holds a Decathlon"):
        run_config(cfg, output_dir=tmp_path / "job")
    status = json.loads((tmp_path / "job" / "status.json").read_text())
    assert status["status"] == "failed" and "Decathlon" in status["error"]
    assert _tree(task) == before
    assert not list((tmp_path / "results").rglob("*.parquet"))  # no rows saying dataset=phantom
