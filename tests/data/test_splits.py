"""Deterministic splits: seeded fractions, nnU-Net splits_final.json, imagesTs as test."""

from __future__ import annotations

import json

import pytest

from benchmark.data import SplitError, open_dataset
from benchmark.data.splits import make_splits

IDS = [f"c{i:02d}" for i in range(30)]


def test_counts_and_disjoint_cover():
    s = make_splits(IDS, seed=0, fractions=(0.6, 0.13, 0.27))
    assert [len(s[k]) for k in ("train", "val", "test")] == [18, 4, 8]
    assert sorted(s["train"] + s["val"] + s["test"]) == IDS


def test_same_seed_same_split_other_seed_other_split():
    a = make_splits(IDS, seed=3, fractions=(0.6, 0.2, 0.2))
    assert a == make_splits(list(reversed(IDS)), seed=3, fractions=(0.6, 0.2, 0.2))
    assert a != make_splits(IDS, seed=4, fractions=(0.6, 0.2, 0.2))


def test_imagests_is_the_test_split():
    s = make_splits(IDS[:10], test=["t1", "t0"], seed=0, fractions=(0.6, 0.2, 0.2))
    assert s["test"] == ["t0", "t1"]
    # val share 0.2 / (0.6 + 0.2) of 10 = 2.5 -> 3 (halves round up), train gets the rest
    assert len(s["val"]) == 3 and len(s["train"]) == 7


def test_splits_final_fold0(tmp_path):
    path = tmp_path / "splits_final.json"
    folds = [{"train": IDS[:20], "val": IDS[20:]}, {"train": IDS[10:], "val": IDS[:10]}]
    path.write_text(json.dumps(folds))
    s = make_splits(IDS, test=["t0"], splits_file=path)
    assert s == {"train": IDS[:20], "val": IDS[20:], "test": ["t0"]}
    # Without imagesTs the held-out test share is removed from the fold.
    s = make_splits(IDS, seed=0, fractions=(0.6, 0.2, 0.2), splits_file=path)
    assert len(s["test"]) == 6 and not set(s["test"]) & set(s["train"] + s["val"])


def test_splits_file_from_another_dataset(tmp_path):
    path = tmp_path / "splits_final.json"
    path.write_text(json.dumps([{"train": ["zz"], "val": []}]))
    with pytest.raises(SplitError, match="zz"):
        make_splits(IDS, splits_file=path)
    path.write_text(json.dumps({"train": IDS}))
    with pytest.raises(SplitError, match="fold 0"):
        make_splits(IDS, splits_file=path)
    with pytest.raises(SplitError, match="does not exist"):
        make_splits(IDS, splits_file=tmp_path / "nope.json")


def test_dataset_splits_auto_file(tmp_path, kit):
    root = kit.write_nnunet(tmp_path, n_cases=6, n_test=1)
    ids = [f"tiny_tr{i:02d}" for i in range(6)]
    (root / "splits_final.json").write_text(json.dumps([{"train": ids[:4], "val": ids[4:]}] * 5))
    ds = open_dataset(kit.nnunet_cfg(root, split={"splits_file": "auto"}))
    assert ds.split("train") == ids[:4] and ds.split("val") == ids[4:]
    assert ds.split("test") == ["tiny_ts00"]
    with pytest.raises(SplitError, match="unknown split"):
        ds.split("holdout")


def test_empty_train_split_is_an_error():
    with pytest.raises(SplitError, match="train split is empty"):
        make_splits(["a", "b"], fractions=(0.2, 0.4, 0.4))
