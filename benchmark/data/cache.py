"""On-disk cache helpers: where the cache lives, stable keys, atomic writes, a cross-process lock.

Every file is written to a temporary name in its final folder and moved into place with
``os.replace``, so a reader sees either nothing or a complete file, and concurrent writers of
the same (deterministic) content cannot corrupt each other.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from filelock import FileLock

__all__ = ["atomic_write", "cache_root", "file_lock", "load_npz", "save_npz", "stable_hash"]


def cache_root(cache_dir: str | Path | None = None) -> Path:
    """The cache folder: ``cache_dir``, else ``$MEDQBENCH_CACHE``, else ``~/.cache/medqbench``."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get("MEDQBENCH_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "medqbench"


def stable_hash(obj: Any, length: int = 12) -> str:
    """Hex digest of a JSON-serialisable object (key order does not matter)."""
    text = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def atomic_write(path: Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` and move the result to ``path`` in one rename.

    The temporary file sits in the destination folder (same file system, so the rename is
    atomic) and is removed if ``write`` fails.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def save_npz(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    """Write arrays uncompressed (fast to reload) and atomically."""

    def _write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)

    return atomic_write(path, _write)


def load_npz(path: Path) -> dict[str, np.ndarray]:
    """Read every array of an ``.npz`` written by :func:`save_npz` (no pickles)."""
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


@contextmanager
def file_lock(path: Path, timeout_s: float = 3600.0) -> Iterator[None]:
    """Hold an inter-process lock on ``path`` (created if needed) for the ``with`` body."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path), timeout=timeout_s):
        yield
