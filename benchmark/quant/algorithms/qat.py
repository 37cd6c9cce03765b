"""``qat``: quantization-aware fine-tuning from the FP32 weights (LSQ / LSQ+ step sizes).

After range calibration, every calibrated static quantizer's scale becomes a parameter
initialised from the calibrated range, and so do the weight quantizers' scales (initialised
from each weight's round-to-nearest range); asymmetric grids also learn their zero point
(LSQ+). Rounding is straight-through for weights and activations, and step-size gradients are
scaled by LSQ's ``g = 1 / sqrt(N q_max)`` (``N``: values of one sample sharing a scale; see
:func:`benchmark.quant.primitives.fake_quantize_ste`). The weights and biases train too.

Loss, per batch: Dice + cross-entropy against the labels (MONAI ``DiceCELoss`` with the FP32
training recipe's settings: softmax, one-hot targets, batch Dice, background out of the Dice
term, smoothing 1e-5), plus ``distill_weight`` times the per-voxel distillation term
``T^2 KL(p_fp32 || p_quant)`` of the class probabilities at temperature ``T``. The FP32 model
is a frozen copy of the starting weights run with every quantizer bypassed (or ``fp32_model``).
Without labels (the image batches of :func:`benchmark.quant.calibrate`) the loss is the
distillation term alone, so ``distill_weight`` must then be positive.

Optimiser: Adam, poly-decayed learning rates (the FP32 recipe's schedule), no weight decay.
``lr_weights`` is absolute; ``lr_quant`` is relative to the step it moves: each scale's rate
is ``lr_quant`` times its calibrated mean value and offsets (in codes) move at ``lr_quant``,
so one rate suits layers whose ranges differ by orders of magnitude. With Adam LSQ's ``g``
only matters against Adam's epsilon; it is kept so the gradients are LSQ's for any optimiser.
After each step scales are kept at least float32 eps and offsets within the code range.

The model trains in eval mode: normalisation statistics stay those of the FP32 model (the
deployed quantized model uses them) and deep-supervision heads stay unused. An epoch is one
pass over the batches in an order seeded by ``(seed, epoch)``; nothing else is random, so a
run that resumes from ``checkpoint_dir`` (model, optimiser, schedule and wall time written
atomically after every epoch) ends bit-identical to an uninterrupted one.

Dynamic activation quantizers (per-voxel/per-token scales computed from every input) have no
step size to learn. By default (``dynamic: error``) such a model is refused with a message
naming them; ``dynamic: keep`` keeps them dynamic (straight-through gradients pass through)
and trains the weights and static quantizers. FP8 and block formats are refused.

Afterwards the learned values are ordinary buffers (:func:`benchmark.quant.qat.freeze_learned`):
``save_ranges``/``load_ranges`` reproduce the model, and the buffer ``qat_wall_s`` on the model
holds the training wall time (s, summed over resumed sessions), so a cached result still
reports what it cost.

Data: ``calibrate`` hands its batches to the hook. Image tensors give distillation-only QAT;
``(image, label)`` pairs (labels ``[B, 1, *roi]``) give Dice + CE as well, through
:func:`run_qat` on a model whose ranges are calibrated, or through ``calibrate``, which passes
the images of such pairs to the observers and the other methods of a composition (the run
pipeline calibrates ``qat`` on labelled training patches).
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.losses import DiceCELoss
from torch import nn
from tqdm.auto import tqdm

from benchmark.quant.algorithms.base import FLOAT_WEIGHT, Algorithm, register_algorithm
from benchmark.quant.errors import QuantError
from benchmark.quant.qat import (
    DYNAMIC_CHOICES,
    TrainingCheckpoint,
    clamp_learned,
    data_fingerprint,
    freeze_learned,
    learnable_quantizers,
    make_learnable,
)
from benchmark.quant.quantizer import ActivationQuantizer
from benchmark.quant.weight_quantizer import WeightQuantizer

__all__ = ["QatOptions", "QuantizationAwareTraining", "run_qat", "distillation_loss"]

log = logging.getLogger(__name__)

WALL_BUFFER = "qat_wall_s"


_FLOATS = ("lr_weights", "lr_quant", "distill_weight", "temperature")


@dataclasses.dataclass(frozen=True)
class QatOptions:
    """Options of ``qat`` (``QuantSpec.algorithm_options``); the defaults are these.

    Attributes:
        epochs: passes over the batches (one optimiser step per batch).
        lr_weights: Adam learning rate of weights and biases (0: they stay fixed).
        lr_quant: learning rate of step sizes and offsets, relative to the step (see above).
        distill_weight: weight of the FP32-to-quantized distillation term (0: labels only).
        temperature: softmax temperature of the distillation term.
        seed: seeds the batch order of every epoch.
        checkpoint_dir: folder for ``qat_checkpoint.pt``, written after every epoch and
            resumed from when present; ``None``: no checkpoint.
        progress: show a tqdm progress bar per epoch.
        dynamic: ``error`` (refuse dynamic activation quantizers) or ``keep``.
    """

    epochs: int = 4
    lr_weights: float = 1.0e-4
    lr_quant: float = 1.0e-2
    distill_weight: float = 1.0
    temperature: float = 1.0
    seed: int = 0
    checkpoint_dir: str | None = None
    progress: bool = True
    dynamic: str = "error"

    @classmethod
    def from_mapping(cls, options: Mapping[str, Any]) -> QatOptions:
        """Checked options; unknown keys and out-of-range values are one-line errors."""
        fields = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(options) - set(fields))
        if unknown:
            raise QuantError(f"qat options {unknown} are unknown; allowed: {', '.join(fields)}")
        opts = cls(**options)
        try:
            opts = dataclasses.replace(
                opts,
                epochs=int(opts.epochs),
                seed=int(opts.seed),
                **{k: float(getattr(opts, k)) for k in _FLOATS},
            )
        except (TypeError, ValueError) as err:
            raise QuantError(
                f"qat options need numbers for epochs, seed, {_FLOATS}: {err}"
            ) from None
        numbers = {"epochs": 0, "lr_weights": 0.0, "lr_quant": 0.0, "distill_weight": 0.0}
        for name, low in numbers.items():
            if not getattr(opts, name) >= low:
                raise QuantError(f"qat option {name}={getattr(opts, name)!r} must be >= {low}")
        if not opts.temperature > 0:
            raise QuantError(f"qat option temperature={opts.temperature!r} must be > 0")
        if opts.dynamic not in DYNAMIC_CHOICES:
            raise QuantError(
                f"qat option dynamic={opts.dynamic!r}; allowed: {', '.join(DYNAMIC_CHOICES)}"
            )
        return opts

    def fingerprint(self) -> dict[str, Any]:
        """What a resumed run must share with its checkpoint (not where or how it reports)."""
        skip = {"checkpoint_dir", "progress"}
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in skip}


@register_algorithm
class QuantizationAwareTraining(Algorithm):
    """Fine-tune weights and LSQ step sizes through straight-through rounding (see module)."""

    name = "qat"
    needs_data = True
    uses_labels = True

    def __init__(self, **options: Any) -> None:
        QatOptions.from_mapping(options)  # refuse bad options before any work
        super().__init__(**options)

    def prepare(self, qmodel: nn.Module) -> None:
        """The wall-time buffer, so that a cached state loads into the model."""
        _wall_buffer(qmodel)

    def optimise(self, qmodel: nn.Module, batches: Sequence[torch.Tensor]) -> None:
        run_qat(qmodel, batches, **self.options)


def _wall_buffer(qmodel: nn.Module) -> torch.Tensor:
    if WALL_BUFFER not in qmodel._buffers:
        qmodel.register_buffer(WALL_BUFFER, torch.zeros((), dtype=torch.float64))
    return qmodel._buffers[WALL_BUFFER]


def distillation_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """``T^2 mean_voxels KL(softmax(t/T) || softmax(s/T))`` over the class dim 1 (Hinton's
    ``T^2`` keeps the gradient's size independent of ``T``)."""
    teacher = F.log_softmax(teacher_logits.float() / temperature, dim=1)
    student = F.log_softmax(student_logits.float() / temperature, dim=1)
    kl = (teacher.exp() * (teacher - student)).sum(dim=1)
    return kl.mean() * temperature**2


def _task_loss() -> nn.Module:
    """Dice + CE with the settings of the FP32 training recipe (``benchmark.train``)."""
    return DiceCELoss(
        include_background=False,
        to_onehot_y=True,
        softmax=True,
        batch=True,
        smooth_nr=1e-5,
        smooth_dr=1e-5,
    )


def _logits(output: Any) -> torch.Tensor:
    """The full-resolution output (the first of a deep-supervision list).

    ``benchmark.models.full_resolution_logits`` is the same rule; the engine is a leaf and
    imports no other leaf, so it keeps its own line.
    """
    return output[0] if isinstance(output, (list, tuple)) else output


def _split(batches: Iterable[Any]) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
    """``(image, label or None)`` per batch; all batches labelled or none."""
    pairs = []
    for index, batch in enumerate(batches):
        if isinstance(batch, torch.Tensor):
            pairs.append((batch, None))
        elif isinstance(batch, (tuple, list)) and len(batch) == 2:
            pairs.append((batch[0], batch[1]))
        else:
            raise QuantError(
                f"qat batch {index} is a {type(batch).__name__}; pass image tensors "
                "[B, C, *roi] or (image, label [B, 1, *roi]) pairs"
            )
    if not pairs:
        raise QuantError("qat got no batches; pass a non-empty list of patches")
    if len({label is None for _, label in pairs}) > 1:
        raise QuantError("qat batches mix labelled and unlabelled patches; pass one kind")
    return pairs


def _teacher(qmodel: nn.Module, fp32_model: nn.Module | None) -> nn.Module:
    """The float reference, run in eval mode without gradients: ``fp32_model``, or a frozen
    copy of ``qmodel`` with every quantizer bypassed (the starting weights in float)."""
    if fp32_model is not None:
        return fp32_model.eval()
    teacher = copy.deepcopy(qmodel)
    for module in teacher.modules():
        if isinstance(module, (ActivationQuantizer, WeightQuantizer)):
            module.enabled = False
        if getattr(module, FLOAT_WEIGHT, None) is not None:  # a weight a method rounded
            module.weight.data = getattr(module, FLOAT_WEIGHT)
    return teacher.eval().requires_grad_(False)


def _epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    """The batch order of one epoch: a pure function of ``(seed, epoch)``."""
    state = np.random.SeedSequence([int(seed), int(epoch), 0x0A7]).generate_state(1)[0]
    return torch.randperm(n, generator=torch.Generator().manual_seed(int(state))).tolist()


def _optimiser(
    qmodel: nn.Module, opts: QatOptions, total_steps: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """Adam with a group for the weights, one per step size and one for the offsets."""
    quantizers = learnable_quantizers(qmodel)
    weights = _weight_parameters(qmodel)
    groups = [{"params": weights, "lr": opts.lr_weights}] if weights else []
    for quantizer in quantizers.values():
        rate = opts.lr_quant * float(quantizer.scale.detach().mean())
        groups.append({"params": [quantizer.scale], "lr": rate})
    offsets = [q.offset for q in quantizers.values() if q.offset.requires_grad]
    if offsets:
        groups.append({"params": offsets, "lr": opts.lr_quant})
    optimizer = torch.optim.Adam(groups, weight_decay=0.0)
    total = max(1, total_steps)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: max(0.0, 1.0 - step / total) ** 0.9
    )
    return optimizer, schedule


def run_qat(
    qmodel: nn.Module,
    batches: Iterable[torch.Tensor | tuple[torch.Tensor, torch.Tensor]],
    fp32_model: nn.Module | None = None,
    **options: Any,
) -> nn.Module:
    """Quantization-aware training of a calibrated ``qmodel`` in place (see the module).

    Args:
        qmodel: a quantized model whose static ranges are calibrated (``calibrate`` or
            ``load_ranges``); the step sizes start from them.
        batches: image tensors ``[B, C, *roi]`` (distillation only) or ``(image, label)``
            pairs with labels ``[B, 1, *roi]`` (class indices), kept in memory.
        fp32_model: the distillation reference; default: the starting weights in float.
        **options: :class:`QatOptions`.

    Returns:
        ``qmodel``, calibrated with the learned values, in eval mode.

    Raises:
        QuantError: bad options or batches, dynamic quantizers with ``dynamic=error``,
            non-integer formats, a non-finite loss, or a checkpoint of another run.
    """
    opts = QatOptions.from_mapping(options)
    pairs = _split(batches)
    labelled = pairs[0][1] is not None
    if not labelled and opts.distill_weight == 0:
        raise QuantError(
            "qat got image batches without labels and distill_weight=0: nothing to train on; "
            "set distill_weight > 0 or pass (image, label) pairs to run_qat"
        )
    qmodel.eval()
    wall_buffer = _wall_buffer(qmodel)
    teacher = _teacher(qmodel, fp32_model) if opts.distill_weight > 0 else None
    # parameters made under a caller's inference_mode or no_grad could not train
    with torch.inference_mode(False), torch.enable_grad():
        make_learnable(qmodel, dynamic=opts.dynamic)
        fixed = _weight_parameters(qmodel) if opts.lr_weights == 0 else []
        fast_paths = [m for m in qmodel.modules() if getattr(m, "integer_kernels", False)]
        try:
            for parameter in fixed:
                parameter.requires_grad_(False)
            for module in fast_paths:  # the integer path quantizes without gradients
                module.integer_kernels = False
            wall = _train(qmodel, teacher, pairs, opts)
        finally:
            for parameter in fixed:
                parameter.requires_grad_(True)
            for module in fast_paths:
                module.integer_kernels = True
        freeze_learned(qmodel)
    wall_buffer.fill_(wall)
    return qmodel.eval()


def _weight_parameters(qmodel: nn.Module) -> list[nn.Parameter]:
    """Trainable parameters other than the quantizers' (weights, biases, norm affines)."""
    quant_ids = {id(p) for q in learnable_quantizers(qmodel).values() for p in (q.scale, q.offset)}
    return [p for p in qmodel.parameters() if id(p) not in quant_ids and p.requires_grad]


def _train(qmodel, teacher, pairs, opts: QatOptions) -> float:
    """Every epoch not done yet, checkpointed; returns the wall time of all sessions (s)."""
    optimizer, schedule = _optimiser(qmodel, opts, opts.epochs * len(pairs))
    spec = getattr(qmodel, "quant_spec", None)
    fingerprint = {
        "options": opts.fingerprint(),
        # the spec's algorithm_options repeat the options, with progress and checkpoint_dir
        "spec": {k: v for k, v in spec.to_dict().items() if k != "algorithm_options"}
        if spec is not None
        else None,
        "data": data_fingerprint(pairs),
    }
    checkpoint = TrainingCheckpoint(opts.checkpoint_dir, fingerprint)
    start, wall = checkpoint.load(qmodel, optimizer, schedule)
    loss_fn = _task_loss() if pairs[0][1] is not None else None
    device = next((p.device for p in qmodel.parameters()), torch.device("cpu"))
    for epoch in range(start, opts.epochs):
        tic = time.perf_counter()
        order = _epoch_order(len(pairs), opts.seed, epoch)
        bar = tqdm(
            order,
            desc=f"qat epoch {epoch + 1}/{opts.epochs}",
            disable=not opts.progress,
            leave=False,
            dynamic_ncols=True,
        )
        losses = []
        for index in bar:
            image, label = (_usable(t, device) for t in pairs[index])
            loss = _loss(qmodel, teacher, image, label, loss_fn, opts)
            if not bool(torch.isfinite(loss)):
                raise QuantError(
                    f"qat loss became {float(loss)} at epoch {epoch + 1}, batch {index}; "
                    "lower lr_weights / lr_quant"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            clamp_learned(qmodel)
            losses.append(float(loss.detach()))
            bar.set_postfix(loss=f"{losses[-1]:.4f}")
        bar.close()
        wall += time.perf_counter() - tic
        checkpoint.save(qmodel, optimizer, schedule, epoch + 1, wall)
        log.info("qat epoch %d/%d loss %.4f", epoch + 1, opts.epochs, np.mean(losses))
    return wall


def _usable(tensor: torch.Tensor | None, device: torch.device) -> torch.Tensor | None:
    """On ``device``, and a normal tensor (one made under ``inference_mode`` cannot enter a
    graph)."""
    if tensor is None:
        return None
    tensor = tensor.to(device)
    return tensor.clone() if tensor.is_inference() else tensor


def _loss(qmodel, teacher, image, label, loss_fn, opts: QatOptions) -> torch.Tensor:
    """Dice + CE against ``label`` (when labelled) plus the weighted distillation term."""
    logits = _logits(qmodel(image)).float()
    loss = loss_fn(logits, label) if loss_fn is not None else torch.zeros((), device=image.device)
    if teacher is not None:
        with torch.no_grad():
            reference = _logits(teacher(image))
        loss = loss + opts.distill_weight * distillation_loss(logits, reference, opts.temperature)
    return loss
