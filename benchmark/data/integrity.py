"""Check a whole dataset up front, as nnU-Net's ``--verify_dataset_integrity`` does.

Opening a dataset reads only NIfTI headers; a truncated file or a label value that
``dataset.json`` does not declare would otherwise surface only when its case is reached, perhaps
hours into a sweep. :func:`verify_index` reads every case once, fully, and reports every problem
at once: each file exists and reads to the end, image channels and label share one voxel grid,
label values are integers that ``dataset.json`` declares, image voxels are finite.

Cases that pass are recorded in ``<cache>/verified/<root key>.json`` with the size and
modification time of each of their files, so the next run re-reads only cases whose files
changed. ``python -m benchmark.data verify ROOT`` runs the same check from the shell.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from benchmark.data.cache import atomic_write, cache_root, file_lock, stable_hash
from benchmark.data.errors import DatasetError, ImageReadError, UnknownLabelError
from benchmark.data.reader import CaseFiles, DatasetIndex, check_headers, read_dataset, read_header

__all__ = [
    "INTEGRITY_VERSION",
    "DatasetIntegrityError",
    "IntegrityReport",
    "dataset_layout",
    "check_case",
    "ensure_verified",
    "summary_line",
    "verify_dataset",
    "verify_index",
]

log = logging.getLogger(__name__)

# Bump when the checks change, so datasets verified by older checks are verified again.
INTEGRITY_VERSION = 1
# dataset.json of the built-in generators carries a record under a key with this prefix.
GENERATED_KEY_PREFIX = "medqbench_"
_MAX_LISTED = 20


class DatasetIntegrityError(DatasetError):
    """Cases of a dataset fail the integrity check (of more than one kind, or non-finite data)."""


@dataclass(frozen=True)
class IntegrityReport:
    """Outcome of a check.

    Attributes:
        root: the dataset folder.
        n_cases: cases in the dataset (training and labelled test).
        n_read: cases read by this check (the others passed before with unchanged files).
        problems: one error per failing case, each naming its file and the fix.
    """

    root: Path
    n_cases: int
    n_read: int
    problems: list[DatasetError] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether every case passed."""
        return not self.problems

    def error(self) -> DatasetError:
        """One exception listing every problem: of their common type, else the integrity type."""
        kinds = {type(p) for p in self.problems}
        kind = kinds.pop() if len(kinds) == 1 else DatasetIntegrityError
        lines = [f"  {p}" for p in self.problems[:_MAX_LISTED]]
        if len(self.problems) > _MAX_LISTED:
            lines.append(f"  ... and {len(self.problems) - _MAX_LISTED} more")
        head = (
            f"{len(self.problems)} of {self.n_cases} cases of {self.root} fail the integrity "
            f"check; fix them, then `python -m benchmark.data verify {self.root}` checks again"
        )
        return kind("\n".join([head, *lines]))


def dataset_layout(folder: Path) -> str | None:
    """What ``folder`` holds: ``nnunet_raw``, ``msd``, ``generated`` (by a built-in generator),
    ``raw_without_json`` (``imagesTr``/``labelsTr`` but no ``dataset.json``) or ``None``.

    Judged from ``dataset.json``'s keys, as the reader does: ``channel_names`` means nnU-Net v2,
    ``modality`` with ``training`` the Decathlon layout.
    """
    meta_file = folder / "dataset.json"
    if not meta_file.is_file():
        if (folder / "imagesTr").is_dir() or (folder / "labelsTr").is_dir():
            return "raw_without_json"
        return None
    try:
        meta = json.loads(meta_file.read_text())
    except (OSError, ValueError):
        meta = None
    if not isinstance(meta, dict):
        return "raw_without_json"
    if any(str(k).startswith(GENERATED_KEY_PREFIX) for k in meta):
        return "generated"
    if "channel_names" in meta:
        return "nnunet_raw"
    if "modality" in meta or "training" in meta:
        return "msd"
    return "raw_without_json"


def _voxels(path: Path) -> np.ndarray:
    """All voxel values of a NIfTI file; any failure (truncation, bad compression) named.

    A ``.gz`` file is first decompressed to its end, where gzip's CRC-32 is checked: nibabel
    stops once it has the voxels, so damaged compressed data could otherwise load as wrong
    values without any error.
    """
    image = read_header(path)
    try:
        if path.name.endswith(".gz"):
            with gzip.open(path, "rb") as stream:
                while stream.read(1 << 24):
                    pass
        return np.asanyarray(image.dataobj)
    except Exception as exc:  # zlib, EOFError, ValueError ...: the file cannot be read to the end
        reason = " ".join(str(exc).split())  # nibabel's messages span lines
        raise ImageReadError(
            f"cannot read the voxel data of {path}: {reason}; the file is corrupt or truncated, "
            "re-export or re-download it"
        ) from exc


def check_case(case: CaseFiles, labels: Mapping[int, str], n_channels: int) -> DatasetError | None:
    """The first problem of one case, or ``None`` when it is usable."""
    try:
        check_headers(case, n_channels)
        label = _voxels(case.label)
        values = np.unique(label)
        if not np.all(np.equal(np.mod(values, 1), 0)):
            raise UnknownLabelError(
                f"label file {case.label} holds non-integer values {values[:5].tolist()}; labels "
                "must be integer class ids"
            )
        unknown = sorted(int(v) for v in values if int(v) not in labels)
        if unknown:
            raise UnknownLabelError(
                f"label file {case.label} holds values {unknown} that dataset.json 'labels' does "
                f"not declare (declared: {sorted(labels)}); add them to dataset.json or fix the "
                "label"
            )
        del label
        for path in case.images:
            image = _voxels(path)
            if np.issubdtype(image.dtype, np.floating) and not np.isfinite(image).all():
                raise DatasetIntegrityError(
                    f"image {path} holds NaN or infinite voxels; replace them (e.g. by the "
                    "background intensity) before use"
                )
    except DatasetError as exc:
        return exc
    return None


