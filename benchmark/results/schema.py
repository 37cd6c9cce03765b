"""The tidy result schema: one row per run x case x class x metric (see DESIGN.md).

Every pipeline (evaluation, sensitivity, deployment) ends in rows with at least these columns;
extra columns (``layer``, ``backend``, timings, ...) are allowed and kept. Means, relative drops
and confidence intervals are computed from these rows by :mod:`benchmark.report`, never stored.
"""

from __future__ import annotations

import pandas as pd

__all__ = ["COLUMN_DOCS", "ROW_COLUMNS", "EXTRA_COLUMN_DOCS", "SchemaError", "check_rows"]

#: Required columns and what they mean, in the order they are written.
COLUMN_DOCS: dict[str, str] = {
    "experiment": "the sweep the run belongs to (``experiment_name``; also the results folder)",
    "run_id": "readable id of the run: model, quantization point and the config-hash prefix",
    "config_hash": "sha256 (hex) of the run's canonical resolved config; equal hash = same run",
    "model": "model config name (``conf/model/<name>.yaml``)",
    "family": "architecture family from the model config: cnn, hybrid or transformer",
    "params_m": "parameters in millions: the published count when the model config has one, "
    "else counted on the built network",
    "dataset": "dataset name (``data.name``)",
    "split": "split the case was drawn from (train, val, test)",
    "case": "case id within the dataset",
    "class": "integer label of the scored class (0 = background)",
    "class_name": "the class's name from the dataset's label map",
    "precision": "fp32, fp16, bf16 or wNaM (N-bit weights, M-bit activations)",
    "w_bits": "weight bits (32 for fp32, 16 for fp16/bf16)",
    "a_bits": "activation bits (32 for fp32, 16 for fp16/bf16)",
    "granularity": "per_tensor, per_channel_token, adaptive, or none for floating point",
    "observer": "range observer (minmax, moving_average, percentile, mse) or none",
    "algorithm": "post-training quantization algorithm (none = plain rounding)",
    "calib_n": "number of calibration patches (0 when nothing was calibrated)",
    "metric": "dsc, nsd, hd95, ece, brier, or a pipeline-specific metric id",
    "tolerance_mm": "NSD boundary tolerance in mm (NaN for metrics without one)",
    "value": "the score (DSC/NSD in [0, 1], HD95 in mm, NaN when undefined)",
    "seed": "global seed of the run",
    "commit": "git commit of the code that produced the row",
    "created": "UTC time the run started (ISO 8601)",
}

#: Extra columns the standard evaluation adds (other pipelines may add their own).
EXTRA_COLUMN_DOCS: dict[str, str] = {
    "task": "pipeline that produced the row: evaluate, sensitivity or deploy",
    "framework": "model framework from the model config (nnUNet, MONAI, MedFormer)",
    "display_name": "architecture name as published (nnU-Net, STU-Net-B, SwinUNETR, ...)",
    "params_m_counted": "parameters in millions counted on the built network",
    "dirty": "True when the working tree had uncommitted changes",
    "package_version": "medqbench version",
    "hardware": "device the run used and the host's CPU / GPU description",
    "calibration_s": "seconds spent calibrating (0 when ranges came from the cache)",
    "inference_s": "seconds of sliding-window prediction over the scored cases",
    "scoring_s": "seconds of restoring to the original grid and scoring",
    "reference": "what the prediction was compared with: label (ground truth) or fp32",
}

ROW_COLUMNS: tuple[str, ...] = tuple(COLUMN_DOCS)


class SchemaError(ValueError):
    """Rows that do not follow :data:`ROW_COLUMNS`."""


def check_rows(rows: pd.DataFrame, where: str = "rows") -> None:
    """Raise :class:`SchemaError` naming the missing columns when ``rows`` lacks any.

    Args:
        rows: tidy rows.
        where: what the rows are (for the message), e.g. the run id.
    """
    missing = [c for c in ROW_COLUMNS if c not in rows.columns]
    if missing:
        raise SchemaError(
            f"{where}: missing result column(s) {missing}; every row needs {list(ROW_COLUMNS)}"
        )
