"""The hooks a zoo plugin may implement: the plugin author's whole contract.

A plugin is a module (or object) holding functions decorated with ``@zoo.hookimpl`` whose
names are the hook names below. It may implement any subset. Registering must not build
anything heavy: builders and factories run only when a run asks for them, so keep
``import torch`` inside them (``zoo list`` must stay instant).
"""

from __future__ import annotations

from typing import Any

import pluggy

hookspec = pluggy.HookspecMarker("zoo")


# -- registration -----------------------------------------------------------------------


@hookspec
def register_models(register: Any) -> None:
    """Register model builders.

    :param register: ``register(name, builder, *, summary="", input_size=(3, 32, 32),
        default_dataset=None, min_input_size=None, params=None, weights=None)``.
        ``builder(num_classes: int)`` returns a ``torch.nn.Module`` whose output is
        ``(batch, num_classes)``; it may also be an import path ``"package.module:function"``
        resolved only when the model is built. A builder that also takes ``input_size`` (a
        keyword) is given the ``(C, H, W)`` the run trains at (``zoo run --input-size``).
        ``min_input_size``: the smallest ``(H, W)`` (or ``N``) the model takes, below which a
        run is refused; ``params``: its parameter count at 1000 classes, listed without building
        it; ``weights``: its pretrained weights, ``[{"name", "url", "file"}, ...]``, the default
        first (``--weights imagenet`` takes it from the torch hub cache, hash-checked).
    """


@hookspec
def register_optimizers(register: Any) -> None:
    """Register optimizer factories.

    :param register: ``register(name, factory, *, summary="", defaults=None)``.
        ``factory(params, **hparams)`` returns a ``torch.optim.Optimizer``; an Optimizer
        subclass is a valid factory, and so is an import path ``"torch.optim:SGD"``.
        ``defaults`` are hyper-parameters used when the user gives none (``{"lr": 0.01}``).
    """


@hookspec
def register_datasets(register: Any) -> None:
    """Register datasets.

    :param register: ``register(name, loader, *, summary="", num_classes, input_size,
        classes=None)``. ``loader(train: bool, root: str, download: bool)`` returns a
        ``torch.utils.data.Dataset`` of ``(float tensor shaped input_size, int label)``.
        Return a ``zoo.data.TensorImageDataset`` to get the fast in-memory path.
        ``num_classes=None`` means "read from the loaded dataset's ``classes``".
    """


@hookspec
def register_schedulers(register: Any) -> None:
    """Register learning-rate scheduler factories.

    :param register: ``register(name, factory, *, summary="", defaults=None, interval="epoch")``.
        ``factory(optimizer, **hparams)`` returns a ``torch.optim.lr_scheduler.LRScheduler``; a
        LRScheduler subclass is a valid factory, and so is an import path
        ``"torch.optim.lr_scheduler:StepLR"``. ``interval``: ``"epoch"`` (stepped after each
        epoch) or ``"step"`` (after each optimizer step). Hyper-parameters only the run knows
        (``epochs``, ``steps_per_epoch``, ``total_steps``; torch's ``T_max``, ``total_iters``,
        ``total_steps`` in the interval's unit) are filled in when the factory's signature asks
        for them and the user gave none.
    """


@hookspec
def register_augmentations(register: Any) -> None:
    """Register training-batch augmentations.

    :param register: ``register(name, factory, *, summary="", defaults=None)``.
        ``factory(**hparams)`` returns ``callable(images, generator) -> images``: a float batch
        ``(B, C, H, W)`` on the run's device, after normalisation, returned with the same shape;
        all randomness is drawn from ``generator`` (a ``torch.Generator`` on the images' device,
        seeded and checkpointed by the zoo), so runs stay reproducible and resumable. Applied
        to training batches only.
    """


# -- run events: loggers and other observers ----------------------------------------------
# Arguments may grow by keyword; accept only the ones you use (pluggy passes by name).


@hookspec
def on_run_start(run: Any) -> None:
    """A run is about to train its first epoch.

    :param run: ``run_dir`` (Path), ``config`` (the ``RunConfig``: model, optimizer, data,
        epochs, ...), ``model`` (the bare module), ``optimizer``, ``start_epoch`` (epochs done
        before this process started: > 0 when resumed), ``device``, ``spec`` (what the
        checkpoints record), ``epoch`` (epochs completed so far: in ``on_checkpoint``, the epochs
        the checkpoint holds), ``dataset`` (its name), ``train_samples``, ``val_samples``,
        ``where`` (e.g. "cpu", "2 processes on cpu (gloo)") and ``progress`` (history,
        ``best_epoch``, ``images_per_second``, ``epoch_images_per_second``; zoo.progress.Progress).
    """


@hookspec
def on_epoch_end(run: Any, epoch: int, metrics: dict) -> None:
    """An epoch finished and was validated: ``metrics`` is the line written to
    ``metrics.jsonl`` (``epoch``, ``train_loss``, ``val_loss``, ``val_accuracy``, ``seconds``,
    ``lr``)."""


@hookspec
def on_checkpoint(run: Any, path: str) -> None:
    """A checkpoint was written (atomically) to ``path``."""


@hookspec
def on_run_end(run: Any, metrics: dict) -> None:
    """The run stopped; ``metrics`` is the summary (the ``zoo run --json`` object) and
    ``metrics["status"]`` says "finished", "interrupted" or "failed"."""
