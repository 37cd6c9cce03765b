"""Quantization readiness report: a scorecard per model from sweep and deployment results.

``python -m benchmark.readiness RESULTS... --model NAME --out DIR`` writes
``DIR/readiness_<model>.md`` and ``.html``: five criteria (performance sensitivity, calibration
data, deployment constraints, validation, effort) scored 1-5 by the rules in
:mod:`benchmark.readiness.criteria`, the overall percentage (an unmeasured criterion counts 0
and is listed with the command that measures it), a recommendation and the classes with the
largest DSC drop.
"""

from __future__ import annotations

from benchmark.readiness.evidence import (
    DeployEvidence,
    SweepEvidence,
    deploy_evidence,
    sweep_evidence,
)
from benchmark.readiness.render import to_html, to_markdown
from benchmark.readiness.report import load_results, write_reports
from benchmark.readiness.scorecard import Criterion, Scorecard, build_scorecard

__all__ = [
    "Criterion",
    "DeployEvidence",
    "Scorecard",
    "SweepEvidence",
    "build_scorecard",
    "deploy_evidence",
    "load_results",
    "sweep_evidence",
    "to_html",
    "to_markdown",
    "write_reports",
]
