"""What a run prints: a start line, a progress bar on a terminal, one line per epoch, notes.

Written as an event-hook plugin, like any logger: the runner registers it for the run only when
something should be printed, so ``--quiet`` and the ranks other than 0 simply do not have it.
"""

from __future__ import annotations

import sys
from typing import Any, TextIO

from zoo import hookimpl

__all__ = ["Console"]


class Console:
    def __init__(self, stream: TextIO | None = None):
        self.stream = stream or sys.stderr

    def note(self, text: str) -> None:
        print(f"zoo: note: {text}", file=self.stream, flush=True)

    def progress_bar(self, epoch: int, epochs: int, steps: int, done: int) -> Any:
        """A tqdm bar over an epoch's steps on a terminal (``None`` elsewhere: logs stay clean)."""
        if not self.stream.isatty():
            return None
        from tqdm import tqdm

        return tqdm(
            total=steps,
            initial=done,
            desc=f"epoch {epoch}/{epochs}",
            unit="batch",
            file=self.stream,
            leave=False,
            dynamic_ncols=True,
        )

    @hookimpl
    def on_run_start(self, run: Any) -> None:
        config = run.config
        print(
            f"zoo: {config.model} + {config.optimizer} on {run.dataset} ({run.train_samples} train / "
            f"{run.val_samples} val) on {run.where}, epochs {run.start_epoch + 1}-{config.epochs} -> {run.run_dir}",
            file=self.stream,
            flush=True,
        )

    @hookimpl
    def on_epoch_end(self, run: Any, epoch: int, metrics: dict) -> None:
        progress = run.progress
        rate = f"  {progress.epoch_images_per_second:,.0f} img/s" if progress.epoch_images_per_second else ""
        best = " (best)" if progress.best_epoch == epoch else ""
        print(
            f"epoch {epoch}/{run.config.epochs}  train_loss {metrics['train_loss']:.4f}  "
            f"val_loss {metrics['val_loss']:.4f}  val_accuracy {metrics['val_accuracy']:.4f}{best}  "
            f"{metrics['seconds']:.1f}s{rate}",
            file=self.stream,
            flush=True,
        )
