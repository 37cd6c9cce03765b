"""The weights digest every run records: what a checkpoint holds, not where or when it was
written; and the report's warning when one model's rows come from two sets of weights."""

from __future__ import annotations

import os
import shutil

import pandas as pd

from benchmark.points.cache import content_digest
from benchmark.report.weights import mixed_weights_notes


def test_digest_follows_content_not_path_or_time(tmp_path):
    original = tmp_path / "a" / "model.pt"
    original.parent.mkdir()
    original.write_bytes(bytes(range(256)) * 8192)
    copy = tmp_path / "b" / "renamed.pt"
    copy.parent.mkdir()
    shutil.copyfile(original, copy)
    os.utime(copy, (1, 1))
    assert content_digest(copy) == content_digest(original)
    changed = bytearray(original.read_bytes())
    changed[-1] ^= 1  # past the first MiB: small files are hashed whole
    copy.write_bytes(bytes(changed))
    assert content_digest(copy) != content_digest(original)


def test_folder_digest_names_which_file_holds_what(tmp_path):
    folder = tmp_path / "results"
    (folder / "fold_0").mkdir(parents=True)
    (folder / "plans.json").write_text("{}")
    (folder / "fold_0" / "checkpoint_final.pth").write_bytes(b"weights")
    before = content_digest(folder)
    moved = tmp_path / "elsewhere"
    shutil.copytree(folder, moved)
    assert content_digest(moved) == before
    (moved / "fold_0" / "checkpoint_final.pth").rename(moved / "fold_0" / "checkpoint_best.pth")
    assert content_digest(moved) != before


def _rows(model, weights, run_id, created):
    return {"model": model, "weights": weights, "run_id": run_id, "created": created}


def test_report_warns_only_for_models_with_two_sets_of_weights():
    results = pd.DataFrame(
        [
            _rows("tiny_unet", "aaaa", "old-run", "2026-01-01T00:00:00"),
            _rows("tiny_unet", "bbbb", "new-run", "2026-02-01T00:00:00"),
            _rows("tiny_unet", "bbbb", "new-run-2", "2026-02-02T00:00:00"),
            _rows("tiny_swin", "cccc", "swin-run", "2026-01-01T00:00:00"),
            _rows("tiny_swin", None, "legacy-run", "2025-01-01T00:00:00"),
        ]
    )
    notes = mixed_weights_notes(results)
    assert len(notes) == 1
    assert "tiny_unet" in notes[0] and "old-run" in notes[0] and "(bbbb)" in notes[0]
    assert mixed_weights_notes(results.drop(columns="weights")) == []
