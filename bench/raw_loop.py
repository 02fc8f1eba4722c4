"""The hand-written loop the runner is measured against (bench sections 1 and 5).

What a careful engineer writes by hand for an in-memory image set, and nothing more: the same
uint8 tensors the runner trains on, one ``randperm`` per epoch, ``index_select`` (2-3x faster than
``images[index]`` on a CPU) and normalisation per batch, ``zero_grad(set_to_none=True)`` /
forward / backward / ``step``, and no host sync inside an epoch. No loss bookkeeping, NaN
check, progress bar or signal handling: whatever the runner spends on those is its overhead
over this loop.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn


def flip_and_crop(images: torch.Tensor, generator: torch.Generator, padding: int = 4) -> torch.Tensor:
    """Random horizontal flips (p = 0.5) and translations by up to ``padding`` pixels, as one
    would write them by hand for a batch on the device: the bench's baseline for ``--augment flip
    --augment crop``."""
    b, c, h, w = images.shape
    flipped = torch.rand(b, device=images.device, generator=generator) < 0.5
    images = torch.where(flipped[:, None, None, None], images.flip(3), images)
    dy, dx = torch.randint(0, 2 * padding + 1, (2, b), device=images.device, generator=generator)
    padded = F.pad(images, (padding, padding, padding, padding))
    rows = (dy[:, None] + torch.arange(h, device=images.device))[:, None, :, None].expand(b, c, h, w + 2 * padding)
    cols = (dx[:, None] + torch.arange(w, device=images.device))[:, None, None, :].expand(b, c, h, w)
    return padded.gather(2, rows).gather(3, cols)


def train_epochs(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    images: torch.Tensor,
    labels: torch.Tensor,
    shift: torch.Tensor,
    divisor: torch.Tensor,
    *,
    batch_size: int,
    epochs: int,
    generator: torch.Generator,
    amp_dtype: torch.dtype | None = None,
    channels_last: bool = False,
    augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
    ema: AveragedModel | None = None,
    clip_grad_norm: float | None = None,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    accumulate: int = 1,
    label_smoothing: float = 0.0,
) -> list[tuple[int, float]]:
    """Train ``epochs`` epochs; ``(images, seconds)`` of each, timed as the runner times its own.

    ``images``/``labels``/``shift``/``divisor`` are already on the training device (what
    ``TensorImageDataset.to_device`` gives); ``model`` may be a ``torch.compile`` wrapper. ``ema`` (from
    :func:`ema_of`) is updated after each step and ``clip_grad_norm`` clips the gradients' norm
    before it, as one writes them by hand. ``scheduler`` steps after each optimizer step;
    ``accumulate`` > 1 steps the optimizer every that many batches (and after the epoch's last) on
    their mean gradient; ``label_smoothing`` goes to the loss.
    """
    device = images.device
    n = images.shape[0]
    criterion = nn.CrossEntropyLoss(label_smoothing=label_smoothing).to(device)
    augment_generator = torch.Generator(device=device).manual_seed(1)
    model.train()
    epochs_done: list[tuple[int, float]] = []
    for _ in range(epochs):
        start = time.perf_counter()
        order = torch.randperm(n, generator=generator).to(device)
        if accumulate > 1:
            _accumulated_epoch(model, optimizer, criterion, images, labels, shift, divisor, order, batch_size,
                               accumulate, ema=ema, clip_grad_norm=clip_grad_norm, scheduler=scheduler)  # fmt: skip
        else:
            for first in range(0, n, batch_size):
                index = order[first : first + batch_size]
                inputs = (images.index_select(0, index) - shift).div_(divisor)
                if augment is not None:
                    inputs = augment(inputs, augment_generator)
                if channels_last:
                    inputs = inputs.contiguous(memory_format=torch.channels_last)
                targets = labels.index_select(0, index)
                optimizer.zero_grad(set_to_none=True)
                if amp_dtype is None:
                    loss = criterion(model(inputs), targets)
                else:
                    with torch.autocast(device.type, dtype=amp_dtype):
                        loss = criterion(model(inputs), targets)
                loss.backward()
                _update(model, optimizer, clip_grad_norm, ema, scheduler)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        epochs_done.append((n, time.perf_counter() - start))
    return epochs_done


def _accumulated_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    criterion: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    shift: torch.Tensor,
    divisor: torch.Tensor,
    order: torch.Tensor,
    batch_size: int,
    accumulate: int,
    *,
    ema: AveragedModel | None,
    clip_grad_norm: float | None,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None,
) -> None:
    """One epoch of gradient accumulation as written by hand: the gradients of ``accumulate``
    batches (fewer at the epoch's end), each scaled by one over their number, then one step."""
    starts = list(range(0, images.shape[0], batch_size))
    for group in range(0, len(starts), accumulate):
        batches = starts[group : group + accumulate]
        optimizer.zero_grad(set_to_none=True)
        for first in batches:
            index = order[first : first + batch_size]
            inputs = (images.index_select(0, index) - shift).div_(divisor)
            loss = criterion(model(inputs), labels.index_select(0, index))
            (loss / len(batches)).backward()
        _update(model, optimizer, clip_grad_norm, ema, scheduler)


def _update(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    clip_grad_norm: float | None,
    ema: AveragedModel | None,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None,
) -> None:
    """After the backward pass(es): clip, step, then the EMA and the schedule follow the step."""
    if clip_grad_norm is not None:
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip_grad_norm)
    optimizer.step()
    if ema is not None:
        ema.update_parameters(model)
    if scheduler is not None:
        scheduler.step()


def ema_of(model: nn.Module, decay: float) -> AveragedModel:
    """An exponential moving average of ``model``'s weights, torch's way (``--ema``'s baseline)."""
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
