"""The other tasks on an nnU-Net folder: sensitivity runs it as evaluate does; deploy refuses it."""

from __future__ import annotations

import pytest

from benchmark.analysis.sensitivity import run_sensitivity
from benchmark.config import build_point
from benchmark.deploy.pipeline import run_deploy
from benchmark.points.errors import PointError
from tests.runs import context_of

pytestmark = pytest.mark.slow


def test_sensitivity_scores_the_folders_fold_cases(folder_cfg, nnunet_training):
    cfg = build_point(
        folder_cfg(
            "task=sensitivity",
            "+sensitivity=default",
            "precision=w4a4",
            "granularity=per_tensor",
            "calibration.n=2",
            "evaluation.max_cases=1",
            "sensitivity.modes=[one_layer]",
            "sensitivity.units=[decoder.seg_layers.*]",
            "sensitivity.activation_stats=false",
        )
    )
    rows = run_sensitivity(context_of(cfg))
    assert set(rows["split"]) == {"val"}
    assert set(rows["layer"].dropna()) and rows["value"].notna().any()


def test_deploy_refuses_a_results_folder(folder_cfg):
    cfg = folder_cfg("task=deploy", "+deploy=default", "precision=w8a8", "granularity=per_tensor")
    with pytest.raises(PointError, match="task=deploy exports registry models; .* nnunet_folder"):
        run_deploy(context_of(cfg))