def _fingerprint(case: CaseFiles) -> str | None:
    """Hash of each file's path, size and modification time; ``None`` if one is missing."""
    files = []
    for path in (*case.images, case.label):
        try:
            stat = os.stat(path)
        except OSError:
            return None
        files.append((str(path), stat.st_size, stat.st_mtime_ns))
    return stable_hash(files, length=20)


def _record_path(index: DatasetIndex, cache_dir: str | Path | None) -> Path:
    key = stable_hash(str(index.root.expanduser().resolve()))
    return cache_root(cache_dir) / "verified" / f"{index.root.name}-{key}.json"


def _dataset_key(index: DatasetIndex) -> str:
    return stable_hash(
        {
            "labels": sorted(index.labels),
            "channels": list(index.channel_names),
            "version": INTEGRITY_VERSION,
        }
    )


def _load_record(path: Path, dataset_key: str) -> dict[str, str]:
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(record, dict) or record.get("dataset") != dataset_key:
        return {}
    cases = record.get("cases")
    return dict(cases) if isinstance(cases, dict) else {}


def verify_index(
    index: DatasetIndex,
    cache_dir: str | Path | None = None,
    force: bool = False,
    workers: int | None = None,
) -> IntegrityReport:
    """Check every case of an indexed dataset; cases unchanged since they passed are skipped.

    Args:
        index: what :func:`benchmark.data.reader.read_dataset` found.
        cache_dir: cache folder (``None``: ``$MEDQBENCH_CACHE`` or ``~/.cache/medqbench``).
        force: read every case, whatever the record says.
        workers: threads reading cases (decompression runs outside the GIL); ``None`` = up to 4.

    Returns:
        The report; passing cases are recorded, failing ones are read again next time.
    """
    cases = {**index.training, **index.test}
    record_path = _record_path(index, cache_dir)
    dataset_key = _dataset_key(index)
    # one checker per dataset at a time: parallel jobs of a sweep wait, then find the record
    with file_lock(record_path.with_name(f".{record_path.name}.lock"), timeout_s=None):
        passed = {} if force else _load_record(record_path, dataset_key)
        prints = {cid: _fingerprint(case) for cid, case in cases.items()}
        todo = [
            cid for cid in sorted(cases) if prints[cid] is None or passed.get(cid) != prints[cid]
        ]
        if todo:
            log.info(
                "checking the integrity of %d of %d cases in %s (each case once; unchanged cases "
                "are not read again)",
                len(todo),
                len(cases),
                index.root,
            )
        n_workers = workers or min(4, os.cpu_count() or 1)
        with ThreadPoolExecutor(max(1, min(n_workers, len(todo) or 1))) as pool:
            found = list(
                pool.map(
                    lambda c: check_case(cases[c], index.labels, len(index.channel_names)), todo
                )
            )
        problems = [p for p in found if p is not None]
        passed = {cid: passed[cid] for cid in cases if cid in passed and passed[cid] == prints[cid]}
        passed.update({cid: prints[cid] for cid, p in zip(todo, found, strict=True) if p is None})
        if todo:
            body = {"root": str(index.root), "dataset": dataset_key, "cases": passed}
            atomic_write(record_path, lambda tmp: tmp.write_text(json.dumps(body, indent=1)))
    return IntegrityReport(index.root, len(cases), len(todo), problems)


def ensure_verified(index: DatasetIndex, cache_dir: str | Path | None = None) -> IntegrityReport:
    """:func:`verify_index`, raising when a case fails.

    Raises:
        DatasetError: listing every failing case (see :meth:`IntegrityReport.error`).
    """
    report = verify_index(index, cache_dir)
    if not report.ok:
        raise report.error()
    return report


def verify_dataset(
    root: str | Path,
    fmt: str = "auto",
    cache_dir: str | Path | None = None,
    force: bool = False,
    workers: int | None = None,
) -> IntegrityReport:
    """Index and check the dataset folder ``root``.

    Args:
        root: the folder holding ``dataset.json``.
        fmt: ``nnunet_raw``, ``msd`` or ``auto`` (from ``dataset.json``'s keys).
        cache_dir, force, workers: as :func:`verify_index`.

    Raises:
        DatasetError: the folder cannot be indexed at all (no ``dataset.json``, a declared file
            missing, ...): reported before any case is read.
    """
    root = Path(root).expanduser()
    if fmt == "auto":
        layout = dataset_layout(root) if root.is_dir() else None
        fmt = "msd" if layout == "msd" else "nnunet_raw"
    return verify_index(read_dataset(root, fmt), cache_dir, force, workers)


def summary_line(report: IntegrityReport) -> str:
    """``ROOT: 30 cases, all pass (30 read, 0 unchanged since they last passed)``."""
    state = "all pass" if report.ok else f"{len(report.problems)} fail"
    return (
        f"{report.root}: {report.n_cases} cases, {state} ({report.n_read} read, "
        f"{report.n_cases - report.n_read} unchanged since they last passed)"
    )
