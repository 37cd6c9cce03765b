"""How every ``python -m benchmark.*`` command ends on an error: one line, no traceback.

An error the harness raises on purpose (its own exception types, Hydra's and OmegaConf's config
errors, a ``raise`` statement in this package, a file-system ``OSError``) already says what is
wrong and what to do, so its traceback only buries that line. Such errors print as
``error: <message>`` on stderr and exit with status 1; Ctrl-C prints ``interrupted`` and exits
with 130. Any other exception is a defect and keeps its full traceback.

``MEDQBENCH_TRACEBACK=1`` (or Hydra's own ``HYDRA_FULL_ERROR=1``) shows the traceback of every
error. The leaf packages never import this module; only the entry points (``__main__``) do.

A ``@hydra.main`` command needs both parts: :func:`run_cli` around the decorated function (for
config composition errors and Ctrl-C) and :func:`one_line_errors` around the task body, since
Hydra writes its own "Error executing job" line before re-raising what a task raised.

Ctrl-C is also remembered: Python drops an exception raised inside a fork hook or a finaliser
and prints it with its traceback ("Exception ignored in ..."), so a Ctrl-C that lands while a
worker pool forks would otherwise be lost behind a traceback and the command would run on to
status 0. :func:`run_cli` records each SIGINT and keeps a dropped one quiet
(``sys.unraisablehook``), :func:`raise_if_interrupted` re-raises it at the next job or case,
and a command that returns after a dropped Ctrl-C still ends with 130.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

__all__ = [
    "TRACEBACK_ENV",
    "error_message",
    "is_expected",
    "one_line_errors",
    "raise_if_interrupted",
    "run_cli",
    "traceback_requested",
]

#: Environment variable that brings tracebacks back (``1``, ``true`` or ``yes``).
TRACEBACK_ENV = "MEDQBENCH_TRACEBACK"
_HYDRA_ENV = "HYDRA_FULL_ERROR"
_PACKAGE_DIR = Path(__file__).resolve().parent
_CONFIG_LIBRARIES = ("hydra.", "omegaconf.")
# OmegaConf appends the node's details to its messages; Hydra appends its search path.
_DETAIL_LINE = re.compile(
    r"^\s*(full_key|reference_type|object_type|parent_node|child_node)\s*[:=]"
)
_HYDRA_NOISE = ("Config search path:", "Set the environment variable HYDRA_FULL_ERROR")
_sigint_seen = threading.Event()


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def traceback_requested() -> bool:
    """Whether the user asked for tracebacks (:data:`TRACEBACK_ENV`)."""
    return _truthy(os.environ.get(TRACEBACK_ENV))


def is_expected(exc: BaseException) -> bool:
    """Whether ``exc`` is an error raised on purpose, whose message is meant for the user.

    True for exception types defined in this package, Hydra or OmegaConf, for ``OSError``
    (a file that is missing, unreadable or not writable: the message names it), and for any
    exception raised by a ``raise`` statement in this package.
    """
    if isinstance(exc, OSError):
        return True
    for cls in type(exc).__mro__:
        module = cls.__module__ or ""
        if module == "benchmark" or module.startswith(("benchmark.", *_CONFIG_LIBRARIES)):
            return True
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return False
    innermost = frames[-1]
    inside = Path(innermost.filename).resolve().is_relative_to(_PACKAGE_DIR)
    return inside and (innermost.line or "").lstrip().startswith("raise")


def _text(exc: BaseException) -> str:
    if isinstance(exc, KeyError) and len(exc.args) == 1 and isinstance(exc.args[0], str):
        return exc.args[0]  # str(KeyError) would quote the message
    return str(exc).strip()


def _config_library_clauses(text: str) -> list[str]:
    """Hydra's and OmegaConf's multi-line reports as clauses, each list on its header's line."""
    clauses: list[str] = []
    skipping = False
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        if raw.startswith("\t"):  # an item of the list the previous line introduces
            if clauses and not skipping:
                clauses[-1] += (" " if clauses[-1].endswith(":") else ", ") + line
            continue
        skipping = line.startswith(_HYDRA_NOISE)
        if not skipping and not _DETAIL_LINE.match(line):
            clauses.append(line)
    return clauses


def _joined(clauses: list[str]) -> str:
    text = ""
    for clause in clauses:
        separator = "" if not text else " " if text.endswith((".", ":")) else "; "
        text += separator + clause
    return text


