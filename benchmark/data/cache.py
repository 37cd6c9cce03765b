"""On-disk cache helpers: where the cache lives, stable keys, atomic writes, a cross-process lock.

Every file is written to a temporary name in its final folder and moved into place with
``os.replace``, so a reader sees either nothing or a complete file, and concurrent writers of
the same (deterministic) content cannot corrupt each other.

The lock (:func:`file_lock`) is an ``flock`` on a lock file that its holder deletes before
releasing, so finished or failed work leaves no lock files behind. A process that is killed
leaves its file, but the OS has dropped the ``flock``: the next caller takes it at once and
deletes it in turn.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from filelock import FileLock

try:
    import fcntl
except ImportError:  # Windows: filelock's own lock, which removes its file on release there
    fcntl = None  # type: ignore[assignment]

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
def file_lock(path: Path, timeout_s: float | None = 3600.0) -> Iterator[None]:
    """Hold an inter-process lock on ``path`` for the ``with`` body, then remove ``path``.

    ``timeout_s=0`` tries once; ``None`` waits as long as it takes. Waiters that wake on a file
    its holder has just deleted see that the path no longer names the file they locked and start
    over on the new one.

    Raises:
        TimeoutError: another process held the lock for ``timeout_s`` seconds (named).
    """
    path = Path(path)
    if fcntl is None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(path), timeout=-1 if timeout_s is None else timeout_s):
            yield
        return
    fd = _acquire(path, timeout_s)
    try:
        yield
    finally:
        try:
            path.unlink(missing_ok=True)
        finally:
            os.close(fd)  # drops the flock


def _acquire(path: Path, timeout_s: float | None) -> int:
    """An open descriptor of ``path`` holding its ``flock``, ``path`` still naming that file."""
    deadline = float("inf") if timeout_s is None else time.monotonic() + timeout_s
    while True:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except FileNotFoundError:  # the folder was removed between mkdir and open
            continue
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError as exc:  # some file systems say EACCES for "held"
                    if exc.errno not in (errno.EAGAIN, errno.EACCES):
                        raise
                    if time.monotonic() >= deadline:
                        raise TimeoutError(
                            f"{path} is locked by another process for more than {timeout_s:g} s; "
                            "wait for it to finish, or stop it"
                        ) from None
                    time.sleep(0.05)
            held = os.fstat(fd)
            current = os.stat(path)
        except FileNotFoundError:  # deleted by the holder we waited for: start over
            os.close(fd)
            continue
        except BaseException:
            os.close(fd)
            raise
        if (held.st_dev, held.st_ino) == (current.st_dev, current.st_ino):
            return fd
        os.close(fd)
