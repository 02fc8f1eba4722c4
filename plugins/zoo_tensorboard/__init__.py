"""TensorBoard logger: each epoch's losses, accuracy and learning rate, as TensorBoard scalars.

A built-in plugin written like a third-party one: it uses only ``zoo.hookimpl`` and the event
hooks, and is switched on per run by ``zoo run --tensorboard`` (``run.config.tensorboard``).
Events go to ``RUN_DIR/tensorboard``, so ``tensorboard --logdir runs/`` shows every run.
torch and tensorboard are imported inside the hooks, never at import: ``zoo list`` loads
every plugin and must stay instant. Needs the extra: ``pip install 'tudui-zoo[tensorboard]'``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from zoo import hookimpl

LOG_SUBDIR = "tensorboard"

# metrics.jsonl key -> TensorBoard tag. A shared prefix puts train and validation loss in one
# section of the dashboard.
SCALARS = {
    "train_loss": "loss/train",
    "val_loss": "loss/val",
    "val_accuracy": "accuracy/val",
    "lr": "lr",
}

_writers: dict[str, Any] = {}  # absolute run directory -> its open SummaryWriter


def require() -> None:
    """Fail before training, not after the first epoch, when the tensorboard package is missing."""
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        from zoo.errors import UsageError

        raise UsageError("--tensorboard needs the tensorboard package: pip install 'tudui-zoo[tensorboard]'") from None


def enabled(run: Any) -> bool:
    """Whether this run asked for TensorBoard logging."""
    return bool(getattr(getattr(run, "config", None), "tensorboard", False))


def log_dir(run: Any) -> Path:
    return Path(run.run_dir) / LOG_SUBDIR


def _key(run: Any) -> str:
    return os.path.abspath(run.run_dir)


def _writer(run: Any) -> Any:
    writer = _writers.get(_key(run))
    if writer is None:
        from torch.utils.tensorboard import SummaryWriter

        # A resumed run trains again the epochs after its checkpoint, which the interrupted
        # process may already have logged: purge_step makes TensorBoard drop those stale
        # points from the older event files instead of drawing two values per step.
        done = int(getattr(run, "start_epoch", 0) or 0)
        writer = SummaryWriter(log_dir=str(log_dir(run)), purge_step=done + 1 if done else None)
        _writers[_key(run)] = writer
    return writer


@hookimpl
def on_run_start(run):
    if enabled(run):
        _writer(run)


@hookimpl
def on_epoch_end(run, epoch, metrics):
    if not enabled(run):
        return
    writer = _writer(run)
    for key, tag in SCALARS.items():
        value = metrics.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            writer.add_scalar(tag, value, global_step=epoch)
    writer.flush()  # a running TensorBoard shows each epoch as soon as it ends


@hookimpl
def on_run_end(run, metrics):
    writer = _writers.pop(_key(run), None)
    if writer is not None:
        writer.close()
