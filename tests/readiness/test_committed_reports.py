"""The README's readiness command rebuilds the committed reports byte for byte."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from benchmark.readiness.__main__ import main

REPOSITORY = Path(__file__).resolve().parents[2]


def _readme_command() -> list[str]:
    """The arguments of the README's ``python -m benchmark.readiness`` line."""
    readme = (REPOSITORY / "README.md").read_text()
    match = re.search(r"python -m benchmark\.readiness ([^\n#]+)", readme)
    assert match, "README.md has no `python -m benchmark.readiness` command"
    return shlex.split(match.group(1))


def test_readme_command_reproduces_the_committed_reports(tmp_path, monkeypatch):
    args = _readme_command()
    out = args.index("--out")
    committed = REPOSITORY / args[out + 1]
    inputs = [REPOSITORY / a for a in args[:out]]
    if not all((p / "results.parquet").is_file() for p in inputs):
        pytest.skip(f"the committed results {inputs} are not all present")
    monkeypatch.chdir(REPOSITORY)
    assert main([*map(str, inputs), *args[out + 2 :], "--out", str(tmp_path)]) == 0
    written = sorted(p.name for p in tmp_path.iterdir())
    assert written == sorted(p.name for p in committed.iterdir())
    for name in written:
        assert (tmp_path / name).read_text() == (committed / name).read_text(), (
            f"{committed / name} is not what `{' '.join(args)}` writes; rerun it"
        )
