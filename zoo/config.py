"""What ``zoo run`` is asked to do: :class:`RunConfig` and the checks that need no registry."""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from zoo.errors import UsageError

__all__ = [
    "RunConfig",
    "check_config",
    "default_data_dir",
    "RECIPE_OPTIONS",
    "FILE_OPTIONS",
    "option_value",
    "option_text",
    "merge_options",
]


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
    input_size: int | None = None  # train at N x N pixels (None: the model's input size)
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
    deterministic: bool = False  # CUDA: no TF32 and no cuDNN autotuning (zoo.runner.cuda_numerics)
    # The recipe: a schedule, augmentations, weight averaging and the loss's details.
    sched: str | None = None  # a scheduler or scheduler preset (zoo list schedulers)
    sched_opts: dict[str, str] = field(default_factory=dict)  # raw --sched-opt KEY=VALUE pairs
    sched_interval: str | None = None  # "epoch" or "step"; None: the scheduler's own
    augment: tuple[str, ...] = ()  # NAME[:KEY=VALUE,...] each, applied in order to training batches
    ema: float | None = None  # decay of an exponential moving average of the weights
    label_smoothing: float = 0.0
    clip_grad_norm: float | None = None
    accumulate: int = 1  # batches per optimizer step
    patience: int | None = None  # stop when val_accuracy has not improved for this many epochs
    recipe: str | None = None  # the registry.yaml recipe whose options this run took (--recipe)
    # The options named on the command line (or set by its --recipe or --config file); with
    # --resume, those not named come from the run's config.yaml (see zoo.resume.RESUMED_OPTIONS).
    # None: the ones that differ from the defaults.
    given: tuple[str, ...] | None = None


def default_data_dir() -> str:
    """``$ZOO_DATA``, else ``~/.cache/zoo/data``."""
    return os.environ.get("ZOO_DATA") or str(Path("~/.cache/zoo/data").expanduser())


