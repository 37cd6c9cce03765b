"""The optimisation recipe: loss, optimiser and poly learning-rate schedule (nnU-Net's choices).

* Loss: MONAI ``DiceCELoss`` with softmax, one-hot targets and batch Dice (Dice over the whole
  batch as one volume, nnU-Net's ``batch_dice``); background is left out of the Dice term and
  kept in the cross-entropy, as nnU-Net's ``DC_and_CE_loss(do_bg=False)``. The smoothing terms
  are nnU-Net's 1e-5.
* Optimiser: AdamW (default) or SGD with Nesterov momentum (nnU-Net: lr 1e-2, momentum 0.99).
* Schedule: ``lr_t = lr * (1 - t / T) ** exponent`` (nnU-Net's ``PolyLRScheduler``, exponent
  0.9), stepped once per iteration, ``T`` = all iterations of the run. ``LambdaLR`` evaluates
  the closed form rather than a recursive update, so a resumed run gets exactly the same rates.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from monai.losses import DiceCELoss
from torch import nn

from benchmark.train.config import TrainerConfig

__all__ = ["make_loss", "make_optimizer", "poly_schedule"]


def make_loss() -> nn.Module:
    """Dice + cross-entropy on logits ``[B, K, *S]`` against labels ``[B, 1, *S]`` (int)."""
    return DiceCELoss(
        include_background=False,
        to_onehot_y=True,
        softmax=True,
        batch=True,
        smooth_nr=1e-5,
        smooth_dr=1e-5,
    )


def make_optimizer(params: Iterable[nn.Parameter], cfg: TrainerConfig) -> torch.optim.Optimizer:
    """AdamW (``lr``, ``weight_decay``) or Nesterov SGD (also ``momentum``) per ``cfg.optimizer``."""
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=cfg.lr, momentum=cfg.momentum, nesterov=True, weight_decay=cfg.weight_decay
        )
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def poly_schedule(
    optimizer: torch.optim.Optimizer, total_iterations: int, exponent: float = 0.9
) -> torch.optim.lr_scheduler.LambdaLR:
    """Poly decay to 0 after ``total_iterations`` steps (call ``step()`` once per iteration)."""
    total = int(total_iterations)
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda it: max(0.0, 1.0 - it / total) ** exponent
    )
