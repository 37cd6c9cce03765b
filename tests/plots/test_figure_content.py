"""What the figures say: legible labels tied to their model, every model's class drops, cells
that claim no direction they lack, and changes in one unit everywhere."""

from __future__ import annotations

import itertools

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_hex

from benchmark.plots import (
    calibration_curve,
    class_drops,
    pareto_front,
    precision_bars,
    sqnr_scatter,
)
from benchmark.plots.layers import sensitivity_heatmap
from benchmark.plots.style import delta_label
from tests.plots.synthetic import synthetic_results

DISPLAY = {"tiny_a": "Net A (tiny)", "tiny_b": "Net B (tiny)"}


@pytest.fixture(scope="module")
def results() -> pd.DataFrame:
    frame = synthetic_results()
    frame["display_name"] = frame["model"].map(DISPLAY)
    # a class neither the FP32 nor any quantized model finds: its change is not applicable
    missed = frame[(frame["task"] == "evaluate") & (frame["class"] == 1)].assign(
        **{"class": 9, "class_name": "adrenal", "value": 0.0}
    )
    return pd.concat([frame, missed], ignore_index=True)


@pytest.fixture
def drawn(monkeypatch):
    """The figures a call drew, kept open (``save_figure`` closes them otherwise)."""
    before = set(plt.get_fignums())
    monkeypatch.setattr(plt, "close", lambda fig=None: None)
    yield lambda: [plt.figure(n) for n in plt.get_fignums() if n not in before]
    monkeypatch.undo()
    for n in set(plt.get_fignums()) - before:
        plt.close(n)


def _overlaps(a, b) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


def test_pareto_labels_are_legible_apart_and_in_their_models_colour(results, tmp_path, drawn):
    pareto_front(results[results["task"] == "evaluate"], tmp_path)
    (fig,) = drawn()
    renderer = fig.canvas.get_renderer()
    ax = fig.axes[0]
    colours = {
        to_hex(c.get_facecolor()[0]): c.get_label()
        for c in ax.collections
        if c.get_label() in DISPLAY.values()
    }
    labels = [t for t in ax.texts if t.get_text()]
    assert len(labels) >= 4
    assert all(t.get_fontsize() >= 5.5 for t in labels)
    assert {to_hex(t.get_color()) for t in labels} <= set(colours)  # each label names its model
    boxes = [t.get_window_extent(renderer) for t in labels]
    assert not any(_overlaps(a, b) for a, b in itertools.combinations(boxes, 2))
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend == list(DISPLAY.values())  # the names the other figures use


def test_class_drops_has_a_panel_per_model_and_marks_na(results, tmp_path, drawn):
    class_drops(results, tmp_path)
    (fig,) = drawn()
    heatmaps = [ax for ax in fig.axes if ax.get_images()]
    assert [ax.get_title(loc="left").split(":")[0] for ax in heatmaps] == list(DISPLAY.values())
    for ax in heatmaps:
        cells = [t.get_text() for t in ax.texts]
        assert "-0" not in cells and "+0" not in cells
        assert "0" in cells  # the near-zero changes are there, unsigned
        rows = [t.get_text() for t in ax.get_yticklabels()]
        na_row = rows.index("adrenal")
        na_cells = [t.get_text() for t in ax.texts if round(t.get_position()[1]) == na_row]
        assert na_cells and set(na_cells) == {"n/a"}
    colour_bars = [ax for ax in fig.axes if not ax.get_images()]
    assert {ax.get_ylabel() for ax in colour_bars} == {delta_label("dsc")}
    class_drops(results, tmp_path, model="tiny_b")
    (_, single) = drawn()
    assert len([ax for ax in single.axes if ax.get_images()]) == 1


def test_changes_read_in_the_same_unit_in_every_figure(results, tmp_path, drawn):
    sqnr_scatter(results, tmp_path)
    sensitivity_heatmap(results, tmp_path)
    scatter, heatmap = drawn()
    ax = scatter.axes[0]
    assert ax.get_ylabel().startswith(delta_label("dsc"))
    # synthetic one_layer costs are 2-8 DSC points (0.02-0.08): plotted as points, not fractions
    y = np.concatenate([c.get_offsets()[:, 1] for c in ax.collections])
    assert -9 < y.min() < -1.5
    assert ax.get_xlabel().endswith("(dB)")
    bar = [a for a in heatmap.axes if not a.get_images()][0]
    assert bar.get_ylabel() == delta_label("dsc")
    assert [t.get_text() for t in ax.get_legend().get_texts()][0].startswith("Net A (tiny)")


def test_bar_legend_names_no_jargon(results, tmp_path, drawn):
    fp16 = results[(results["task"] == "evaluate") & (results["precision"] == "fp32")].assign(
        precision="fp16", w_bits=16, a_bits=16, run_id=lambda d: d["run_id"] + "-fp16"
    )
    precision_bars(pd.concat([results, fp16]), tmp_path)
    (fig,) = drawn()
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "float cast" not in legend and "16-bit float (no scales)" in legend


def test_calibration_curve_draws_each_setting_swept_over_sizes_on_a_log_axis(
    results, tmp_path, drawn
):
    # Only Net A's W4A4 per-tensor runs span several sizes (1, 2, 8, 32): one panel, one line
    # with its points in size order, FP32 dashed above it.
    calibration_curve(results, tmp_path)
    (fig,) = drawn()
    (ax,) = fig.axes
    assert ax.get_title(loc="left") == "Net A (tiny)" and ax.get_xscale() == "log"
    (line,) = [ln for ln in ax.get_lines() if ln.get_linestyle() == "-"]
    assert line.get_xdata().tolist() == [1, 2, 8, 32]
    assert np.all(np.diff(line.get_ydata()) > 0)
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels == ["W4A4 Per-tensor", "FP32"]


def test_calibration_curve_keeps_runs_of_other_spec_fields_apart(results, tmp_path, drawn):
    """The same point swept again with another activation grid is a second line, not averaged
    into the first; an observer option no run's observer reads names no line."""
    swept = results[results["run_id"].str.startswith("tiny_a-w4a4-per_tensor")]
    symmetric = swept.assign(
        act_mapping="symmetric", value=swept["value"] - 0.2, run_id=swept["run_id"] + "-sym"
    )
    calibration_curve(
        pd.concat([results.assign(act_mapping="asymmetric"), symmetric]).assign(
            averaging_constant=0.1
        ),
        tmp_path,
    )
    (fig,) = drawn()
    solid = [ln for ln in fig.axes[0].get_lines() if ln.get_linestyle() == "-"]
    assert len(solid) == 2
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert sorted(labels) == [
        "FP32", "W4A4 Per-tensor act_mapping=asymmetric", "W4A4 Per-tensor act_mapping=symmetric",
    ]  # fmt: skip
