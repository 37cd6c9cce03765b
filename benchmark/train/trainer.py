"""FP32 baseline training: Dice + CE, poly learning rate, sliding-window validation, resumable.

The recipe is nnU-Net's where it matters for a fair baseline and deliberately smaller where the
shipped baselines must train in minutes on two CPU cores:

* **Loss / optimiser / schedule**: Dice + CE without background in the Dice term, poly
  learning rate (:mod:`benchmark.train.recipe`). AdamW by default; nnU-Net's SGD (Nesterov,
  momentum 0.99, lr 1e-2) is ``trainer.optimizer=sgd trainer.lr=0.01``. With a few hundred
  iterations SGD at momentum 0.99 has barely built up its momentum, while AdamW reaches a usable
  tiny model, so the short CPU baselines use AdamW.
* **Patches**: class-balanced foreground oversampling (:mod:`benchmark.train.patches`).
* **Validation**: every ``val_every`` epochs and after the last one
  (:mod:`benchmark.train.validation`).
* **AMP**: ``torch.autocast`` + ``GradScaler`` only on CUDA; the CPU path stays FP32.

Reproducibility: every epoch re-seeds Python, NumPy and torch from ``(seed, epoch)`` and draws
its patches from ``(seed, epoch, index)``, and a checkpoint with model, optimiser, scheduler,
scaler and RNG states is written atomically after every epoch. A run killed at any point and
restarted with the same config (``trainer.resume=true``) continues from the last completed epoch
and, on the CPU, ends with bit-identical weights.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from benchmark.data import SegmentationDataset, open_dataset
from benchmark.models import build_model, full_resolution_logits
from benchmark.results import write_json
from benchmark.train.checkpoint import (
    CHECKPOINT_NAME,
    ResumeError,
    atomic_torch_save,
    capture_rng_state,
    check_same_config,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from benchmark.train.config import RESUME_KEYS, TrainerConfig
from benchmark.train.patches import PatchDataset, make_training_volume
from benchmark.train.recipe import make_loss, make_optimizer, poly_schedule
from benchmark.train.record import build_record, export_baseline, format_dsc
from benchmark.train.validation import ValidationResult, validate

__all__ = ["EpochCallback", "ResumeError", "TrainResult", "Trainer", "train"]

log = logging.getLogger(__name__)

#: ``callback(trainer, epoch, entry)`` after each epoch's checkpoint is written (``epoch`` 1-based).
EpochCallback = Callable[["Trainer", int, dict[str, Any]], None]


@dataclass
class TrainResult:
    """Outcome of :meth:`Trainer.fit`.

    Attributes:
        model: the trained network (eval mode, on the training device).
        output_dir: folder with ``checkpoint.pt``, ``model_final.pt``, ``history.json`` and
            ``record.json``.
        epochs: completed epochs.
        final_val: validation after the last epoch.
        best_val_dsc / best_epoch: best mean validation DSC seen and its (1-based) epoch.
        train_wall_s: wall time of training and validation, summed over resumed sessions (s).
        history: one dict per epoch (loss, lr, wall time, validation when run).
        record: the training record (also ``record.json``).
        resumed_from: completed epochs found in the checkpoint (0 = fresh start).
    """

    model: nn.Module
    output_dir: Path
    epochs: int
    final_val: ValidationResult
    best_val_dsc: float
    best_epoch: int
    train_wall_s: float
    history: list[dict[str, Any]] = field(default_factory=list)
    record: dict[str, Any] = field(default_factory=dict)
    resumed_from: int = 0


def _plain(cfg: Mapping[str, Any] | None) -> dict[str, Any]:
    if cfg is None:
        return {}
    return {k: _plain(v) if isinstance(v, Mapping) else v for k, v in cfg.items()}


def _epoch_seed(seed: int, epoch: int) -> int:
    return int(np.random.SeedSequence([int(seed), int(epoch), 0x5EED]).generate_state(1)[0])


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class Trainer:
    """Train one model config on one dataset (see the module docstring for the recipe).

    Args:
        cfg: composed config with ``model`` (``conf/model/<name>.yaml``), ``data``
            (``conf/data/<name>.yaml``) and ``trainer`` (:class:`TrainerConfig`) sections.
        output_dir: run folder; defaults to ``trainer.output_dir``.
        dataset: an opened dataset (tests pass small ones); default ``open_dataset(cfg.data)``.
        command: the command line that started the run, kept in the record.
        callbacks: called after each epoch (e.g. to stop a run in tests).

    Raises:
        TrainerConfigError: invalid ``trainer`` values.
        ValueError: no output folder given.
    """

    def __init__(
        self,
        cfg: Mapping[str, Any],
        output_dir: str | Path | None = None,
        dataset: SegmentationDataset | None = None,
        command: str | None = None,
        callbacks: Sequence[EpochCallback] = (),
    ):
        self.cfg = cfg
        self.tcfg = TrainerConfig.from_mapping(cfg.get("trainer"))
        self.model_cfg = cfg["model"]
        self.data_cfg = _plain(cfg.get("data"))
        out = output_dir if output_dir is not None else self.tcfg.output_dir
        if out is None:
            raise ValueError(
                "Trainer needs an output folder: pass output_dir or set trainer.output_dir"
            )
        self.output_dir = Path(out)
        self.dataset = dataset if dataset is not None else open_dataset(cfg["data"])
        self.command = command
        self.callbacks = list(callbacks)
        self.patch_size = [int(s) for s in (self.tcfg.patch_size or self.model_cfg["patch_size"])]
        self.device = torch.device(self.tcfg.device)
        self.use_amp = bool(self.tcfg.amp) and self.device.type == "cuda"

    @property
    def checkpoint_path(self) -> Path:
        """``<output_dir>/checkpoint.pt``."""
        return self.output_dir / CHECKPOINT_NAME

    def _fingerprint(self) -> dict[str, Any]:
        """What a resumed run must share with the checkpoint it continues."""
        trainer = self.tcfg.to_dict()
        return {
            "model": _plain(self.model_cfg),
            "data": self.data_cfg,
            "trainer": {k: trainer[k] for k in RESUME_KEYS},
        }

    def _build(self) -> None:
        t = self.tcfg
        _seed_all(t.seed)
        self.model = build_model(
            self.model_cfg, self.dataset.in_channels, self.dataset.num_classes, device=self.device
        )
        self.optimizer = make_optimizer(self.model.parameters(), t)
        self.scheduler = poly_schedule(
            self.optimizer, t.epochs * t.iterations_per_epoch, t.poly_exponent
        )
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)
        self.loss_fn = make_loss()

    def _load_cases(self) -> None:
        t = self.tcfg
        train_ids = self.dataset.split("train")
        val_ids = self.dataset.split("val")
        if not train_ids or not val_ids:
            raise ValueError(
                f"dataset {self.dataset.name!r} has {len(train_ids)} train and {len(val_ids)} val "
                "cases; both must be non-empty (see data.split.fractions)"
            )
        volumes = []
        for case_id in train_ids:
            case = self.dataset.prepare(case_id)
            volumes.append(
                make_training_volume(
                    case_id,
                    case.image,
                    case.label_preprocessed,
                    self.patch_size,
                    self.dataset.num_classes,
                )
            )
        self._load_val_cases()
        self.patches = PatchDataset(
            volumes,
            self.patch_size,
            length=t.iterations_per_epoch * t.batch_size,
            seed=t.seed,
            foreground_fraction=t.foreground_fraction,
            flip_prob=t.flip_prob,
            flip_axes=t.flip_axes,
            intensity_prob=t.intensity_prob,
            intensity_scale=t.intensity_scale,
            intensity_shift=t.intensity_shift,
        )

    def _load_val_cases(self) -> None:
        val_ids = self.dataset.split("val")[: self.tcfg.max_val_cases]
        self.val_cases = [self.dataset.prepare(c) for c in val_ids]

    def _train_epoch(self, epoch: int) -> float:
        t = self.tcfg
        _seed_all(_epoch_seed(t.seed, epoch))
        self.patches.set_epoch(epoch)
        loader = DataLoader(
            self.patches,
            batch_size=t.batch_size,
            shuffle=False,
            num_workers=t.num_workers,
            drop_last=True,
        )
        self.model.train()
        losses = []
        bar = tqdm(
            loader,
            desc=f"epoch {epoch + 1}/{t.epochs}",
            disable=not t.progress,
            leave=False,
            dynamic_ncols=True,
        )
        for image, label in bar:
            image = image.to(self.device, non_blocking=True)
            label = label.to(self.device, non_blocking=True)
            self.optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device_type=self.device.type, enabled=self.use_amp):
                logits = full_resolution_logits(self.model(image))
                loss = self.loss_fn(logits.float(), label)
            self.scaler.scale(loss).backward()
            if t.grad_clip_norm is not None:
                self.scaler.unscale_(self.optimizer)
                nn.utils.clip_grad_norm_(self.model.parameters(), t.grad_clip_norm)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.scheduler.step()
            losses.append(float(loss.detach()))
            bar.set_postfix(loss=f"{losses[-1]:.4f}", lr=f"{self.scheduler.get_last_lr()[0]:.2e}")
        bar.close()
        return float(np.mean(losses))

    def _validate(self) -> ValidationResult:
        return validate(
            self.model,
            self.val_cases,
            self.dataset.labels,
            roi_size=self.patch_size,
            overlap=self.tcfg.val_overlap,
            sw_batch_size=self.tcfg.val_sw_batch_size,
            device=self.device,
            amp=self.use_amp,
        )

    def _resume(self) -> dict[str, Any] | None:
        if not (self.tcfg.resume and self.checkpoint_path.is_file()):
            return None
        state = load_checkpoint(self.checkpoint_path)
        check_same_config(state["config"], self._fingerprint(), self.checkpoint_path)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.use_amp and state["scaler"]:
            self.scaler.load_state_dict(state["scaler"])
        restore_rng_state(state["rng"])
        log.info(
            "resuming %s from epoch %d (%s)",
            self.model_cfg["name"],
            state["epoch"],
            self.checkpoint_path,
        )
        return state

    def fit(self) -> TrainResult:
        """Train (or continue training) to ``trainer.epochs`` and return the result.

        Writes ``checkpoint.pt`` after every epoch, ``model_best.pt`` when validation improves,
        and at the end ``model_final.pt`` (state dict), ``history.json``, ``record.json``, plus
        ``<export_dir>/<name>.pt`` and ``<name>.json`` when ``trainer.export_dir`` is set.
        """
        t = self.tcfg
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self._build()
        state = self._resume()
        start = int(state["epoch"]) if state else 0
        history: list[dict[str, Any]] = list(state["history"]) if state else []
        best = float(state["best_val_dsc"]) if state else -math.inf
        best_epoch = int(state["best_epoch"]) if state else 0
        wall = float(state["train_wall_s"]) if state else 0.0
        final_val: ValidationResult | None = None
        if start < t.epochs:
            self._load_cases()
        name = self.model_cfg["name"]
        for epoch in range(start, t.epochs):
            tic = time.perf_counter()
            loss = self._train_epoch(epoch)
            entry: dict[str, Any] = {
                "epoch": epoch + 1,
                "loss": loss,
                "lr": self.scheduler.get_last_lr()[0],
            }
            if (epoch + 1) % t.val_every == 0 or epoch + 1 == t.epochs:
                final_val = self._validate()
                entry["val_mean_dsc"] = final_val.mean_dsc
                entry["val_per_class"] = final_val.per_class
                if final_val.mean_dsc > best:
                    best, best_epoch = final_val.mean_dsc, epoch + 1
                    atomic_torch_save(self.model.state_dict(), self.output_dir / "model_best.pt")
            entry["wall_s"] = time.perf_counter() - tic
            wall += entry["wall_s"]
            history.append(entry)
            log.info(
                "%s epoch %d/%d loss %.4f lr %.2e %.1f s%s",
                name,
                epoch + 1,
                t.epochs,
                loss,
                entry["lr"],
                entry["wall_s"],
                f" val mean DSC {final_val.mean_dsc:.4f}" if "val_mean_dsc" in entry else "",
            )
            self._save_checkpoint(epoch + 1, history, best, best_epoch, wall)
            for callback in self.callbacks:
                callback(self, epoch + 1, entry)
        if final_val is None:
            # Nothing left to train (a finished run was restarted): score the saved weights again.
            self._load_val_cases()
            final_val = self._validate()
        return self._finish(final_val, history, best, best_epoch, wall, start)

    def _save_checkpoint(
        self, epoch: int, history: list[dict[str, Any]], best: float, best_epoch: int, wall: float
    ) -> None:
        """Everything an exact resume after ``epoch`` needs (RNG states included)."""
        save_checkpoint(
            self.checkpoint_path,
            {
                "epoch": epoch,
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(),
                "rng": capture_rng_state(),
                "history": history,
                "best_val_dsc": best,
                "best_epoch": best_epoch,
                "train_wall_s": wall,
                "config": self._fingerprint(),
            },
        )

    def _finish(
        self,
        final_val: ValidationResult,
        history: list[dict[str, Any]],
        best: float,
        best_epoch: int,
        wall: float,
        start: int,
    ) -> TrainResult:
        """Write the final weights, history and record (and the export), and return the result."""
        t, name = self.tcfg, self.model_cfg["name"]
        self.model.eval()
        log.info(
            "%s final validation (%d cases): %s", name, len(self.val_cases), format_dsc(final_val)
        )
        atomic_torch_save(self.model.state_dict(), self.output_dir / "model_final.pt")
        write_json(self.output_dir / "history.json", {"history": history})
        record = build_record(
            trainer=self,
            final_val=final_val,
            epochs=t.epochs,
            train_wall_s=wall,
            best_val_dsc=best,
            best_epoch=best_epoch,
        )
        write_json(self.output_dir / "record.json", record)
        if t.export_dir is not None:
            paths = export_baseline(self.model, record, t.export_dir, name)
            log.info("exported %s", ", ".join(str(p) for p in paths))
        return TrainResult(
            model=self.model,
            output_dir=self.output_dir,
            epochs=t.epochs,
            final_val=final_val,
            best_val_dsc=best,
            best_epoch=best_epoch,
            train_wall_s=wall,
            history=history,
            record=record,
            resumed_from=start,
        )


def train(
    cfg: Mapping[str, Any],
    output_dir: str | Path | None = None,
    dataset: SegmentationDataset | None = None,
    command: str | None = None,
) -> TrainResult:
    """Train the model of ``cfg`` (see :class:`Trainer`); the plain-function entry point."""
    return Trainer(cfg, output_dir=output_dir, dataset=dataset, command=command).fit()
