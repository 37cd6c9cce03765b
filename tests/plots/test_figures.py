"""Every figure draws from rows that hold its data and skips, with a reason, from rows that don't."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from matplotlib.image import imread

from benchmark.plots import FIGURES, PlotSkipped, make_figures
from benchmark.plots.__main__ import main
from benchmark.plots.pareto import pareto_points
from benchmark.plots.rows import mean_ci, sweep_rows
from tests.plots.synthetic import synthetic_results


@pytest.fixture(scope="module")
def results() -> pd.DataFrame:
    return synthetic_results()


@pytest.mark.parametrize("name", list(FIGURES))
def test_figure_writes_png_and_pdf(results, tmp_path, name):
    paths = FIGURES[name](results, tmp_path)
    assert sorted(p.suffix for p in paths) == [".pdf", ".png"]
    image = imread(paths[0] if paths[0].suffix == ".png" else paths[1])
    width_in = image.shape[1] / 300
    # drawn at one paper column (3.5 in) plus tight-bbox margins, never a full page
    assert 2.5 < width_in < 4.5
    assert image[..., :3].std() > 0.05  # not blank
    assert paths[1].read_bytes()[:4] == b"%PDF"


@pytest.mark.parametrize("kind", ["evaluate", "sensitivity", "deploy"])
def test_figures_skip_what_the_rows_lack(results, tmp_path, kind):
    only = results[results["task"] == kind].dropna(axis=1, how="all")
    drawn = make_figures(only, tmp_path)
    wanted = {
        "evaluate": {"precision_bars", "class_drops", "pareto", "calibration_size"},
        "sensitivity": {"layer_sensitivity", "activation_depth", "sqnr_vs_delta"},
        "deploy": {"pareto"},
    }[kind]
    assert {n for n, out in drawn.items() if not isinstance(out, str)} == wanted
    for name in set(FIGURES) - wanted:
        assert drawn[name].startswith("skipped: ")


def test_heatmap_skip_is_an_exception_for_callers(results, tmp_path):
    with pytest.raises(PlotSkipped, match="sensitivity"):
        FIGURES["layer_sensitivity"](results[results["task"] == "evaluate"], tmp_path)


def test_pareto_points_keep_only_undominated():
    cost = np.array([1.0, 2.0, 2.0, 3.0, 4.0])
    score = np.array([0.5, 0.7, 0.6, 0.7, 0.9])
    assert pareto_points(cost, score).tolist() == [True, True, False, False, True]


def test_mean_ci_brackets_the_mean_and_needs_two_cases():
    values = np.array([0.6, 0.7, 0.8, 0.9])
    low, high = mean_ci(values)
    assert low < values.mean() < high
    assert np.isnan(mean_ci(np.array([0.5]))[0])


def test_sweep_rows_drop_sensitivity_and_deploy_rows(results):
    assert set(sweep_rows(results)["task"]) == {"evaluate"}


def test_cli_writes_figures_and_reports_skips(results, tmp_path, capsys):
    path = tmp_path / "results.parquet"
    results[results["task"] == "sensitivity"].to_parquet(path)
    out = tmp_path / "figs"
    assert main([str(path), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "precision_bars: skipped" in printed
    assert (out / "layer_sensitivity_dsc.png").is_file()
    assert (out / "activation_depth.pdf").is_file()


def test_cli_default_out_and_missing_input(results, tmp_path, capsys):
    folder = tmp_path / "exp"
    folder.mkdir()
    results.to_parquet(folder / "results.parquet")
    assert main([str(folder)]) == 0
    assert len(list((folder / "figures").glob("*.png"))) == len(FIGURES)
    assert main([str(tmp_path / "nothing")]) == 2
    assert "no results" in capsys.readouterr().err
