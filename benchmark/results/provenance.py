"""Where a result came from: code version, machine, time, and the hash of the resolved config.

Hydra composes every job's config lazily, so a sweep left queued while ``conf/`` or the code
changes can mix versions; every run therefore records the commit and whether the working tree
was dirty, and is identified by the hash of the config it actually ran with.
"""

from __future__ import annotations

import datetime as _dt
import functools
import hashlib
import json
import os
import platform
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import benchmark

__all__ = ["config_hash", "git_state", "hardware", "provenance"]

_REPO = Path(benchmark.__file__).resolve().parents[1]


def config_hash(cfg: Mapping[str, Any]) -> str:
    """sha256 (hex) of a resolved config, independent of key order.

    Args:
        cfg: a plain (resolved) mapping; a top-level ``hydra`` node (output dirs, launcher)
            is ignored, since where a run is launched does not change what it computes.

    Returns:
        64 hex characters.
    """
    plain = _to_plain(cfg)
    if isinstance(plain, dict):
        plain = {k: v for k, v in plain.items() if k != "hydra"}
    text = json.dumps(plain, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _to_plain(cfg: Any) -> Any:
    if isinstance(cfg, Mapping):
        return {str(k): _to_plain(v) for k, v in cfg.items()}
    if isinstance(cfg, (list, tuple)):
        return [_to_plain(v) for v in cfg]
    return cfg


def git_state(repo: str | os.PathLike[str] | None = None) -> tuple[str, bool | None]:
    """``(commit, dirty)`` of the repository holding the code.

    ``dirty`` is True when tracked files differ from the commit (untracked files such as result
    files do not count); ``("unknown", None)`` outside a git checkout.
    """
    cwd = Path(repo) if repo is not None else _REPO
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown", None
    return commit, bool(status.strip())


@functools.lru_cache(maxsize=1)
def hardware() -> str:
    """One line naming the CPU (model, cores) and the GPU when torch sees one."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    text = f"{cpu} x{os.cpu_count()} ({platform.system()} {platform.release()})"
    try:
        import torch

        if torch.cuda.is_available():
            text += f"; GPU {torch.cuda.get_device_name(0)}"
    except ImportError:
        pass
    return text


def provenance() -> dict[str, Any]:
    """Code version, machine and time of a run.

    Returns:
        ``{"commit", "dirty", "created" (UTC ISO 8601), "package_version", "hardware",
        "python", "torch"}``.
    """
    commit, dirty = git_state()
    try:
        import torch

        torch_version = torch.__version__
    except ImportError:
        torch_version = None
    return {
        "commit": commit,
        "dirty": dirty,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "package_version": benchmark.__version__,
        "hardware": hardware(),
        "python": platform.python_version(),
        "torch": torch_version,
    }
