"""Layer-wise sensitivity: which layers break a quantized model, and whether weights or
activations are to blame (``task=sensitivity``).

For the run's spec (say W4A4 adaptive) the network's quantizable layers are grouped into units
(single layers or blocks, :class:`~benchmark.schema.sensitivity.SensitivityConfig`) and these
variants are scored on the evaluation cases, each one a row set with ``mode`` and ``layer``:

- ``reference`` (FP32) and ``all`` (every unit at the spec), ``layer`` None;
- ``one_layer``: the unit alone at the spec, everything else FP32 (what the unit costs);
- ``all_but_one``: every unit but this one at the spec (what keeping it in FP32 recovers);
- ``weights_only`` / ``activations_only``: the unit alone at ``wNa16`` / ``w16aM``
  (``layer`` None: the whole model at those precisions).

Calibration runs three times per run, not once per variant: the whole model at the spec (its
ranges serve ``all`` and ``all_but_one``, whose upstream weights are quantized too), at
``w16aM`` (FP32 weights, so exactly the FP32 activations: ``one_layer`` and
``activations_only``) and at ``wNa16`` (``weights_only``). Each variant copies the ranges of its
layers from the matching calibration. DSC/NSD are stored raw; :mod:`benchmark.analysis.summary`
computes the drops. With ``activation_stats`` the same run adds the activation statistics of
:mod:`benchmark.analysis.activations` (``mode`` ``activation_stats`` / ``activation_shift``).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import logging
import time
from collections.abc import Iterable, Sequence
from typing import Any

import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

import benchmark.data as data_layer
import benchmark.metrics as metrics_layer
import benchmark.models as models_layer
import benchmark.quant as quant_layer
from benchmark.analysis.activations import collect_activation_statistics
from benchmark.points.context import RunContext, spec_bits
from benchmark.points.sources import ModelSource, open_source
from benchmark.quant import QuantSpec
from benchmark.schema import RunPoint
from benchmark.schema.sensitivity import SensitivityConfig

__all__ = ["SCORED_METRICS", "analysis_units", "run_sensitivity", "variant_spec"]

log = logging.getLogger(__name__)

#: Metrics kept per variant, case and class (HD95 and calibration metrics add little here).
SCORED_METRICS = ("dsc", "nsd")


def analysis_units(
    layers: Sequence[str], group_depth: int = 0, patterns: Sequence[str] = ()
) -> dict[str, list[str]]:
    """Group layer names into units, in network order.

    Args:
        layers: dotted names of the quantized layers in registration order.
        group_depth: 0 = one unit per layer; N = layers sharing their first N name parts.
        patterns: fnmatch patterns of unit names to keep (empty = all).

    Returns:
        unit name -> its layer names.
    """
    units: dict[str, list[str]] = {}
    for name in layers:
        unit = ".".join(name.split(".")[:group_depth]) if group_depth else name
        units.setdefault(unit or name, []).append(name)
    if patterns:
        units = {u: v for u, v in units.items() if any(fnmatch.fnmatchcase(u, p) for p in patterns)}
    return units


def variant_spec(spec: Any, layers: Iterable[str], precision: str | None = None) -> Any:
    """``spec`` restricted to exactly ``layers`` (optionally at another precision).

    The layers are listed as ``include`` names and ``keep_first_last`` is switched off: the
    layer list already comes from the full model, where kept layers were left out.
    """
    return dataclasses.replace(
        spec,
        precision=precision or spec.precision,
        include=tuple(layers),
        keep_first_last=False,
    )


def _calibrated_full(model: nn.Module, spec: Any, batches: list[torch.Tensor]) -> nn.Module:
    qmodel = quant_layer.quantize(model, spec, example=_example(batches))
    quant_layer.calibrate(qmodel, batches)
    return qmodel


def _example(batches: list[torch.Tensor]) -> torch.Tensor:
    """Zeros of the input shape: the engine traces them to follow the data flow, the same for
    every variant, so that ranges copy between them."""
    return torch.zeros_like(batches[0][:1])


def _executed(model: nn.Module, names: Sequence[str], batch: torch.Tensor) -> list[str]:
    """The names among ``names`` that a forward pass reaches (unused heads are dropped)."""
    seen: set[str] = set()
    handles = [
        model.get_submodule(n).register_forward_pre_hook(lambda m, i, n=n: seen.add(n))
        for n in names
    ]
    try:
        with torch.no_grad():
            model(batch)
    finally:
        for handle in handles:
            handle.remove()
    return [n for n in names if n in seen]


class _Scorer:
    """Scores a model on the run's cases (prepared once, kept in memory)."""

    def __init__(self, point: RunPoint, source: ModelSource) -> None:
        self.point, self.source = point, source
        dataset = source.dataset
        self.labels = {int(k): str(v) for k, v in dataset.labels.items()}
        self.foreground = [k for k in sorted(self.labels) if k != 0]
        case_ids = list(dataset.split(point.evaluation.split))
        if point.evaluation.max_cases is not None:
            case_ids = case_ids[: int(point.evaluation.max_cases)]
        self.cases = [dataset.prepare(c) for c in case_ids]

    def __call__(self, model: nn.Module) -> list[dict[str, Any]]:
        rows = []
        for case in self.cases:
            probs = self.source.probabilities(model, case)
            scores = metrics_layer.score_case(
                self.source.labels_of(probs, case),
                case.label,
                spacing_mm=tuple(case.spacing_mm),
                labels=self.foreground,
                tolerance_mm=float(self.point.evaluation.tolerance_mm),
            )
            rows += [
                {
                    "case": case.case_id,
                    **{k: r[k] for k in ("class", "metric", "value")},
                    "tolerance_mm": r.get("tolerance_mm", float("nan")),
                }
                for r in scores
                if r["metric"] in SCORED_METRICS
            ]
        return rows


