"""zoo.console: what a run prints, through the same event hooks any logger uses."""

from __future__ import annotations

import io
from pathlib import Path
from types import SimpleNamespace

from zoo.config import RunConfig
from zoo.console import Console
from zoo.plugins import PluginHost
from zoo.progress import Progress


def _run(progress: Progress) -> SimpleNamespace:
    return SimpleNamespace(
        config=RunConfig("tudui", "sgd", epochs=3),
        dataset="digits",
        train_samples=1437,
        val_samples=360,
        where="cpu",
        start_epoch=1,
        run_dir=Path("runs/r"),
        progress=progress,
    )


def test_start_and_epoch_lines_through_pluggy():
    stream = io.StringIO()
    host = PluginHost(strict=True)
    assert host.register(Console(stream), "console")
    progress = Progress()
    run = _run(progress)
    host.emit("on_run_start", run=run)
    line = {"epoch": 2, "train_loss": 0.5, "val_loss": 0.25, "val_accuracy": 0.875, "seconds": 3.25, "lr": 0.1}
    progress.record(line)
    progress.add_training(1437, 2.0)
    host.emit("on_epoch_end", run=run, epoch=2, metrics=line)
    worse = {**line, "epoch": 3, "val_accuracy": 0.5}
    progress.record(worse)
    progress.add_training(1437, 1.0)  # twice as fast: the line shows this epoch's rate, not the run's 958
    host.emit("on_epoch_end", run=run, epoch=3, metrics=worse)
    assert stream.getvalue().splitlines() == [
        "zoo: tudui + sgd on digits (1437 train / 360 val) on cpu, epochs 2-3 -> runs/r",
        "epoch 2/3  train_loss 0.5000  val_loss 0.2500  val_accuracy 0.8750 (best)  3.2s  718 img/s",
        "epoch 3/3  train_loss 0.5000  val_loss 0.2500  val_accuracy 0.5000  3.2s  1,437 img/s",
    ]


def test_notes_and_no_progress_bar_off_a_terminal():
    stream = io.StringIO()
    console = Console(stream)
    console.note("resuming with changed hyper-parameters {'lr': 0.01}")
    assert stream.getvalue() == "zoo: note: resuming with changed hyper-parameters {'lr': 0.01}\n"
    assert console.progress_bar(1, 3, 100, 0) is None


def test_a_progress_bar_on_a_terminal():
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    stream = Terminal()
    bar = Console(stream).progress_bar(2, 3, 10, 4)
    assert "epoch 2/3" in stream.getvalue() and "4/10" in stream.getvalue()  # resumed at step 4
    bar.update(1)
    assert bar.n == 5
    bar.close()
    assert not bar.leave  # the epoch line replaces it