def _at_least(value: Any, flag: str, minimum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise UsageError(f"{flag} must be an integer of at least {minimum}, got {value!r}")


def _in_range(value: Any, flag: str, expected: str, ok: Any) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or not ok(value):
        raise UsageError(f"{flag} must be {expected}, got {value!r}")


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
    _at_least(config.accumulate, "--accumulate", 1)
    if config.input_size is not None:
        _at_least(config.input_size, "--input-size", 1)  # the model's minimum: checked against the registry
    if config.patience is not None:
        _at_least(config.patience, "--patience", 1)
    _in_range(config.ema, "--ema", "a number between 0 and 1 (exclusive), e.g. 0.999", lambda x: 0 < x < 1)
    _in_range(config.label_smoothing, "--label-smoothing", "a number in [0, 1)", lambda x: 0 <= x < 1)
    _in_range(config.clip_grad_norm, "--clip-grad-norm", "a positive number", lambda x: x > 0)
    if config.sched_interval not in (None, "epoch", "step"):
        raise UsageError(f"--sched-interval must be 'epoch' or 'step', got {config.sched_interval!r}")
    lr = config.lr
    if lr is not None and not (
        isinstance(lr, (int, float)) and not isinstance(lr, bool) and math.isfinite(lr) and lr > 0
    ):
        raise UsageError(f"--lr must be a positive number, got {lr!r}")


# -- options from files: a recipe (registry.yaml) and a config file (zoo run --config) -----------

# What a recipe may set: how the run trains, never where it runs or what it reads.
RECIPE_OPTIONS = (
    *("optimizer", "opts", "lr", "epochs", "batch_size"),
    *("sched", "sched_opts", "sched_interval", "augment", "ema", "label_smoothing", "clip_grad_norm"),
    *("accumulate", "patience"),
)
# What a config file may set: every option but the run directory and whether to resume it (the
# command line's alone), ``trust`` (a file must not allow unpickling) and ``given``.
FILE_OPTIONS = tuple(f.name for f in fields(RunConfig) if f.name not in ("out", "resume", "trust", "given"))

_EXPECTED = {
    "str": "text",
    "bool": "true or false",
    "int": "an integer",
    "float": "a number",
    "dict[str, str]": "a mapping of KEY: VALUE",
    "tuple[str, ...]": "a list of texts",
}


def option_text(value: Any) -> str | None:
    """A YAML value as the text ``--opt KEY=VALUE`` would give (None: not a scalar or a list of
    them): ``true``, ``0.9``, ``0.9,0.999``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "none"
    if isinstance(value, (int, float, str)):
        return str(value) if isinstance(value, str) else repr(value)
    if isinstance(value, (list, tuple)) and value:
        parts = [option_text(v) for v in value if not isinstance(v, (list, tuple, dict))]
        return ",".join(parts) if len(parts) == len(value) else None  # type: ignore[arg-type]
    return None


def _converted(kind: str, value: Any) -> Any:
    """``value`` as a field of type ``kind`` (one of _EXPECTED), or raise ValueError."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == "str" and isinstance(value, str):
        return value
    if kind == "bool" and isinstance(value, bool):
        return value
    if kind == "int" and number and float(value).is_integer():
        return int(value)
    if kind == "float" and number and math.isfinite(value):
        return float(value)
    if kind == "dict[str, str]" and isinstance(value, Mapping):
        texts = {str(k).replace("-", "_"): option_text(v) for k, v in value.items()}
        if all(isinstance(k, str) for k in value) and None not in texts.values():
            return texts
    if kind == "tuple[str, ...]":
        items = [value] if isinstance(value, str) else value
        if isinstance(items, (list, tuple)) and all(isinstance(v, str) for v in items):
            return tuple(items)
    raise ValueError(kind)


_FIELD_TYPES = {f.name: str(f.type) for f in fields(RunConfig)}


def option_value(name: str, value: Any, where: str) -> Any:
    """A value read from a file for option ``name``, converted to its RunConfig type
    (``augment: crop`` is ``("crop",)``, ``opts`` values become the texts ``--opt`` gives);
    a value of another type is a UsageError naming ``where`` (``"FILE:LINE"``)."""
    kind = _FIELD_TYPES[name]
    optional = kind.endswith(" | None")
    kind = kind.removesuffix(" | None")
    if value is None and optional:
        return None
    try:
        return _converted(kind, value)
    except ValueError:
        expected = _EXPECTED.get(kind, kind) + (" (or null)" if optional else "")
        raise UsageError(f"{where}: '{name}' must be {expected}, got {value!r}") from None


def _drop_stale(merged: dict[str, Any], layer: Mapping[str, Any]) -> None:
    """Forget what ``layer`` makes meaningless in the layers below it: another optimizer's
    hyper-parameters and learning rate, another scheduler's hyper-parameters and interval, and a
    learning rate given twice (``lr`` over ``opts: {lr: ...}`` and the other way round)."""
    if "optimizer" in layer and merged.get("optimizer", layer["optimizer"]) != layer["optimizer"]:
        merged.pop("opts", None)
        merged.pop("lr", None)
    if "sched" in layer and merged.get("sched", layer["sched"]) != layer["sched"]:
        merged.pop("sched_opts", None)
        merged.pop("sched_interval", None)
    if "lr" in layer and "lr" in merged.get("opts", {}):
        merged["opts"] = {k: v for k, v in merged["opts"].items() if k != "lr"}
    if "lr" in layer.get("opts", {}):
        merged.pop("lr", None)


def merge_options(layers: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """RunConfig options from ``layers``, lowest first (a recipe, a config file, the command
    line): a higher layer's value wins; ``opts`` and ``sched_opts`` merge key by key. None values
    are "not given". See :func:`_drop_stale` for what a higher layer's choice drops below it."""
    merged: dict[str, Any] = {}
    for layer in layers:
        layer = {k: v for k, v in layer.items() if v is not None}
        _drop_stale(merged, layer)
        for name, value in layer.items():
            if name in ("opts", "sched_opts"):
                merged[name] = {**merged.get(name, {}), **value}
            else:
                merged[name] = value
    return merged
