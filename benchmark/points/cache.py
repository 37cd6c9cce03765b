"""File caches shared by the jobs of a sweep: FP32 predictions and calibration ranges.

Entries are keyed by the sha256 of everything that determines them (model config and weights,
dataset config, inference or quantization settings), so an entry is valid for every sweep and
experiment that asks for the same thing. Parallel workers (joblib, SLURM array tasks) may ask for
the same entry at once: each entry is computed under an inter-process file lock
(:func:`benchmark.data.cache.file_lock`: removed by its holder on release, and released by the OS
when a process dies, so no lock is ever stale) and written to a temporary name, then renamed.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from benchmark.data.cache import file_lock
from benchmark.results import atomic_write_bytes, config_hash

__all__ = [
    "cache_root",
    "checkpoint_fingerprint",
    "content_digest",
    "entry_key",
    "load_labels",
    "locked",
    "save_labels",
]


#: files up to this size enter :func:`content_digest` whole
_WHOLE_FILE_BYTES = 256 << 20


def cache_root(cache_dir: str | None) -> Path:
    """The cache folder: ``cache_dir``, else ``$MEDQBENCH_CACHE``, else ``~/.cache/medqbench``."""
    if cache_dir:
        return Path(cache_dir).expanduser()
    env = os.environ.get("MEDQBENCH_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "medqbench"


def entry_key(*parts: Any) -> str:
    """Cache key (24 hex characters) of JSON-serialisable parts, e.g. configs as dicts."""
    return config_hash({"parts": list(parts)})[:24]


@contextlib.contextmanager
def locked(path: str | os.PathLike[str], timeout_s: float | None = None) -> Iterator[None]:
    """Hold an exclusive inter-process lock on ``path`` for the ``with`` body.

    The lock file is ``<folder>/.locks/<name>.lock``, out of the way of globs over the folder,
    and is removed on release (the ``.locks`` folder stays, so the folder itself is untouched
    by runs that only check for their results). Files that killed processes left in the same
    ``.locks`` folder are removed too. ``timeout_s=0`` tries once; ``None`` (the default)
    waits as long as it takes.

    Raises:
        TimeoutError: another process held the lock for ``timeout_s`` seconds.
    """
    path = Path(path)
    lock_path = path.parent / ".locks" / f"{path.name}.lock"
    with file_lock(lock_path, timeout_s=timeout_s):
        yield
    _remove_stale(lock_path.parent)


def _remove_stale(lock_dir: Path) -> None:
    """Take and so remove every lock in ``lock_dir`` that no live process holds."""
    for stale in sorted(lock_dir.glob("*.lock")):
        with contextlib.suppress(TimeoutError, OSError):  # held: its process is alive
            with file_lock(stale, timeout_s=0):
                pass


def checkpoint_fingerprint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Identity of a weights file or folder (nnU-Net trained-model folders) for cache keys.

    Files: path, size, mtime and a hash of the first MiB. Hashing whole multi-GB checkpoints
    (STU-Net-H) would cost more than many cache hits save; size plus mtime plus the leading
    bytes catches replaced or retrained files in practice. Folders: the same for every file.

    Raises:
        FileNotFoundError: ``path`` does not exist (named in the message).
    """
    path = Path(path).expanduser().resolve()
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} does not exist; check model.checkpoint")
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file())
        return {"path": str(path), "files": [_file_identity(p, path) for p in files]}
    return {"path": str(path), **_file_identity(path, path.parent)}


def content_digest(path: str | os.PathLike[str]) -> str:
    """16 hex digits naming what a weights file or folder holds, not where it lies or when it was
    written (:func:`checkpoint_fingerprint` without path and times), so a clone or a copy of a
    checkpoint keeps its digest and only other weights change it. A file up to 256 MiB is hashed
    whole; the files of a folder (nnU-Net results, MONAI bundles, with their logs and validation
    outputs) and larger files enter by size and first MiB, as in the fingerprint: retrained
    weights change both.

    Raises:
        FileNotFoundError: ``path`` does not exist (named in the message).
    """
    fingerprint = checkpoint_fingerprint(path)
    if "files" in fingerprint:  # which file holds what matters
        content = [(f["name"], f["bytes"], f["head"]) for f in fingerprint["files"]]
    elif fingerprint["bytes"] > _WHOLE_FILE_BYTES:  # the name of a single file does not
        content = [(fingerprint["bytes"], fingerprint["head"])]
    else:
        content = [_whole_file_hash(Path(fingerprint["path"]), fingerprint["bytes"])]
    return hashlib.sha256(repr(content).encode()).hexdigest()[:16]


def _whole_file_hash(path: Path, size: int) -> str:
    digest = hashlib.sha256(str(size).encode())
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _file_identity(path: Path, root: Path) -> dict[str, Any]:
    stat = path.stat()
    with open(path, "rb") as fh:
        head = hashlib.sha256(fh.read(1 << 20)).hexdigest()
    return {
        "name": str(path.relative_to(root)),
        "bytes": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "head": head,
    }


def save_labels(path: str | os.PathLike[str], labels: np.ndarray) -> Path:
    """Atomically store an integer label map (``[D, H, W]``) as a compressed ``.npz``."""
    import io

    buffer = io.BytesIO()
    dtype = np.uint8 if labels.max(initial=0) < 256 and labels.min(initial=0) >= 0 else np.int32
    np.savez_compressed(buffer, labels=labels.astype(dtype))
    return atomic_write_bytes(path, buffer.getvalue())


def load_labels(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a label map written by :func:`save_labels`."""
    with np.load(path) as archive:
        return archive["labels"]