def _point(spec: Any, precision: str | None = None, calib_n: int = 0) -> dict[str, Any]:
    variant = QuantSpec(precision) if precision is not None else spec
    precision = variant.precision
    w_bits, a_bits = spec_bits(variant)
    if variant.is_float:
        return {
            "precision": precision,
            "w_bits": w_bits,
            "a_bits": a_bits,
            "granularity": "none",
            "observer": "none",
            "calib_n": 0,
        }
    return {
        "precision": precision,
        "w_bits": w_bits,
        "a_bits": a_bits,
        "granularity": spec.granularity,
        "observer": spec.observer,
        "calib_n": calib_n,
    }


def run_sensitivity(context: RunContext) -> pd.DataFrame:
    """Score the sensitivity variants of one spec and return their tidy rows.

    Args:
        context: a run point with ``task=sensitivity`` and an integer precision.

    Returns:
        Rows with ``case``, ``class``, ``class_name``, ``metric``, ``value``,
        ``tolerance_mm``, ``split``, ``dataset``, ``params_m``, the quantization point of the
        variant (``precision``, ``w_bits``, ``a_bits``, ``granularity``, ``observer``,
        ``algorithm``, ``calib_n``) and ``mode``, ``layer`` (unit name or None),
        ``layer_index`` (unit position in network order; for activation rows the layer's
        position among the quantized layer inputs), ``unit_layers`` (layers in the unit),
        ``op_type`` (activation rows). The job adds the per-run columns.

    Raises:
        ValueError: a floating-point precision (nothing to attribute), or no unit selected.
    """
    point = context.point
    if point.is_float:
        raise ValueError(
            f"task=sensitivity needs an integer precision (e.g. precision=w4a4), "
            f"got precision={point.precision}"
        )
    sens, spec = point.sensitivity, point.spec
    source = open_source(point)
    model = source.model.to(point.inference.device)
    batches = _calibration_batches(point, source)
    full = _calibrated_full(model, spec, batches)
    layers = _executed(full, quant_layer.quantized_layer_names(full), batches[0])
    units = analysis_units(layers, sens.group_depth, sens.units)
    if not units:
        raise ValueError(
            f"sensitivity.units={sens.units} selects none of the units of {point.model.name}: "
            f"{list(analysis_units(layers, sens.group_depth))}"
        )
    scorer = _Scorer(point, source)
    records = _Records(units, layers)
    sources = _variant_sources(point, model, full, layers, batches)
    _score_whole_model(records, scorer, point, model, sources)
    _score_units(records, scorer, point, model, sources, _example(batches))
    rows = pd.DataFrame.from_records(records)
    rows["class"] = rows["class"].astype(int)
    rows["class_name"] = rows["class"].map(scorer.labels).fillna("case")
    if sens.activation_stats:
        rows = pd.concat(
            [
                rows,
                _activation_rows(point, sens, model, spec, full, layers, source.dataset, batches),
            ],
            ignore_index=True,
        )
    rows["split"] = point.evaluation.split
    rows["dataset"] = point.data.name
    rows["algorithm"] = spec.algorithm
    rows["params_m"] = float(_params_m(point, source, model))
    return rows


