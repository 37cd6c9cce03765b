"""The published table layout: means over classes then cases, Δ% from FP32, CIs, published columns."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from benchmark.report import make_table, read_published, render
from benchmark.report.__main__ import main as report_main
from benchmark.results import ROW_COLUMNS

PUBLISHED = (
    Path(__file__).resolve().parents[2] / "experiments" / "medquanbench_btcv" / "published.csv"
)


def _run(
    run_id,
    precision,
    granularity,
    dsc_by_case,
    nsd=0.8,
    observer="minmax",
    model="nnunet",
    display="nnU-Net",
):
    """Rows of one run: two classes per case, the class mean of DSC equals dsc_by_case[case]."""
    rows = []
    for case, mean in dsc_by_case.items():
        for cls, offset in ((1, -0.01), (2, 0.01)):
            for metric, value in (("dsc", mean + offset), ("nsd", nsd), ("hd95", 3.0)):
                rows.append({"case": case, "class": cls, "metric": metric, "value": value})
    frame = pd.DataFrame(rows)
    floating = precision == "fp32"
    frame = frame.assign(
        experiment="t",
        run_id=run_id,
        config_hash=run_id,
        model=model,
        family="cnn",
        params_m=26.9,
        dataset="btcv",
        split="test",
        class_name="organ",
        precision=precision,
        w_bits=32 if floating else int(precision[1]),
        a_bits=32 if floating else int(precision[3]),
        granularity=granularity,
        observer="none" if floating else observer,
        algorithm="none",
        calib_n=0 if floating else 16,
        tolerance_mm=np.nan,
        seed=0,
        commit="c",
        created="now",
        framework="nnUNet",
        display_name=display,
    )
    assert set(ROW_COLUMNS) <= set(frame.columns)
    return frame


@pytest.fixture
def results() -> pd.DataFrame:
    cases = ["c1", "c2", "c3"]
    return pd.concat(
        [
            _run(
                "q1",
                "w4a4",
                "per_channel_token",
                dict(zip(cases, [0.38, 0.387, 0.394], strict=True)),
                nsd=0.354,
            ),
            _run("fp", "fp32", "none", dict.fromkeys(cases, 0.872), nsd=0.888),
            _run(
                "q2",
                "w8a8",
                "adaptive",
                dict(zip(cases, [0.880, 0.881, 0.882], strict=True)),
                nsd=0.888,
            ),
        ]
    )


def test_layout_values_and_drops(results):
    table = make_table(results)
    assert list(table.columns) == [
        "Framework", "Architecture", "Category", "Params (M)", "Precision", "Granularity", "DSC (Δ%)", "NSD (Δ%)",
    ]  # fmt: skip
    assert list(table["Precision"]) == ["FP32", "W8A8", "W4A4"]  # fp32 first, then by bits
    fp32, w8, w4 = (row for _, row in table.iterrows())
    assert (fp32["DSC (Δ%)"], fp32["Granularity"], fp32["Category"], fp32["Params (M)"]) == (
        "0.872",
        "–",
        "CNN",
        "26.9",
    )
    assert w4["DSC (Δ%)"] == "0.387 (55.6%)" and w4["NSD (Δ%)"] == "0.354 (60.1%)"
    assert w8["DSC (Δ%)"] == "0.881 (1.0%↑)" and w8["Granularity"] == "Adaptive"


def test_varying_axes_get_their_own_column(results):
    extra = _run(
        "q3", "w4a4", "per_channel_token", {"c1": 0.5, "c2": 0.5, "c3": 0.5}, observer="mse"
    )
    table = make_table(pd.concat([results, extra]))
    assert "Observer" in table.columns and set(table["Observer"]) == {"–", "minmax", "mse"}
    assert "Algorithm" not in table.columns


def test_an_observer_option_is_shown_only_where_its_observer_reads_it(results):
    """The spec carries every observer's options: moving_average's averaging_constant tells
    runs apart only among moving-average runs."""
    moving = _run("q3", "w4a4", "per_channel_token", dict.fromkeys(["c1", "c2", "c3"], 0.5))
    moving = moving.assign(observer="moving_average", averaging_constant=0.01)
    others = results.assign(averaging_constant=0.1)
    table = make_table(pd.concat([others, moving]))
    assert "averaging_constant" not in table.columns
    slower = moving.assign(run_id="q4", config_hash="q4", averaging_constant=0.5)
    table = make_table(pd.concat([others, moving, slower]))
    assert sorted(table["averaging_constant"]) == ["0.01", "0.5", "–", "–", "–"]


def test_an_algorithm_is_shown_with_its_calibration_seconds(results):
    """Even when every quantized run uses the same method: a reader must not take it for RTN."""
    timed = results.assign(calibration_s=np.where(results["precision"] == "fp32", 0.0, 41.4))
    table = make_table(
        timed.assign(algorithm=np.where(timed["precision"] == "fp32", "none", "gptq"))
    )
    assert list(table["Algorithm"]) == ["–", "gptq", "gptq"]
    assert list(table["Calib. (s)"]) == ["–", "41", "41"]
    assert "Algorithm" not in make_table(timed).columns


def test_bootstrap_ci_of_the_drop(results):
    table = make_table(results, ci=True)
    cell = table.loc[table["Precision"] == "W4A4", "ΔDSC 95% CI"].iloc[0]
    low, high = (float(v) for v in cell.strip("[]").split(","))
    assert low <= 0.387 - 0.872 <= high and high < 0  # the W4A4 drop is far outside noise
    assert table.loc[table["Precision"] == "FP32", "ΔDSC 95% CI"].iloc[0] == ""


def test_published_figures_side_by_side(results):
    table = make_table(results, published=read_published(PUBLISHED))
    row = table[table["Precision"] == "W4A4"].iloc[0]
    assert (
        row["Published DSC (Δ%)"] == "0.387 (55.6%)"
        and row["Published NSD (Δ%)"] == "0.354 (60.1%)"
    )
    assert table[table["Precision"] == "FP32"].iloc[0]["Published DSC (Δ%)"] == "0.872"


def test_renderings(results):
    table = make_table(results)
    md = render(table, "md").splitlines()
    assert md[0].startswith("| Framework") and set(md[1]) <= {"|", "-"} and len(md) == 5
    assert "0.387 (55.6\\%)" in render(table, "tex") and r"\toprule" in render(table, "tex")
    assert render(table, "csv").splitlines()[0].startswith("Framework,Architecture")
    with pytest.raises(ValueError, match="html"):
        render(table, "html")


def test_command_line(results, tmp_path, capsys):
    path = tmp_path / "results.parquet"
    results.assign(experiment="medquanbench_btcv").to_parquet(path)
    assert report_main([str(path), "--format", "md", "--ci"]) == 0
    captured = capsys.readouterr()
    out = captured.out
    assert out.splitlines()[0].startswith("| Framework | Architecture | Category | Params (M)")
    assert "ΔDSC 95% CI" in out
    assert "0.387 (55.6%)" in out and "Published DSC" in out  # BTCV: published figures added
    assert str(PUBLISHED) in captured.err  # the source of the published figures is named
    # another experiment gets no published columns unless a CSV is given
    results.assign(experiment="smoke").to_parquet(path)
    assert report_main([str(path), "--format", "csv"]) == 0
    assert "Published" not in capsys.readouterr().out
    assert report_main([str(path), "--format", "csv", "--published", str(PUBLISHED)]) == 0
    assert "published_dsc_drop_pct" in capsys.readouterr().out.splitlines()[0]
    assert report_main([str(tmp_path / "none.parquet")]) == 1


def test_csv_holds_numbers_one_per_column(results, tmp_path, capsys):
    """Scores, drops and CI bounds are plain numbers a spreadsheet or pandas reads as such."""
    path = tmp_path / "results.parquet"
    results.to_parquet(path)
    assert report_main([str(path), "--format", "csv", "--ci", "--published", str(PUBLISHED)]) == 0
    text = capsys.readouterr().out
    assert not any(symbol in text for symbol in ("↑", "%", "(", "[", "–"))
    table = pd.read_csv(io.StringIO(text))
    numbers = [c for c in table.columns if c.split("_")[0] in ("dsc", "nsd", "published")]
    assert all(pd.api.types.is_float_dtype(table[c]) for c in numbers), table.dtypes
    w4 = table[table["precision"] == "w4a4"].iloc[0]
    assert w4["dsc"] == pytest.approx(0.387) and w4["dsc_drop_pct"] == pytest.approx(55.6, abs=0.05)
    assert w4["dsc_delta_ci_low"] <= 0.387 - 0.872 <= w4["dsc_delta_ci_high"] < 0
    assert w4["published_dsc"] == pytest.approx(0.387)
    assert w4["granularity"] == "per_channel_token" and w4["w_bits"] == 4
    w8 = table[table["precision"] == "w8a8"].iloc[0]
    assert w8["dsc_drop_pct"] < 0  # an increase is a negative drop, not an arrow
    fp32 = table[table["precision"] == "fp32"].iloc[0]
    assert pd.isna(fp32["dsc_drop_pct"]) and pd.isna(fp32["dsc_delta_ci_low"])
    assert set(table["baseline_run_id"]) == {"fp"}


def test_calibration_columns_are_case_means_with_their_change_from_fp32(results):
    def case_rows(run_id, ece, brier):
        template = results[results["run_id"] == run_id].drop_duplicates("case")
        return pd.concat(
            [
                template.assign(metric="ece_top", value=ece, **{"class": -1}),
                template.assign(metric="brier_mc", value=brier, **{"class": -1}),
            ]
        )

    extra = pd.concat([case_rows("fp", 0.0100, 0.0500), case_rows("q1", 0.0420, 0.0900)])
    table = make_table(pd.concat([results, extra]), calibration=True)
    fp32, w8, w4 = (row for _, row in table.iterrows())
    assert (fp32["ECE (Δ)"], fp32["Brier (Δ)"]) == ("0.0100", "0.0500")
    assert (w4["ECE (Δ)"], w4["Brier (Δ)"]) == ("0.0420 (+0.0320)", "0.0900 (+0.0400)")
    assert w8["ECE (Δ)"] == "nan"  # a run without the metric says so
    assert "ECE (Δ)" not in make_table(pd.concat([results, extra])).columns
