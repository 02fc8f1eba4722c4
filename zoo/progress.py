"""How far a run has come: its per-epoch history, the best epoch and the training throughput.

A :class:`Progress` is saved in every checkpoint (its :meth:`Progress.metrics`) and restored from
one, so a resumed run reports as if it had never stopped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["Progress"]


@dataclass
class Progress:
    history: list[dict[str, Any]] = field(default_factory=list)  # the metrics.jsonl lines, in order
    best_accuracy: float = -1.0
    best_epoch: int | None = None
    train_images: int = 0  # images trained on, over ...
    train_seconds: float = 0.0  # ... the seconds spent in training steps (validation and start-up excluded)
    # What this process trained in its last epoch (or the rest of a resumed one): its own rate.
    epoch_images: int = field(default=0, compare=False)
    epoch_seconds: float = field(default=0.0, compare=False)

    @property
    def epoch(self) -> int:
        """Epochs completed."""
        return int(self.history[-1]["epoch"]) if self.history else 0

    @property
    def images_per_second(self) -> float | None:
        return self.train_images / self.train_seconds if self.train_seconds > 0 else None

    @property
    def epoch_images_per_second(self) -> float | None:
        return self.epoch_images / self.epoch_seconds if self.epoch_seconds > 0 else None

    def add_training(self, images: int, seconds: float) -> None:
        """An epoch's training (steps only): ``images`` in ``seconds``."""
        self.train_images += images
        self.train_seconds += seconds
        self.epoch_images, self.epoch_seconds = images, seconds

    def record(self, line: dict[str, Any]) -> bool:
        """Add an epoch's ``metrics.jsonl`` line; True when it is the best so far."""
        self.history.append(line)
        improved = line["val_accuracy"] > self.best_accuracy
        if improved:
            self.best_accuracy, self.best_epoch = line["val_accuracy"], line["epoch"]
        return improved

    def metrics(self) -> dict[str, Any]:
        """What a checkpoint stores as ``"metrics"``: the last line, the history and the totals."""
        last = self.history[-1] if self.history else {}
        return {
            **last,
            "history": self.history,
            "best_val_accuracy": self.best_accuracy,
            "best_epoch": self.best_epoch,
            "train_images": self.train_images,
            "train_seconds": self.train_seconds,
        }

    @classmethod
    def from_metrics(cls, metrics: dict[str, Any]) -> Progress:
        """The progress a checkpoint's ``"metrics"`` recorded."""
        progress = cls(
            train_images=int(metrics.get("train_images", 0)), train_seconds=float(metrics.get("train_seconds", 0.0))
        )
        for line in metrics.get("history", []):
            progress.record(dict(line))
        return progress

    def summary(self) -> dict[str, Any]:
        """The metric half of the ``zoo run --json`` summary."""
        last = self.history[-1] if self.history else {}
        return {
            "epochs": self.epoch,
            "train_loss": last.get("train_loss"),
            "val_loss": last.get("val_loss"),
            "val_accuracy": last.get("val_accuracy"),
            "best_val_accuracy": self.best_accuracy if self.history else None,
            "images_per_second": self.images_per_second,
        }
