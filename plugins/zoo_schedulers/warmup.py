"""WarmupCosineLR: a linear warm-up, then cosine annealing to the end of the run, in closed form.

torch spells this ``SequentialLR([LinearLR, CosineAnnealingLR])``, which restores the wrong
learning rate when resumed from a state_dict (PyTorch #180200). Here the learning rate is a
function of ``last_epoch`` and the hyper-parameters alone, and those are the scheduler's whole
state, so ``load_state_dict`` continues exactly where an uninterrupted run would be.
"""

from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler


class WarmupCosineLR(LRScheduler):
    """Linear warm-up from ``start_factor`` x lr to lr over ``warmup_epochs``, then cosine
    annealing to ``eta_min`` over the rest of the run.

    ``total_steps`` is the run's length in the unit the scheduler is stepped in (epochs or
    optimizer steps) and ``epochs`` its length in epochs: the zoo fills both, so the warm-up
    lasts ``warmup_epochs`` epochs whether it steps per epoch or per optimizer step.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        total_steps: int,
        epochs: int,
        warmup_epochs: float = 1.0,
        eta_min: float = 0.0,
        start_factor: float = 0.1,
        last_epoch: int = -1,
    ) -> None:
        if not (isinstance(total_steps, int) and total_steps >= 1 and isinstance(epochs, int) and epochs >= 1):
            raise ValueError(f"total_steps and epochs must be positive integers, got {total_steps}, {epochs}")
        if not 0 <= warmup_epochs <= epochs:
            raise ValueError(f"warmup_epochs must be between 0 and the run's {epochs} epochs, got {warmup_epochs}")
        if not 0 < start_factor <= 1:
            raise ValueError(f"start_factor must be in (0, 1], got {start_factor}")
        if eta_min < 0:
            raise ValueError(f"eta_min must be >= 0, got {eta_min}")
        self.total_steps = total_steps
        self.warmup_steps = round(warmup_epochs * total_steps / epochs)
        self.eta_min = float(eta_min)
        self.start_factor = float(start_factor)
        super().__init__(optimizer, last_epoch)

    def lr_at(self, base_lr: float, step: int) -> float:
        """The learning rate after ``step`` scheduler steps, for a group whose lr is ``base_lr``."""
        warmup = self.warmup_steps
        if step < warmup:
            return base_lr * (self.start_factor + (1.0 - self.start_factor) * step / warmup)
        progress = min(1.0, (step - warmup) / max(1, self.total_steps - warmup))
        return self.eta_min + (base_lr - self.eta_min) * 0.5 * (1.0 + math.cos(math.pi * progress))

    def get_lr(self) -> list[float]:
        return [self.lr_at(base_lr, self.last_epoch) for base_lr in self.base_lrs]

    def _get_closed_form_lr(self) -> list[float]:
        return self.get_lr()