def _params_m(point: RunPoint, source: ModelSource, model: nn.Module) -> float:
    """The registry's published size, or the counted one (a user's folder, no published one)."""
    params_m = point.model.published_params_m if source.folder is None else None
    return models_layer.count_parameters(model) / 1e6 if params_m is None else params_m


def _calibration_batches(point: RunPoint, source: ModelSource) -> list[torch.Tensor]:
    """The calibration patches of ``point`` (training cases), on the inference device."""
    return [
        b.as_subclass(torch.Tensor).to(point.inference.device)
        for b in data_layer.calibration_patches(
            source.dataset,
            split=point.calibration.split,
            n=int(point.calibration.n),
            roi_size=tuple(source.roi),
            seed=int(point.calibration.seed),
            batch_size=int(point.calibration.batch_size),
        )
    ]


class _Records(list):
    """Score rows, each tagged with the variant (mode, unit) it was measured on."""

    def __init__(self, units: dict[str, list[str]], layers: list[str]):
        super().__init__()
        self.units, self.layers = units, layers

    def add(self, rows: list[dict], mode: str, unit: str | None, point: dict[str, Any]) -> None:
        index = list(self.units).index(unit) if unit is not None else None
        size = len(self.units[unit]) if unit is not None else len(self.layers)
        for row in rows:
            self.append(
                {
                    **row,
                    **point,
                    "mode": mode,
                    "layer": unit,
                    "layer_index": index,
                    "unit_layers": size,
                }
            )


def _variant_sources(
    point: RunPoint, model: nn.Module, full: nn.Module, layers: list[str], batches: list
) -> dict[str, nn.Module]:
    """The calibrated models whose ranges each mode's variants copy: the spec itself, and
    the weights-float (``act``) and activations-float (``weight``) variants where needed."""
    sens, spec = point.sensitivity, point.spec
    precisions = _half_float_precisions(spec)
    sources = {"spec": full}
    if "activations_only" in sens.modes or "one_layer" in sens.modes:
        sources["act"] = _calibrated_full(
            model, variant_spec(spec, layers, precisions["act"]), batches
        )
    if "weights_only" in sens.modes:
        sources["weight"] = _calibrated_full(
            model, variant_spec(spec, layers, precisions["weight"]), batches
        )
    return sources


def _half_float_precisions(spec: Any) -> dict[str, str]:
    """The precisions of the two half-quantized sources: activations only (``act``, weights
    kept at 16 bits) and weights only (``weight``, activations kept at 16 bits)."""
    return {"act": f"w16a{spec.a_bits}", "weight": f"w{spec.w_bits}a16"}


