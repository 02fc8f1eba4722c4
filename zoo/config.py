"""What ``zoo run`` is asked to do: :class:`RunConfig` and the checks that need no registry."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zoo.errors import UsageError

__all__ = ["RunConfig", "check_config", "default_data_dir"]


@dataclass
class RunConfig:
    """Everything ``zoo run`` takes (see CONTRACT.md for the meaning of each option)."""

    model: str
    optimizer: str
    data: str | None = None
    data_dir: str | None = None
    download: bool = False
    epochs: int = 10
    batch_size: int = 64
    lr: float | None = None
    opts: dict[str, str] = field(default_factory=dict)  # raw --opt KEY=VALUE pairs
    device: str = "auto"
    seed: int = 0
    out: str | None = None
    resume: bool = False
    weights: str | None = None  # "imagenet" or a state_dict file, loaded before the edits
    limit_train: int | None = None
    limit_val: int | None = None
    workers: int = 0
    amp: bool = False
    compile: bool = False
    tensorboard: bool = False
    quiet: bool = False
    registry_files: tuple[str, ...] = ()
    trust: bool = False
    nproc: int = 1
    skip_bad_images: bool = False  # leave out image files that cannot be read, with a warning
    # The options named on the command line; with --resume, those not named come from the run's
    # config.yaml (see zoo.resume.RESUMED_OPTIONS). None: the ones that differ from the defaults.
    given: tuple[str, ...] | None = None


def default_data_dir() -> str:
    """``$ZOO_DATA``, else ``~/.cache/zoo/data``."""
    return os.environ.get("ZOO_DATA") or str(Path("~/.cache/zoo/data").expanduser())


def _at_least(value: Any, flag: str, minimum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise UsageError(f"{flag} must be an integer of at least {minimum}, got {value!r}")


def check_config(config: RunConfig) -> None:
    """Refuse option values no run can use (names are checked against the registry later)."""
    _at_least(config.epochs, "--epochs", 1)
    _at_least(config.batch_size, "--batch-size", 1)
    _at_least(config.workers, "--workers", 0)
    _at_least(config.seed, "--seed", 0)
    _at_least(config.nproc, "--nproc", 1)  # more than one process: checked where workers start
    for value, flag in ((config.limit_train, "--limit-train"), (config.limit_val, "--limit-val")):
        if value is not None:
            _at_least(value, flag, 1)
    lr = config.lr
    if lr is not None and not (
        isinstance(lr, (int, float)) and not isinstance(lr, bool) and math.isfinite(lr) and lr > 0
    ):
        raise UsageError(f"--lr must be a positive number, got {lr!r}")
