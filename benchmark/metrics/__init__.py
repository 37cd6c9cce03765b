"""Segmentation metrics: DSC, NSD, HD95, calibration and case-level statistics.

Everything here works on plain arrays (integer label maps, probability volumes, per-case scores)
and imports nothing else of ``benchmark``. Spacing and tolerances are always in millimetres and
always passed explicitly. NSD and HD95 reproduce DeepMind's ``surface-distance`` definitions
(:mod:`benchmark.metrics.surface`); empty structures follow documented, configurable conventions
(:mod:`benchmark.metrics.conventions`).
"""

from __future__ import annotations

from benchmark.metrics.calibration import (
    CalibrationStats,
    ReliabilityDiagram,
    brier,
    calibration_stats,
    ece,
    foreground_band,
)
from benchmark.metrics.conventions import (
    NNUNET_CONVENTIONS,
    PERFECT_IF_BOTH_EMPTY,
    EmptyConventions,
    StructureStatus,
)
from benchmark.metrics.overlap import dice, overlap_counts, structure_status
from benchmark.metrics.scoring import CASE_CLASS, METRICS, MetricInfo, score_case
from benchmark.metrics.stats import (
    BootstrapResult,
    format_with_drop,
    paired_bootstrap,
    relative_drop,
)
from benchmark.metrics.surface import SurfaceDistances, hd95, nsd, surface_distances

__all__ = [
    "CASE_CLASS",
    "METRICS",
    "NNUNET_CONVENTIONS",
    "PERFECT_IF_BOTH_EMPTY",
    "BootstrapResult",
    "CalibrationStats",
    "EmptyConventions",
    "MetricInfo",
    "ReliabilityDiagram",
    "StructureStatus",
    "SurfaceDistances",
    "brier",
    "calibration_stats",
    "dice",
    "ece",
    "foreground_band",
    "format_with_drop",
    "hd95",
    "nsd",
    "overlap_counts",
    "paired_bootstrap",
    "relative_drop",
    "score_case",
    "structure_status",
    "surface_distances",
]