def error_message(exc: BaseException) -> str:
    """The user-facing text of ``exc``: its message without library detail lines.

    Hydra and OmegaConf reports become a single line (``Could not find 'precision/w3a3';
    Available options in 'precision': bf16, fp16, ...``, the search path left out). Messages of
    this package keep their own lines (a sweep check lists one invalid point per line) but lose
    the node details OmegaConf appends. An empty message gives the exception's type name.
    """
    module = type(exc).__module__ or ""
    if module.startswith(_CONFIG_LIBRARIES):
        clauses = _config_library_clauses(_text(exc))
        cause = exc.__cause__
        if cause is not None and (type(cause).__module__ or "").startswith(_CONFIG_LIBRARIES):
            clauses += _config_library_clauses(_text(cause))
        return _joined(clauses) or type(exc).__name__
    lines = [line.rstrip() for line in _text(exc).splitlines() if not _DETAIL_LINE.match(line)]
    return "\n".join(line for line in lines if line) or type(exc).__name__


@contextlib.contextmanager
def one_line_errors() -> Iterator[None]:
    """End the process with ``error: <message>`` (status 1) on an expected error in the block.

    Raises:
        SystemExit: carrying the message, which Python prints on stderr.
    """
    try:
        yield
    except Exception as exc:
        if traceback_requested() or not is_expected(exc):
            raise
        raise SystemExit(f"error: {error_message(exc)}") from exc


def _record_sigint(signum: int, frame: Any) -> None:
    """Python's own Ctrl-C behaviour, remembered in case the exception is dropped."""
    _sigint_seen.set()
    raise KeyboardInterrupt


def raise_if_interrupted() -> None:
    """Raise the Ctrl-C that arrived where Python could not raise it (see the module doc).

    Raises:
        KeyboardInterrupt: when SIGINT arrived since :func:`run_cli` started.
    """
    if _sigint_seen.is_set():
        raise KeyboardInterrupt


def _quiet_dropped_ctrl_c(report_others: Callable[[Any], None]) -> Callable[[Any], None]:
    """An unraisable-exception hook that keeps a dropped Ctrl-C quiet, and reports the rest."""

    def hook(unraisable: Any) -> None:
        if isinstance(unraisable.exc_value, KeyboardInterrupt):
            _sigint_seen.set()
            return
        report_others(unraisable)

    return hook


@contextlib.contextmanager
def _sigint_recorded() -> Iterator[None]:
    """Record SIGINT while the block runs, if Ctrl-C is Python's default here."""
    _sigint_seen.clear()
    in_main = threading.current_thread() is threading.main_thread()
    if not in_main or signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield
        return
    previous, unraisable = signal.signal(signal.SIGINT, _record_sigint), sys.unraisablehook
    sys.unraisablehook = _quiet_dropped_ctrl_c(unraisable)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        sys.unraisablehook = unraisable


def run_cli(main: Callable[[], Any], interrupted: str = "interrupted") -> int:
    """Call an entry point's ``main`` and return the process exit status.

    Args:
        main: the command (an argparse ``main`` returning a status, or a ``@hydra.main``
            function, which reads ``sys.argv`` itself).
        interrupted: what Ctrl-C prints (e.g. how to resume).

    Returns:
        ``main``'s status (0 for None), 1 after an expected error, 130 after Ctrl-C.
    """
    if _truthy(os.environ.get(_HYDRA_ENV)):
        os.environ[TRACEBACK_ENV] = "1"
    show = traceback_requested()
    previous = os.environ.get(_HYDRA_ENV)
    os.environ[_HYDRA_ENV] = "1"  # Hydra then re-raises instead of printing its own report
    try:
        with _sigint_recorded():
            status = main()
            raise_if_interrupted()
    except KeyboardInterrupt:
        if show:
            raise
        print(f"\n{interrupted}", file=sys.stderr)
        return 130
    except Exception as exc:
        if show or not is_expected(exc):
            raise
        print(f"error: {error_message(exc)}", file=sys.stderr)
        return 1
    finally:
        if previous is None:
            os.environ.pop(_HYDRA_ENV, None)
        else:
            os.environ[_HYDRA_ENV] = previous
    return status if isinstance(status, int) else 0
