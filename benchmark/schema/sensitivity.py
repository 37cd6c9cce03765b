"""Settings of one layer-wise sensitivity run (``task=sensitivity``, ``conf/sensitivity/``).

:class:`SensitivityConfig` is the schema of the ``sensitivity`` group; its values live in
``conf/sensitivity/default.yaml``, and the run point carries a checked instance.
"""

from __future__ import annotations

from dataclasses import dataclass

from omegaconf import MISSING

__all__ = ["MODES", "SensitivityConfig"]

#: Per-unit variants: the unit alone at the run's spec, every unit but it at the spec, the
#: unit alone with weights only (``wNa16``) and with activations only (``w16aM``) quantized.
MODES = ("one_layer", "all_but_one", "weights_only", "activations_only")


@dataclass(frozen=True)
class SensitivityConfig:
    """What one sensitivity run varies and measures.

    A *unit* is one quantizable layer (``group_depth: 0``) or the layers sharing the first
    ``group_depth`` components of their dotted name (``group_depth: 3`` puts
    ``encoder.stages.0.0.convs.0.conv`` and ``encoder.stages.0.0.convs.1.conv`` into the block
    ``encoder.stages.0``).

    Attributes:
        name: option name (``conf/sensitivity/<name>.yaml``).
        modes: per-unit variants out of :data:`MODES`; the FP32 reference and the fully
            quantized model are always scored, and so are the whole-model ``wNa16`` and
            ``w16aM`` models when ``weights_only``/``activations_only`` are listed.
        group_depth: 0 = one unit per layer, N = layers grouped by their first N name parts.
        units: fnmatch patterns of the unit names to analyse (empty = every unit).
        activation_stats: collect activation statistics and the FP32-vs-quantized shift.
        stats_patches: ROI-size patches of ``stats_split`` streamed through the models for
            the activation statistics.
        stats_split: split the statistics patches come from (train or val).
        stats_granularities: granularities whose shift (SQNR, KL) is measured in the same
            pass (empty = the run's granularity only).
        histogram_bins: bins of the streaming activation histograms (multiple of 4).
        kl_bins: the histograms are merged down to this many bins before the KL divergence,
            so that it compares distribution shapes rather than the quantization grid.
        outlier_sigma: a value is an outlier when it lies more than this many standard
            deviations from the mean of its layer's input.
    """

    name: str = MISSING
    modes: list[str] = MISSING
    group_depth: int = MISSING
    units: list[str] = MISSING
    activation_stats: bool = MISSING
    stats_patches: int = MISSING
    stats_split: str = MISSING
    stats_granularities: list[str] = MISSING
    histogram_bins: int = MISSING
    kl_bins: int = MISSING
    outlier_sigma: float = MISSING

    def __post_init__(self) -> None:
        unknown = [m for m in self.modes if m not in MODES]
        if unknown:
            raise ValueError(f"sensitivity.modes: {unknown} not in {list(MODES)}")
        if self.group_depth < 0:
            raise ValueError(f"sensitivity.group_depth={self.group_depth} must be >= 0")
        if self.stats_patches < 1:
            raise ValueError(f"sensitivity.stats_patches={self.stats_patches} must be >= 1")
        if self.stats_split not in ("train", "val"):
            raise ValueError(f"sensitivity.stats_split={self.stats_split!r}: use train or val")
        for g in self.stats_granularities:
            if g not in ("per_tensor", "per_channel_token", "adaptive"):
                raise ValueError(
                    f"sensitivity.stats_granularities: {g!r} is not one of per_tensor, "
                    "per_channel_token, adaptive"
                )
        if self.histogram_bins < 8 or self.histogram_bins % 4:
            raise ValueError(
                f"sensitivity.histogram_bins={self.histogram_bins} must be a multiple of 4, >= 8"
            )
        if not 2 <= self.kl_bins <= self.histogram_bins or self.histogram_bins % self.kl_bins:
            raise ValueError(
                f"sensitivity.kl_bins={self.kl_bins} must divide histogram_bins="
                f"{self.histogram_bins}"
            )
        if self.outlier_sigma <= 0:
            raise ValueError(f"sensitivity.outlier_sigma={self.outlier_sigma} must be > 0")
