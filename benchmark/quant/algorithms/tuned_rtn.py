"""``tuned_rtn``: round to nearest with searched clipping ranges, the baseline methods must beat.

Round to nearest is much stronger with well-chosen ranges than with min-max ones (the OMSE
baseline of Choukroun et al. 2019, "Low-bit Quantization of Neural Networks for Efficient
Inference"): on the tiny nnU-Net at W4A4 per-tensor, searched ranges and an asymmetric
activation grid lose a few DSC points where min-max ranges lose many. A PTQ method's gain is
only real against this baseline, so it is an algorithm of its own and a row of every study.

**What it changes**: nothing in the weights. Before ranges are observed every integer weight
and static activation quantizer switches to the ``mse`` range search (grid search of the
clipping ratio that minimises the squared quantization error, per scale group), whatever the
spec's ``observer`` and ``weight_observer`` say; the activation grid stays the spec's
(asymmetric by default for integer grids). Dynamic quantizers have no ranges and are left alone.

**Cost**: the calibration pass with a 20-point search per activation quantizer and batch (about
twice a min-max calibration), one search per weight.

Options: ``observer`` (``mse``; any registered activation observer), ``weight_observer``
(``mse`` or ``minmax``).
"""

from __future__ import annotations

from torch import nn

from benchmark.quant.algorithms.base import Algorithm, register_algorithm
from benchmark.quant.algorithms.layer_inputs import with_defaults
from benchmark.quant.quantizer import ActivationQuantizer
from benchmark.quant.weight_quantizer import WeightQuantizer

__all__ = ["TunedRoundToNearest", "DEFAULTS"]

DEFAULTS = {"observer": "mse", "weight_observer": "mse"}


@register_algorithm
class TunedRoundToNearest(Algorithm):
    """Switches every range estimate to a search before calibration observes anything."""

    name = "tuned_rtn"

    def prepare(self, qmodel: nn.Module) -> None:
        """Here rather than before calibration: weight ranges are computed when a weight is
        quantized, so a model restored by ``load_ranges`` (which replays ``prepare``) needs the
        switch too."""
        options = with_defaults(self.name, DEFAULTS, self.options)
        for module in qmodel.modules():
            if isinstance(module, ActivationQuantizer) and not module.dynamic:
                module.observer_kind = str(options["observer"])
            elif type(module) is WeightQuantizer:  # block formats have no range to search
                module.observer_kind = str(options["weight_observer"])
                module.invalidate()
