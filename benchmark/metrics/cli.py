"""``python -m benchmark.metrics PRED GT``: score NIfTI predictions against references.

PRED and GT are two NIfTI files or two folders of NIfTI files with matching names. Spacing comes
from each reference header (``header.get_zooms()``, in mm along the array axes); prediction and
reference must share shape and affine, and hold integer labels. Output: a per-case, per-class
table, or with ``--json`` a list of records ``{"case", "class", "dsc", "nsd", "hd95", "status",
"tolerance_mm"}`` in which NaN and infinite values are written as ``null`` (``status`` says why:
``both_empty``, ``gt_empty`` or ``pred_empty``).
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np

from benchmark.metrics._checks import integer_valued
from benchmark.metrics.scoring import score_case

__all__ = ["MetricsInputError", "load_label_map", "main", "pair_files", "score_files"]

_SUFFIXES = (".nii.gz", ".nii")


class MetricsInputError(ValueError):
    """Inputs the CLI cannot score; the message names the files involved."""


def _case_name(path: Path) -> str:
    for suffix in _SUFFIXES:
        if path.name.endswith(suffix):
            return path.name[: -len(suffix)]
    return path.name


def _nifti_files(folder: Path) -> dict[str, Path]:
    return {p.name: p for p in sorted(folder.iterdir()) if p.name.endswith(_SUFFIXES)}


def pair_files(pred: Path, gt: Path) -> list[tuple[str, Path, Path]]:
    """``(case, pred_file, gt_file)`` for two files or two folders matched by file name.

    Raises:
        MetricsInputError: If a path is missing, the two are not both files or both folders,
            or a file has no counterpart in the other folder.
    """
    for path in (pred, gt):
        if not path.exists():
            raise MetricsInputError(f"{path} does not exist.")
    if pred.is_file() and gt.is_file():
        return [(_case_name(gt), pred, gt)]
    if not (pred.is_dir() and gt.is_dir()):
        raise MetricsInputError(
            f"PRED {pred} and GT {gt} must both be NIfTI files or both be folders."
        )
    preds, gts = _nifti_files(pred), _nifti_files(gt)
    missing_pred = sorted(set(gts) - set(preds))
    missing_gt = sorted(set(preds) - set(gts))
    if missing_pred or missing_gt:
        raise MetricsInputError(
            f"files without a counterpart: in {gt} but not {pred}: {missing_pred}; "
            f"in {pred} but not {gt}: {missing_gt}."
        )
    if not gts:
        raise MetricsInputError(f"no .nii or .nii.gz files in {gt}.")
    return [(_case_name(gts[name]), preds[name], gts[name]) for name in sorted(gts)]


def _check_gzip_stream(path: Path) -> None:
    """Decompress a ``.gz`` file to its end, where gzip's CRC-32 catches damaged data.

    nibabel stops reading once it has the voxels it needs, before the checksum, so a corrupt
    byte inside the compressed data could otherwise become a wrong label without any error.
    """
    if path.name.endswith(".gz"):
        with gzip.open(path, "rb") as stream:
            while stream.read(1 << 24):
                pass


def load_label_map(path: Path) -> tuple[np.ndarray, np.ndarray, tuple[float, ...]]:
    """Integer label array, affine and spacing (mm, array-axis order) of a NIfTI label map.

    Raises:
        MetricsInputError: If the file cannot be read to its end (truncated, broken compression
            or checksum, not NIfTI, unknown data type) or holds values that are not integer
            labels.
    """
    try:
        _check_gzip_stream(path)
        with nib.imageglobals.LoggingOutputSuppressor():  # nibabel also logs what it raises
            image = nib.load(str(path))
            data = np.asanyarray(image.dataobj)
    except Exception as err:  # nibabel, gzip, zlib and numpy raise many types on a broken file
        kind = type(err).__name__
        kind = f"{type(err).__module__}.{kind}" if kind.islower() else kind  # zlib.error
        reason = " ".join(str(err).split())  # nibabel's messages span lines
        raise MetricsInputError(
            f"{path} is not a readable NIfTI file ({kind}: {reason}); it is truncated, corrupt "
            "or not NIfTI: write or export it again"
        ) from err
    try:
        data = integer_valued(str(path), data)
    except (TypeError, ValueError) as err:
        raise MetricsInputError(str(err)) from err
    spacing = tuple(float(z) for z in image.header.get_zooms()[: data.ndim])
    return data, image.affine, spacing


def score_files(
    pred_path: Path,
    gt_path: Path,
    tolerance_mm: float,
    labels: Sequence[int] | None = None,
) -> list[dict]:
    """Records ``{case, class, dsc, nsd, hd95, status, tolerance_mm}`` for one file pair.

    Args:
        pred_path: predicted label map.
        gt_path: reference label map.
        tolerance_mm: NSD tolerance in mm.
        labels: classes to score; default every label > 0 in either file.

    Raises:
        MetricsInputError: On shape or affine mismatch, or non-integer labels.
    """
    pred, pred_affine, _ = load_label_map(pred_path)
    gt, gt_affine, spacing = load_label_map(gt_path)
    if pred.shape != gt.shape:
        raise MetricsInputError(
            f"shape mismatch: {pred_path} is {pred.shape}, {gt_path} is {gt.shape}."
        )
    if not np.allclose(pred_affine, gt_affine, atol=1e-4):
        raise MetricsInputError(
            f"affine mismatch between {pred_path} and {gt_path}: the prediction is not on the "
            f"reference grid.\npred:\n{pred_affine}\ngt:\n{gt_affine}"
        )
    if labels is None:
        labels = sorted(int(v) for v in np.union1d(np.unique(pred), np.unique(gt)) if v > 0)
    if not labels:
        return []
    case = _case_name(gt_path)
    records: dict[int, dict] = {}
    for row in score_case(pred, gt, spacing, labels, tolerance_mm):
        record = records.setdefault(row["class"], {"case": case, "class": row["class"]})
        record[row["metric"]] = row["value"]
        record["status"] = row["status"]
    for record in records.values():
        record["tolerance_mm"] = float(tolerance_mm)
        record["status"] = record.pop("status")  # last, after the metric values
    return list(records.values())


def _json_safe(record: dict) -> dict:
    return {
        k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()
    }


def _table(records: list[dict]) -> str:
    width = max([len("case")] + [len(r["case"]) for r in records])
    lines = [f"{'case':<{width}}  class     dsc     nsd    hd95  status"]
    for r in records:
        lines.append(
            f"{r['case']:<{width}}  {r['class']:>5}  {r['dsc']:6.4f}  {r['nsd']:6.4f}  "
            f"{r['hd95']:6.2f}  {r['status']}"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m benchmark.metrics``; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmark.metrics",
        description="DSC, NSD and HD95 of NIfTI label maps (a file pair or two folders).",
    )
    parser.add_argument("pred", type=Path, help="predicted label map file or folder")
    parser.add_argument("gt", type=Path, help="reference label map file or folder")
    parser.add_argument(
        "--tolerance", type=float, default=2.0, metavar="MM", help="NSD tolerance in mm (2.0)"
    )
    parser.add_argument(
        "--labels", type=int, nargs="+", help="classes to score (default: all labels > 0 found)"
    )
    parser.add_argument("--json", action="store_true", help="print JSON records instead")
    args = parser.parse_args(argv)
    try:
        records = []
        for _, pred_file, gt_file in pair_files(args.pred, args.gt):
            records.extend(score_files(pred_file, gt_file, args.tolerance, args.labels))
    except (ValueError, TypeError) as err:  # MetricsInputError is a ValueError
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps([_json_safe(r) for r in records], indent=1))
    else:
        print(f"NSD tolerance {args.tolerance} mm; HD95 in mm")
        print(_table(records))
    return 0
