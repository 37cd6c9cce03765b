"""Drops derived from raw sensitivity rows, against the values the rows were built with."""

from __future__ import annotations

import pandas as pd
import pytest

from benchmark.analysis.summary import activation_table, sensitivity_table, spec_label
from tests.plots.synthetic import UNITS, synthetic_results


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    return sensitivity_table(synthetic_results())


def test_one_layer_drop_is_score_minus_fp32(table):
    # synthetic rows: FP32 0.85, unit i alone at W4A4 0.85 - 0.02 (i + 1), noise sd 0.001
    one = table[table["mode"] == "one_layer"].set_index("layer")["delta"]
    for i, unit in enumerate(UNITS):
        assert one[unit] == pytest.approx(-0.02 * (i + 1), abs=0.003)


def test_all_but_one_recovery_is_measured_from_the_full_model(table):
    # all quantized 0.70; all but unit i 0.70 + 0.01 (i + 1)
    recovery = table[table["mode"] == "all_but_one"].set_index("layer")["delta_vs_all"]
    assert recovery[UNITS[-1]] == pytest.approx(0.04, abs=0.003)
    assert list(recovery.loc[list(UNITS)].rank()) == [1.0, 2.0, 3.0, 4.0]


def test_variant_specs_are_labelled_with_their_own_precision(table):
    labels = table.groupby("mode")["spec"].first().to_dict()
    assert labels["weights_only"] == "W4A16 adaptive"
    assert labels["activations_only"] == "W16A4 adaptive"
    assert labels["reference"] == "FP32"
    assert set(table["run_spec"]) == {"W4A4 adaptive"}
    assert spec_label("w8a8", "per_channel_token") == "W8A8 channel"


def test_tables_are_empty_without_sensitivity_rows():
    evaluation = synthetic_results()
    evaluation = evaluation[evaluation["task"] == "evaluate"].drop(columns=["mode", "layer"])
    assert sensitivity_table(evaluation).empty
    assert activation_table(evaluation).empty


def test_activation_table_has_one_column_per_metric():
    stats = activation_table(synthetic_results())
    assert {"act_kurtosis", "sqnr_db", "kl_div"} <= set(stats.columns)
    assert sorted(stats["granularity"].unique()) == ["adaptive", "none", "per_tensor"]
    assert len(stats) == len(UNITS) * 3
