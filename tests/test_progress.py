"""zoo.progress: history, best epoch, throughput, and the round trip through a checkpoint."""

from __future__ import annotations

from zoo.progress import Progress


def _line(epoch: int, accuracy: float) -> dict:
    return {
        "epoch": epoch,
        "train_loss": 1.0 / epoch,
        "val_loss": 2.0 / epoch,
        "val_accuracy": accuracy,
        "seconds": 1.5,
        "lr": 0.1,
    }


def test_record_tracks_the_best_epoch_and_ties_keep_the_first():
    progress = Progress()
    assert progress.epoch == 0 and progress.summary()["best_val_accuracy"] is None
    assert progress.record(_line(1, 0.5)) is True
    assert progress.record(_line(2, 0.7)) is True
    assert progress.record(_line(3, 0.7)) is False  # not better: best stays at epoch 2
    assert progress.record(_line(4, 0.6)) is False
    assert (progress.epoch, progress.best_epoch, progress.best_accuracy) == (4, 2, 0.7)


def test_throughput_counts_training_only():
    progress = Progress()
    assert progress.images_per_second is None
    progress.add_training(600, 2.0)
    progress.add_training(400, 1.0)
    assert progress.images_per_second == 1000 / 3
    assert progress.epoch_images_per_second == 400.0  # the last epoch's own


def test_metrics_round_trip_restores_everything():
    progress = Progress()
    for epoch, accuracy in ((1, 0.4), (2, 0.9), (3, 0.8)):
        progress.record(_line(epoch, accuracy))
    progress.add_training(1234, 5.5)
    metrics = progress.metrics()
    assert metrics["val_accuracy"] == 0.8 and metrics["epoch"] == 3  # the last line, flattened
    assert (metrics["best_val_accuracy"], metrics["best_epoch"]) == (0.9, 2)
    restored = Progress.from_metrics(metrics)
    assert restored == progress
    assert restored.summary() == progress.summary()


def test_summary_holds_the_last_epoch():
    progress = Progress()
    progress.record(_line(1, 0.25))
    progress.record(_line(2, 0.5))
    progress.add_training(100, 4.0)
    assert progress.summary() == {
        "epochs": 2,
        "train_loss": 0.5,
        "val_loss": 1.0,
        "val_accuracy": 0.5,
        "best_val_accuracy": 0.5,
        "images_per_second": 25.0,
    }