def _score_whole_model(
    records: _Records, scorer: _Scorer, point: RunPoint, model: nn.Module, sources: dict
) -> None:
    """The FP32 reference, the whole spec, and the whole-model weights/activations-only modes."""
    spec, calib_n = point.spec, int(point.calibration.n)
    records.add(scorer(model), "reference", None, _point(spec, "fp32"))
    records.add(scorer(sources["spec"]), "all", None, _point(spec, calib_n=calib_n))
    precisions = _half_float_precisions(spec)
    for mode, source in (("activations_only", "act"), ("weights_only", "weight")):
        if mode in point.sensitivity.modes:
            variant_point = _point(spec, precisions[source], calib_n)
            records.add(scorer(sources[source]), mode, None, variant_point)


def _score_units(
    records: _Records,
    scorer: _Scorer,
    point: RunPoint,
    model: nn.Module,
    sources: dict,
    example: torch.Tensor,
) -> None:
    """Every unit under every mode: the unit alone quantized (one_layer, weights_only,
    activations_only) or everything but the unit (all_but_one), with the sources' ranges."""
    sens, spec, calib_n = point.sensitivity, point.spec, int(point.calibration.n)
    units, layers = records.units, records.layers
    precisions = _half_float_precisions(spec)
    plan = {
        "one_layer": ("act", None, lambda unit: units[unit]),
        "all_but_one": ("spec", None, lambda unit: [n for n in layers if n not in units[unit]]),
        "weights_only": ("weight", precisions["weight"], lambda unit: units[unit]),
        "activations_only": ("act", precisions["act"], lambda unit: units[unit]),
    }
    start = time.perf_counter()
    jobs = [(mode, unit) for unit in units for mode in sens.modes]
    bar = tqdm(
        jobs, desc="sensitivity", unit="variant", disable=not point.run.progress, leave=False
    )
    for mode, unit in bar:
        source, precision, chosen = plan[mode]
        selected = chosen(unit)
        if not selected:
            continue
        variant = quant_layer.quantize(
            model, variant_spec(spec, selected, precision), example=example
        )
        quant_layer.copy_ranges(sources[source], variant)
        records.add(scorer(variant), mode, unit, _point(spec, precision, calib_n))
    log.info(
        "%d units x %d modes scored on %d case(s) in %.1f s",
        len(units),
        len(sens.modes),
        len(scorer.cases),
        time.perf_counter() - start,
    )


def _activation_rows(
    point: RunPoint,
    sens: SensitivityConfig,
    model: nn.Module,
    spec: Any,
    full: nn.Module,
    layers: list[str],
    dataset: Any,
    batches: list[torch.Tensor],
) -> pd.DataFrame:
    """Activation statistics of every quantized layer input, per granularity in one pass."""
    granularities = list(sens.stats_granularities) or [spec.granularity]
    qmodels = {}
    for granularity in granularities:
        if granularity == spec.granularity:
            qmodels[granularity] = full
        else:
            qmodels[granularity] = _calibrated_full(
                model, dataclasses.replace(spec, granularity=granularity), batches
            )
    with_input = [n for n in layers if hasattr(full.get_submodule(n), "input_quant")]
    patches = data_layer.calibration_patches(
        dataset,
        split=sens.stats_split,
        n=sens.stats_patches,
        roi_size=tuple(batches[0].shape[2:]),
        seed=int(point.calibration.seed),
        batch_size=1,
    )
    stats = collect_activation_statistics(
        model, qmodels, patches, with_input, sens.histogram_bins, sens.kl_bins, sens.outlier_sigma
    )
    fp32 = stats["spec"].isna()
    stats["mode"] = fp32.map({True: "activation_stats", False: "activation_shift"})
    point = {True: _point(spec, "fp32"), False: _point(spec, calib_n=int(point.calibration.n))}
    for key in point[True]:
        stats[key] = [point[bool(f)][key] for f in fp32]
    stats.loc[~fp32, "granularity"] = stats.loc[~fp32, "spec"]
    stats["case"] = None
    stats["class"] = metrics_layer.CASE_CLASS
    stats["class_name"] = "case"
    stats["tolerance_mm"] = float("nan")
    stats["unit_layers"] = 1
    return stats.drop(columns="spec")
