"""The weights digest every run records: what a checkpoint holds, not where or when it was
written; and the report's warning when one model's rows come from two sets of weights."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pandas as pd

from benchmark.models import shipped_weights_path
from benchmark.points.cache import content_digest
from benchmark.report.__main__ import main as report_main
from benchmark.report.weights import mixed_weights_notes, unshipped_weights_notes

DEMO = Path(__file__).resolve().parents[2] / "results" / "demo" / "results.parquet"


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


def _results(*rows):
    """Result rows from (model, weights, run_id, created) tuples."""
    return pd.DataFrame(rows, columns=["model", "weights", "run_id", "created"])


def test_report_warns_only_for_models_with_two_sets_of_weights():
    results = _results(
        ("tiny_unet", "aaaa", "old-run", "2026-01-01T00:00:00"),
        ("tiny_unet", "bbbb", "new-run", "2026-02-01T00:00:00"),
        ("tiny_unet", "bbbb", "new-run-2", "2026-02-02T00:00:00"),
        ("tiny_swin", "cccc", "swin-run", "2026-01-01T00:00:00"),
        ("tiny_swin", None, "legacy-run", "2025-01-01T00:00:00"),
    )
    notes = mixed_weights_notes(results)
    assert len(notes) == 1
    assert "tiny_unet" in notes[0] and "old-run" in notes[0] and "(bbbb)" in notes[0]
    assert mixed_weights_notes(results.drop(columns="weights")) == []


def test_report_warns_for_rows_made_with_other_than_the_shipped_weights():
    results = _results(
        ("tiny_unet", "aaaa", "old-run", "2026-01-01T00:00:00"),
        ("tiny_unet", "bbbb", "new-run", "2026-02-01T00:00:00"),
        ("tiny_swin", "cccc", "swin-run", "2026-01-01T00:00:00"),
        ("user_net", "dddd", "user-run", "2026-01-01T00:00:00"),
    )
    shipped = {"tiny_unet": "bbbb", "tiny_swin": "cccc"}
    notes = unshipped_weights_notes(results, shipped)
    assert len(notes) == 1
    assert "1 tiny_unet run(s)" in notes[0] and "aaaa" in notes[0] and "(bbbb)" in notes[0]
    assert unshipped_weights_notes(results, {"tiny_unet": "aaaa"})[0].count("bbbb") == 1


def test_report_command_compares_rows_with_the_weights_shipped_today(tmp_path, capsys):
    rows = pd.read_parquet(DEMO)
    swin = content_digest(shipped_weights_path("tiny_swinunetr"))
    rows["weights"] = rows["model"].map({"tiny_swinunetr": swin, "tiny_nnunet": "0123abcd"})
    path = tmp_path / "results.parquet"
    rows.to_parquet(path, index=False)
    assert report_main([str(path)]) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if "shipped" in line]
    assert len(warnings) == 1
    assert "tiny_nnunet" in warnings[0] and "0123abcd" in warnings[0]
