"""What a recipe adds to the course's step: a learning-rate schedule, augmentations, an EMA of
the weights, gradient accumulation and clipping.

:class:`Extras` is what the epoch loop asks, at a few fixed points: a batch to augment, an
optimizer step taken, an epoch validated. With nothing switched on, each of those is one
attribute test a step, so a plain run pays nothing for them. Everything here resumes exactly:
its state goes in every checkpoint (``"scheduler"``, ``"ema"``, ``"augment_rng"``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from zoo.config import RunConfig
from zoo.errors import UsageError
from zoo.recipe import build_augmentation, build_scheduler

__all__ = ["Extras", "build_extras"]


def _stream_seed(seed: int, epoch: int, rank: int) -> int:
    """The augmentations' seed for (seed, epoch, rank): each rank draws its own, and a run resumed
    at an epoch's start draws what the uninterrupted run drew, on every rank."""
    digest = hashlib.blake2b(f"zoo-augment:{seed}:{epoch}:{rank}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


@dataclass
class Extras:
    model: nn.Module  # the bare module, which the EMA follows
    schedule: Any = None  # a zoo.recipe.Schedule
    augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None
    augment_generator: torch.Generator | None = None
    ema: Any = None  # torch.optim.swa_utils.AveragedModel
    accumulate: int = 1
    clip_grad_norm: float | None = None
    seed: int = 0
    rank: int = 0
    per_step: bool = False  # something runs after each optimizer step (the EMA, a per-step schedule)

    def __post_init__(self) -> None:
        step_schedule = self.schedule is not None and self.schedule.interval == "step"
        self.per_step = self.ema is not None or step_schedule

    def start_epoch(self, epoch: int) -> None:
        if self.augment_generator is not None:
            self.augment_generator.manual_seed(_stream_seed(self.seed, epoch, self.rank))

    def augmented(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.augment(inputs, self.augment_generator) if self.augment is not None else inputs

    def after_optimizer_step(self) -> None:
        if self.ema is not None:
            self.ema.update_parameters(self.model)
        if self.schedule is not None and self.schedule.interval == "step":
            self.schedule.step()

    def after_epoch(self, val_loss: float) -> None:
        if self.schedule is not None and self.schedule.interval == "epoch":
            self.schedule.step(val_loss if self.schedule.needs_metric else None)

    def evaluated(self) -> nn.Module | None:
        """The module to validate instead of the trained one: the EMA's, when there is one."""
        return self.ema.module if self.ema is not None else None

    def state(self) -> dict[str, Any]:
        """What a checkpoint holds of these (nothing for a plain run), on the CPU."""
        state: dict[str, Any] = {}
        if self.schedule is not None:
            state["scheduler"] = self.schedule.scheduler.state_dict()
        if self.ema is not None:
            ema_state = {k: v.detach().cpu().contiguous() for k, v in self.ema.module.state_dict().items()}
            state["ema"] = {"model": ema_state, "n_averaged": int(self.ema.n_averaged)}
        if self.augment_generator is not None:
            state["augment_rng"] = self.augment_generator.get_state().cpu()
        return state

    def rank_streams(self) -> dict[str, torch.Tensor]:
        """This rank's own random streams, for a mid-epoch stop to gather from every rank."""
        return {"augment": self.augment_generator.get_state().cpu()} if self.augment_generator is not None else {}

    def restore_rank_streams(self, states: Any, world: int) -> None:
        """A stopped epoch continued under ``--nproc``: this rank's augmentation stream where it
        stopped (rank 0's comes from the checkpoint, see :meth:`restore`)."""
        if self.augment_generator is None or not self.rank or not states or len(states) != world:
            return
        state = states[self.rank].get("augment")
        if state is not None:
            self.augment_generator.set_state(state)

    def restore(self, checkpoint: dict[str, Any], *, mid_epoch: bool) -> None:
        """Put back what ``checkpoint`` holds of these. The augmentations' stream is reseeded at
        each epoch's start; only a stopped epoch continues from the saved state."""
        if self.schedule is not None and checkpoint.get("scheduler") is not None:
            self.schedule.scheduler.load_state_dict(checkpoint["scheduler"])
        if self.ema is not None and checkpoint.get("ema") is not None:
            self.ema.module.load_state_dict(checkpoint["ema"]["model"])
            self.ema.n_averaged.fill_(int(checkpoint["ema"]["n_averaged"]))
        elif self.ema is not None:  # a checkpoint without one: average from the restored weights
            self.ema.module.load_state_dict(self.model.state_dict())
        if mid_epoch and self.augment_generator is not None and checkpoint.get("augment_rng") is not None:
            self.augment_generator.set_state(checkpoint["augment_rng"])


def build_extras(
    config: RunConfig, registry: Any, model: nn.Module, optimizer: torch.optim.Optimizer, device: torch.device,
    *, steps_per_epoch: int, rank: int,
) -> Extras:  # fmt: skip
    """The run's extras, checked: the scheduler built over the optimizer (``steps_per_epoch``
    counts optimizer steps), augmentations composed, the EMA copied from the model."""
    if config.accumulate > 1 and isinstance(optimizer, torch.optim.LBFGS):
        raise UsageError("--accumulate: L-BFGS re-evaluates its loss within a step and cannot accumulate batches")
    schedule = augment = None
    if config.sched is not None:
        schedule = build_scheduler(registry, config.sched, optimizer, opts=config.sched_opts,
                                   interval=config.sched_interval, epochs=config.epochs,
                                   steps_per_epoch=steps_per_epoch)  # fmt: skip
    if config.augment:
        augment = build_augmentation(registry, list(config.augment))
    generator = torch.Generator(device=device) if augment is not None else None
    ema = None
    if config.ema is not None:
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        # use_buffers: batch-norm statistics are averaged too, so the averaged model needs no
        # extra pass over the data to be validated.
        ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(config.ema), use_buffers=True)
    return Extras(model, schedule, augment, generator, ema, config.accumulate, config.clip_grad_norm,
                  config.seed, rank)  # fmt: skip
