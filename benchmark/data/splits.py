"""Deterministic train / val / test case lists.

Rules (also in ``conf/data/*.yaml``):

* **Test** is the labelled ``imagesTs``/``labelsTs`` cases when the dataset has any; otherwise a
  held-out share of the training cases (``fractions[2]``), drawn first from a seeded shuffle.
* **Train / val** come from nnU-Net's ``splits_final.json`` fold 0 when a splits file is given
  (cases held out as test are removed from both); otherwise from the same seeded shuffle with
  the ``fractions[0] : fractions[1]`` ratio.

The shuffle is ``numpy.random.default_rng(seed).permutation`` of the sorted case ids, so the
lists depend only on the seed, the fractions and the set of case ids.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from benchmark.data.errors import SplitError

__all__ = ["SPLITS", "make_splits", "read_splits_file"]

SPLITS = ("train", "val", "test")


def _round_half_up(x: float) -> int:
    return int(math.floor(x + 0.5 + 1e-9))


def read_splits_file(path: str | Path, fold: int = 0) -> tuple[list[str], list[str]]:
    """Train and val case ids of one fold of nnU-Net's ``splits_final.json``.

    The file is a list of ``{"train": [...], "val": [...]}``, one entry per fold.

    Raises:
        SplitError: the file is missing, malformed, or has no such fold.
    """
    path = Path(path)
    if not path.is_file():
        raise SplitError(
            f"splits file {path} does not exist; set data.split.splits_file=null or fix it"
        )
    try:
        folds = json.loads(path.read_text())
        entry = folds[fold]
        return [str(c) for c in entry["train"]], [str(c) for c in entry["val"]]
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise SplitError(
            f"{path} is not an nnU-Net splits_final.json with fold {fold} "
            f"([{{'train': [...], 'val': [...]}}, ...]): {exc!r}"
        ) from exc


def make_splits(
    training: Sequence[str],
    test: Sequence[str] = (),
    seed: int = 0,
    fractions: Sequence[float] = (0.6, 0.13, 0.27),
    splits_file: str | Path | None = None,
) -> dict[str, list[str]]:
    """Assign case ids to ``train``/``val``/``test``.

    Args:
        training: ids of labelled training cases (``imagesTr``).
        test: ids of labelled test cases (``imagesTs``); when non-empty they are the test split.
        seed: shuffle seed.
        fractions: ``[train, val, test]`` shares; ``round(n * share)`` cases (halves up) go to
            val and test, the rest to train.
        splits_file: nnU-Net ``splits_final.json``; fold 0 gives train and val.

    Returns:
        ``{"train": [...], "val": [...], "test": [...]}``, each list sorted.

    Raises:
        SplitError: a splits file names unknown cases, or the train split would be empty.
    """
    ids = sorted(str(c) for c in training)
    order = [ids[i] for i in np.random.default_rng(seed).permutation(len(ids))]
    if test:
        test_ids = sorted(str(c) for c in test)
        pool = order
        f_train, f_val = fractions[0], fractions[1]
        val_share = f_val / (f_train + f_val)
    else:
        n_test = _round_half_up(len(ids) * fractions[2])
        test_ids, pool = sorted(order[:n_test]), order[n_test:]
        val_share = fractions[1] * len(ids) / max(len(pool), 1)
    if splits_file is not None:
        train_ids, val_ids = read_splits_file(splits_file)
        unknown = sorted(set(train_ids + val_ids) - set(ids))
        if unknown:
            raise SplitError(
                f"{splits_file} names cases that are not labelled training cases: {unknown[:5]}; "
                "it belongs to another dataset"
            )
        held = set(test_ids)
        train_ids = [c for c in train_ids if c not in held]
        val_ids = [c for c in val_ids if c not in held]
    else:
        n_val = _round_half_up(len(pool) * val_share)
        val_ids, train_ids = pool[:n_val], pool[n_val:]
    if not train_ids:
        raise SplitError(
            f"the train split is empty ({len(ids)} training cases, fractions {list(fractions)}); "
            "use more cases or a larger train fraction"
        )
    return {"train": sorted(train_ids), "val": sorted(val_ids), "test": sorted(test_ids)}
