"""Accuracy gate: accept, reject on the mean, reject on one class, reject on batch inconsistency."""

from __future__ import annotations

import numpy as np
import pytest

from benchmark.deploy.gate import BatchConsistency, check_batch_consistency, decide, relative_drop

BASELINE = {1: 0.90, 2: 0.80, 3: 0.70}

# [candidate per-class DSC, batch consistent, accepted, reason fragment]
TEST_CASE_ACCEPT = [{1: 0.899, 2: 0.795, 3: 0.699}, True, True, None]
TEST_CASE_MEAN = [{1: 0.87, 2: 0.78, 3: 0.68}, True, False, "mean DSC drop"]
TEST_CASE_ONE_CLASS = [{1: 0.91, 2: 0.81, 3: 0.665}, True, False, "class 3 DSC drop"]
TEST_CASE_BATCH = [{1: 0.90, 2: 0.80, 3: 0.70}, False, False, "batch size"]


@pytest.mark.parametrize(
    ("candidate", "consistent", "accepted", "reason"),
    [TEST_CASE_ACCEPT, TEST_CASE_MEAN, TEST_CASE_ONE_CLASS, TEST_CASE_BATCH],
)
def test_gate_decisions(candidate, consistent, accepted, reason):
    decision = decide(
        candidate, BASELINE, tolerance_rel=0.01, per_class_worst_drop=0.03, batch=consistent
    )
    assert decision.accepted is accepted
    assert decision.deployed == ("candidate" if accepted else "fp32")
    if reason is None:
        assert decision.reasons == ()
    else:
        assert any(reason in r for r in decision.reasons), decision.reasons


def test_one_class_collapse_passes_the_mean_but_not_the_class_limit():
    # mean drop (0.0 + 0.0 + 0.035) / 2.4 = 1.46 % with a 2 % mean tolerance: only the class fails
    decision = decide(
        {1: 0.90, 2: 0.80, 3: 0.665}, BASELINE, tolerance_rel=0.02, per_class_worst_drop=0.03
    )
    assert decision.mean_rel_drop == pytest.approx(0.035 / 2.4)
    assert decision.worst_class == 3 and decision.worst_class_rel_drop == pytest.approx(0.05)
    assert not decision.accepted and len(decision.reasons) == 1


def test_relative_drop_definition():
    assert relative_drop(0.72, 0.8) == pytest.approx(0.1)
    assert relative_drop(0.9, 0.8) == pytest.approx(-0.125)
    assert np.isnan(relative_drop(0.5, 0.0))


def test_nan_classes_are_ignored_and_mismatched_classes_fail():
    decision = decide({1: 0.9, 2: np.nan}, {1: 0.9, 2: 0.8})
    assert decision.accepted and decision.mean_dsc == pytest.approx(0.9)
    # a class the FP32 model never finds (DSC 0) has no relative drop; the others still gate
    decision = decide({1: 0.8, 2: 0.5}, {1: 0.9, 2: 0.0})
    assert decision.worst_class == 1 and not decision.accepted
    with pytest.raises(ValueError, match=r"candidate classes \[1\] != baseline classes \[1, 2\]"):
        decide({1: 0.9}, {1: 0.9, 2: 0.8})


def _patches(n=8):
    return np.random.default_rng(0).standard_normal((n, 1, 4, 4, 4)).astype(np.float32)


def test_per_sample_model_is_batch_consistent():
    def per_sample(x):
        return np.concatenate([x, -x, 0.5 * x], axis=1)

    result = check_batch_consistency(per_sample, _patches(), (1, 2, 4))
    assert result.consistent and result.mismatch_fraction == 0 and result.max_abs_diff == 0


def test_batch_wide_scaling_is_caught():
    def batch_dependent(x):
        # like dynamic quantization: one range for the whole batch changes every sample's output
        step = np.abs(x).max() / 4
        q = np.round(x / step) * step
        return np.concatenate([q, np.full_like(q, 0.3), -q], axis=1)

    result = check_batch_consistency(batch_dependent, _patches(), (1, 2, 4))
    assert not result.consistent and result.mismatch_fraction > 0
    decision = decide(BASELINE, BASELINE, batch=result)
    assert not decision.accepted and "batch sizes (1, 2, 4)" in decision.reasons[0]


def test_too_few_patches_for_the_batch_sizes():
    with pytest.raises(ValueError, match="lcm"):
        check_batch_consistency(lambda x: x, _patches(3), (1, 2, 4))


def test_consistency_tolerance_is_respected():
    result = BatchConsistency(True, (1, 2), 0.0, 0.0, 0.0)
    assert decide(BASELINE, BASELINE, batch=result).accepted


def test_voxel_agreement_below_the_limit_rejects():
    ok = decide({1: 0.8}, {1: 0.8}, voxel_agreement=0.999, min_agreement=0.995)
    low = decide({1: 0.8}, {1: 0.8}, voxel_agreement=0.99, min_agreement=0.995)
    assert ok.accepted and not low.accepted
    assert low.reasons == ("voxel agreement with FP32 99.000% < 99.500%",)
    assert decide({1: 0.8}, {1: 0.8}, min_agreement=0.995).accepted  # not measured: not checked
