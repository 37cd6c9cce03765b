"""The notebooks run top to bottom (on a small synthetic results table, and on the committed demo
and sensitivity_smoke results of results/) and are stored clean."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from benchmark.plots.sources import REPOSITORY, find_results
from tests.plots.synthetic import synthetic_results

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
NAMES = ["sensitivity.ipynb", "paper_tables.ipynb", "activation_shift.ipynb"]


@pytest.mark.parametrize("name", NAMES)
def test_notebook_is_stored_without_outputs(name):
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert code, name
    assert all(not c.outputs and c.execution_count is None for c in code)


COMMITTED = {
    "MEDQBENCH_RESULTS": REPOSITORY / "results" / "demo" / "results.parquet",
    "MEDQBENCH_SENSITIVITY_RESULTS": REPOSITORY
    / "results"
    / "sensitivity_smoke"
    / "results.parquet",
}


@pytest.fixture(scope="module", params=["synthetic", "committed"])
def results_env(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp("results")
    if request.param == "committed":
        missing = [str(p) for p in COMMITTED.values() if not p.is_file()]
        if missing:
            pytest.skip(f"committed results missing: {missing}")
        env = {key: str(path) for key, path in COMMITTED.items()}
    else:
        path = folder / "results.parquet"
        synthetic_results().to_parquet(path)
        env = {"MEDQBENCH_RESULTS": str(path), "MEDQBENCH_SENSITIVITY_RESULTS": str(path)}
    return {**env, "MEDQBENCH_FIGURES": str(folder / "figures")}


@pytest.mark.parametrize("name", NAMES)
def test_notebook_runs_top_to_bottom(name, results_env, monkeypatch):
    for key, value in results_env.items():
        monkeypatch.setenv(key, value)
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    client = NotebookClient(
        notebook,
        timeout=300,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOKS)}},
    )
    start = time.perf_counter()
    client.execute()
    errors = [
        o
        for c in notebook.cells
        if c.cell_type == "code"
        for o in c.outputs
        if o.output_type == "error"
    ]
    assert not errors
    pngs = list(Path(results_env["MEDQBENCH_FIGURES"]).glob("*.png"))
    assert pngs, "no figure written"
    # the default run keeps notebooks under ~20 s each; a slower one needs @pytest.mark.slow
    print(f"{name}: {time.perf_counter() - start:.1f} s with {sys.executable}")


def test_find_results_prefers_env_then_the_first_experiment(tmp_path, monkeypatch):
    monkeypatch.delenv("X_RESULTS", raising=False)
    with pytest.raises(FileNotFoundError, match="experiment=demo"):
        find_results(["demo", "smoke"], "X_RESULTS", root=tmp_path)
    (tmp_path / "results" / "smoke").mkdir(parents=True)
    (tmp_path / "results" / "smoke" / "results.parquet").write_bytes(b"")
    assert find_results(["demo", "smoke"], "X_RESULTS", root=tmp_path).name == "smoke"
    monkeypatch.setenv("X_RESULTS", str(tmp_path / "mine.parquet"))
    assert find_results(["demo"], "X_RESULTS", root=tmp_path) == tmp_path / "mine.parquet"
