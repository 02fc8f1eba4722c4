"""One training step and one evaluation pass: the seed's inner loops, made general.

``train_step`` is the course's ``zero_grad`` / ``backward`` / ``step``; ``evaluate`` its
validation under ``model.eval()`` and ``torch.inference_mode()`` with accuracy by ``argmax(1)``.
Neither reads a value back to the host per batch: losses and sums stay on the device.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from zoo.errors import RunError, UsageError

__all__ = ["train_step", "accumulation_step", "evaluate", "first_nonfinite", "CLOSURE_ONCE"]

# torch's optimizers whose step calls a closure once, first thing, under enable_grad, and does
# nothing else with it (every torch.optim class but L-BFGS; tests/test_perf_dynamo.py reads their
# source to check): stepping one after the closure's work is the same computation. Exact types:
# a subclass (a plugin's) may use the closure otherwise.
_ONCE = "SGD Adam AdamW Adagrad Adadelta Adamax ASGD NAdam RAdam RMSprop Rprop SparseAdam Adafactor Muon"
CLOSURE_ONCE = frozenset(getattr(torch.optim, name) for name in _ONCE.split() if hasattr(torch.optim, name))


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    criterion: nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    *,
    amp_dtype: torch.dtype | None = None,
    clip_grad_norm: float | None = None,
) -> torch.Tensor:
    """One optimisation step, the seed's ``zero_grad`` / ``backward`` / ``step`` triple.

    Returns the loss before the update, detached and still on the device (reading it would force
    a sync every step). ``clip_grad_norm``: the gradients' total norm is clipped to it before
    the update. L-BFGS re-evaluates the loss several times per step, and an optimizer of a
    plugin may too, so they get it as a closure passed to ``step``; torch's other optimizers
    (:data:`CLOSURE_ONCE`) would call that closure once, first thing, so they step after it
    instead: the same operations in the same order, without a closure and ``enable_grad``
    context per step.
    """
    if type(optimizer) in CLOSURE_ONCE and torch.is_grad_enabled():  # (the closure would run under enable_grad)
        optimizer.zero_grad(set_to_none=True)
        loss = _loss(model, criterion, inputs, targets, amp_dtype)
        loss.backward()
        if clip_grad_norm is not None:
            _clip(optimizer, clip_grad_norm)
        optimizer.step()
        return loss.detach()
    first: list[torch.Tensor] = []

    def closure() -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        loss = _loss(model, criterion, inputs, targets, amp_dtype)
        loss.backward()
        if clip_grad_norm is not None:
            _clip(optimizer, clip_grad_norm)
        if not first:
            first.append(loss.detach())
        return loss

    optimizer.step(closure)
    if not first:
        raise RunError(f"{type(optimizer).__name__}.step(closure) never called the closure, so nothing was learned")
    return first[0]


def _loss(
    model: nn.Module, criterion: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, amp_dtype: torch.dtype | None
) -> torch.Tensor:
    if amp_dtype is None:  # not torch.autocast(enabled=False): entering a disabled autocast costs ~15 us
        return criterion(model(inputs), targets)
    with torch.autocast(inputs.device.type, dtype=amp_dtype):
        return criterion(model(inputs), targets)


def _clip(optimizer: torch.optim.Optimizer, max_norm: float) -> None:
    params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
    torch.nn.utils.clip_grad_norm_(params, max_norm)


def accumulation_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    criterion: nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    *,
    first: bool,
    last: bool,
    scale: float,
    amp_dtype: torch.dtype | None = None,
    clip_grad_norm: float | None = None,
) -> torch.Tensor:
    """One batch of an accumulated step (``--accumulate N``): its gradient, times ``scale`` (one
    over the batches in the step), adds to those of the batches before it; the optimizer steps
    after the ``last`` one. Returns the batch's loss, detached, on the device.

    Under DistributedDataParallel the batches before the ``last`` keep their gradients to this
    process (``no_sync``): the ranks average the sum once, at the last, instead of once a batch."""
    if first:
        optimizer.zero_grad(set_to_none=True)
    no_sync = None if last else getattr(model, "no_sync", None)
    with no_sync() if no_sync is not None else contextlib.nullcontext():
        loss = _loss(model, criterion, inputs, targets, amp_dtype)
        (loss * scale).backward()
    if last:
        if clip_grad_norm is not None:
            _clip(optimizer, clip_grad_norm)
        optimizer.step()
    return loss.detach()


@torch.inference_mode()
def evaluate(
    model: nn.Module,
    batches: Any,
    criterion: nn.Module,
    *,
    amp_dtype: torch.dtype | None = None,
    channels_last: bool = False,
    reduce: Callable[[list[float], int], tuple[list[float], int]] | None = None,
) -> dict[str, Any]:
    """Mean loss and accuracy (``argmax(1)``) over ``batches``, in ``eval()`` mode.

    Sums stay on the device and are read once at the end. ``reduce`` (distributed training)
    adds up ``([loss_sum, correct], samples)`` over the ranks, each of which saw its own shard.
    """
    was_training = model.training
    model.eval()
    loss_sum, correct, samples = None, None, 0
    for inputs, targets in batches:
        if channels_last:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        with torch.autocast(inputs.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            outputs = model(inputs)
        batch_loss = criterion(outputs.float(), targets) * targets.shape[0]
        batch_correct = (outputs.argmax(1) == targets).sum()
        loss_sum = batch_loss if loss_sum is None else loss_sum + batch_loss
        correct = batch_correct if correct is None else correct + batch_correct
        samples += targets.shape[0]
    model.train(was_training)
    sums = torch.stack([loss_sum.float(), correct.float()]).tolist() if samples else [0.0, 0.0]
    if reduce is not None:  # distributed: every rank's shard, so the result does not depend on their number
        sums, samples = reduce(sums, samples)
    if not samples:
        raise UsageError("the validation set is empty: nothing to validate (check --limit-val)")
    loss, hits = sums
    return {"val_loss": loss / samples, "val_accuracy": hits / samples, "samples": samples}


def first_nonfinite(losses: list[torch.Tensor], start: int) -> tuple[int, float] | None:
    """The first step after ``start`` (1-based) whose loss is NaN or infinite, and that loss.

    One host sync for the whole window ``losses[start:]``: the loop calls it every few dozen steps.
    """
    if start >= len(losses):
        return None
    window = torch.stack(losses[start:])
    bad = (~torch.isfinite(window)).nonzero()
    if not bad.numel():
        return None
    index = int(bad[0, 0])
    return start + index + 1, float(window[index])
