"""The training record shipped beside a baseline's weights, and the export of both.

A shipped baseline is only trustworthy with its provenance: the exact command, seed, recipe,
data config, machine, library versions, wall time and the validation DSC the run printed. The
DSC values in the record are rounded exactly as :func:`format_dsc` prints them, so the record
and the run's log agree digit for digit.
"""

from __future__ import annotations

import math
import platform
from pathlib import Path
from typing import TYPE_CHECKING, Any

import monai
import torch
from torch import nn

from benchmark.models import count_parameters
from benchmark.results import provenance, write_json
from benchmark.train.checkpoint import atomic_torch_save
from benchmark.train.validation import ValidationResult

if TYPE_CHECKING:
    from benchmark.train.trainer import Trainer

__all__ = ["DSC_DECIMALS", "build_record", "export_baseline", "format_dsc"]

#: Decimals of every DSC printed and recorded.
DSC_DECIMALS = 4


def _round(x: float) -> float | None:
    return None if math.isnan(x) else round(float(x), DSC_DECIMALS)


def format_dsc(result: ValidationResult) -> str:
    """``mean 0.8123 | liver 0.9512, spleen 0.9011, ...`` with :data:`DSC_DECIMALS` decimals."""
    classes = ", ".join(
        f"{k} {'nan' if math.isnan(v) else format(v, f'.{DSC_DECIMALS}f')}"
        for k, v in result.per_class.items()
    )
    return f"mean {result.mean_dsc:.{DSC_DECIMALS}f} | {classes}"


def build_record(
    trainer: Trainer,
    final_val: ValidationResult,
    epochs: int,
    train_wall_s: float,
    best_val_dsc: float,
    best_epoch: int,
) -> dict[str, Any]:
    """The JSON record of a finished training run.

    Args:
        trainer: the finished :class:`~benchmark.train.Trainer`.
        final_val: validation after the last epoch (the weights that are saved).
        epochs: completed epochs.
        train_wall_s: training + validation wall time over all sessions, seconds.
        best_val_dsc / best_epoch: best mean validation DSC and its epoch.

    Returns:
        A JSON-ready dict; ``val_mean_dsc`` / ``val_dsc`` hold the final (saved) model's scores.
    """
    t = trainer.tcfg
    prov = provenance()
    model_cfg = dict(trainer.model_cfg)
    return {
        "model": model_cfg["name"],
        "display_name": model_cfg.get("display_name"),
        "params": count_parameters(trainer.model),
        "command": trainer.command,
        "seed": t.seed,
        "epochs": epochs,
        "iterations_per_epoch": t.iterations_per_epoch,
        "batch_size": t.batch_size,
        "patch_size": trainer.patch_size,
        "optimizer": t.optimizer,
        "lr": t.lr,
        "dataset": trainer.dataset.name,
        "num_classes": trainer.dataset.num_classes,
        "labels": {str(k): v for k, v in trainer.dataset.labels.items()},
        "train_cases": trainer.dataset.split("train"),
        "val_cases": [c.case_id for c in trainer.val_cases],
        "val_mean_dsc": _round(final_val.mean_dsc),
        "val_dsc": {k: _round(v) for k, v in final_val.per_class.items()},
        "val_dsc_per_case": {
            c: {k: _round(v) for k, v in d.items()} for c, d in final_val.per_case.items()
        },
        "val_roi_size": trainer.patch_size,
        "val_overlap": t.val_overlap,
        "best_val_mean_dsc": None if not math.isfinite(best_val_dsc) else _round(best_val_dsc),
        "best_epoch": best_epoch,
        "train_wall_s": round(train_wall_s, 1),
        "device": str(trainer.device),
        "amp": trainer.use_amp,
        "torch_threads": torch.get_num_threads(),
        "machine": prov["hardware"],
        "platform": platform.platform(),
        "python": prov["python"],
        "torch": prov["torch"],
        "monai": monai.__version__,
        "commit": prov["commit"],
        "dirty": prov["dirty"],
        "created": prov["created"],
        "trainer": t.to_dict(),
        "model_config": model_cfg,
        "data_config": trainer.data_cfg,
    }


def export_baseline(
    model: nn.Module, record: dict[str, Any], export_dir: str | Path, name: str
) -> tuple[Path, Path]:
    """Write ``<export_dir>/<name>.pt`` (FP32 state dict) and ``<name>.json`` (the record).

    ``checkpoint: shipped`` in ``conf/model/<name>.yaml`` loads these files when ``export_dir``
    is ``benchmark/models/weights``. Weights are written before the record, both atomically, so
    a record never describes weights that are not there.

    Returns:
        ``(weights_path, record_path)``.
    """
    export_dir = Path(export_dir)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    weights = atomic_torch_save(state, export_dir / f"{name}.pt")
    record_path = write_json(export_dir / f"{name}.json", record)
    return weights, record_path
