"""Run directories written by hand, as the runner lays them out (CONTRACT.md), so the tests of
``zoo plot`` and ``zoo runs`` need no training."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import yaml


def metrics_line(epoch: int, *, speed: float = 0.35, lr: float = 0.05) -> dict[str, Any]:
    """One plausible metrics.jsonl line: losses falling and accuracy rising with ``epoch``."""
    train_loss = 2.3 * math.exp(-speed * epoch) + 0.08
    return {
        "epoch": epoch,
        "train_loss": round(train_loss, 4),
        "val_loss": round(train_loss * 1.15 + 0.03 * epoch / 10, 4),
        "val_accuracy": round(min(0.99, 0.1 + 0.88 * (1 - math.exp(-speed * 1.2 * epoch))), 4),
        "seconds": 1.7,
        "lr": lr,
    }


def write_run(
    root: Path,
    name: str,
    *,
    model: str = "tudui",
    optimizer: str = "sgd",
    dataset: str = "digits",
    epochs: int = 10,
    done: int | None = None,
    speed: float = 0.35,
    started: str | None = "2026-11-25T21:00:00+00:00",
    status: dict[str, Any] | None = None,
) -> Path:
    """A run directory with config.yaml and ``done`` (default: all) epochs of metrics.jsonl,
    plus status.json when ``status`` is given. ``started=None`` leaves the start time out."""
    run_dir = root / name
    run_dir.mkdir(parents=True)
    config = {
        "model": model,
        "optimizer": optimizer,
        "hparams": {"lr": 0.05, "momentum": 0.9},
        "dataset": dataset,
        "num_classes": 10,
        "epochs": epochs,
        "batch_size": 16,
        "seed": 0,
        "device": "cpu",
        "edits": [],
    }
    if started is not None:
        config["started"] = started
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    done = epochs if done is None else done
    lines = [json.dumps(metrics_line(e, speed=speed)) + "\n" for e in range(1, done + 1)]
    (run_dir / "metrics.jsonl").write_text("".join(lines))
    if status is not None:
        (run_dir / "status.json").write_text(json.dumps(status))
    return run_dir
