"""Registry entries and the checks on what a plugin or a registry file names.

The plain data both ways of registering produce: a plugin's ``register`` call (zoo.registry)
and a registry.yaml entry (zoo.registry_file). Nothing here imports torch or the plugin host.
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass, field
from typing import Any

from zoo.errors import UsageError, one_line

__all__ = [
    "NAME_RE",
    "KINDS",
    "ModelEntry",
    "OptimizerEntry",
    "DatasetEntry",
    "SchedulerEntry",
    "AugmentationEntry",
    "RecipeEntry",
    "INTERVALS",
    "Entry",
    "check_name",
    "check_size",
    "check_min_size",
    "check_weights",
    "check_interval",
    "too_small",
    "resolve",
]

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
KINDS = ("model", "optimizer", "dataset", "scheduler", "augmentation", "recipe")
INTERVALS = ("epoch", "step")  # a scheduler steps after each epoch, or after each optimizer step


@dataclass(frozen=True)
class ModelEntry:
    """A model: a plugin's builder, or a registry.yaml variant (``base`` plus ``edits``)."""

    name: str
    plugin: str
    builder: Any  # builder(num_classes) -> nn.Module, or "module:function"
    summary: str = ""
    input_size: tuple[int, int, int] = (3, 32, 32)
    default_dataset: str | None = None
    base: str | None = None
    edits: tuple[Any, ...] = ()  # zoo.edits.Edit, for variants
    base_classes: int | None = None  # build the base with this many outputs (1000: ImageNet weights)
    source: str | None = None  # "registry.yaml:12" for variants
    min_input_size: tuple[int, int] | None = None  # (H, W) the model accepts at least; None: any
    params: int | None = None  # parameters at 1000 classes (as torchvision and timm count them)
    weights: tuple[dict[str, Any], ...] = ()  # pretrained weights {"name", "url", "file", ...}, the default first

    kind = "model"


@dataclass(frozen=True)
class OptimizerEntry:
    """An optimizer: a plugin's factory, or a registry.yaml preset (``base`` plus hparams)."""

    name: str
    plugin: str
    factory: Any  # factory(params, **hparams) -> Optimizer, or "module:Class"
    summary: str = ""
    defaults: dict[str, Any] = field(default_factory=dict)
    base: str | None = None
    source: str | None = None

    kind = "optimizer"


@dataclass(frozen=True)
class DatasetEntry:
    """A dataset: ``loader(train, root, download)`` and what it holds."""

    name: str
    plugin: str
    loader: Any
    summary: str = ""
    num_classes: int | None = None  # None: read from the loaded dataset's classes
    input_size: tuple[int, int, int] = (3, 32, 32)
    classes: tuple[str, ...] | None = None

    kind = "dataset"


@dataclass(frozen=True)
class SchedulerEntry:
    """A learning-rate scheduler: a plugin's factory, or a registry.yaml preset (``base`` plus hparams)."""

    name: str
    plugin: str
    factory: Any  # factory(optimizer, **hparams) -> LRScheduler, or "module:Class"
    summary: str = ""
    defaults: dict[str, Any] = field(default_factory=dict)
    interval: str = "epoch"  # INTERVALS: stepped after each epoch or after each optimizer step
    base: str | None = None
    source: str | None = None

    kind = "scheduler"


@dataclass(frozen=True)
class AugmentationEntry:
    """A training-batch augmentation: ``factory(**hparams) -> callable(images, generator) -> images``."""

    name: str
    plugin: str
    factory: Any
    summary: str = ""
    defaults: dict[str, Any] = field(default_factory=dict)

    kind = "augmentation"


@dataclass(frozen=True)
class RecipeEntry:
    """A registry.yaml recipe: a named bundle of ``zoo run`` options (``--recipe NAME``).

    ``options`` holds RunConfig field values as the command line would give them (``opts`` and
    ``sched_opts`` as KEY -> text, ``augment`` a tuple); names in them (the scheduler, the
    augmentations, the optimizer) are checked against the registry when a run uses the recipe."""

    name: str
    plugin: str  # the registry file that declares it
    summary: str = ""
    options: dict[str, Any] = field(default_factory=dict)
    source: str | None = None  # "registry.yaml:70"

    kind = "recipe"


Entry = ModelEntry | OptimizerEntry | DatasetEntry | SchedulerEntry | AugmentationEntry | RecipeEntry


def check_name(name: Any, kind: str, source: str) -> str:
    """``name`` when it is a valid entry name (CONTRACT.md); else a UsageError naming ``source``."""
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise UsageError(
            f"{source}: invalid {kind} name {name!r}: expected lower case "
            f"letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    return name


def check_size(size: Any, source: str) -> tuple[int, int, int]:
    """``size`` as a ``(C, H, W)`` tuple of positive ints; else a UsageError naming ``source``."""
    if (
        not isinstance(size, (tuple, list))
        or len(size) != 3
        or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size)
    ):
        raise UsageError(f"{source}: input_size must be three positive integers (C, H, W), got {size!r}")
    return tuple(size)  # type: ignore[return-value]


def check_min_size(size: Any, source: str) -> tuple[int, int] | None:
    """A model's minimum input size as ``(H, W)`` (an int ``N`` is ``(N, N)``; None: any size)."""
    if size is None:
        return None
    pair = (size, size) if isinstance(size, int) else size
    if (
        not isinstance(pair, (tuple, list))
        or len(pair) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in pair)
    ):
        raise UsageError(f"{source}: min_input_size must be a positive integer or (H, W), got {size!r}")
    return (pair[0], pair[1])


def check_weights(weights: Any, source: str) -> tuple[dict[str, Any], ...]:
    """Pretrained weights as a tuple of plain dicts, each with a ``name`` and a ``url`` (and a
    ``file``: the URL's last part unless given), the default first."""
    if weights is None:
        return ()
    rows = []
    for row in weights if isinstance(weights, (list, tuple)) else [weights]:
        if not isinstance(row, dict) or not isinstance(row.get("name"), str) or not isinstance(row.get("url"), str):
            raise UsageError(f"{source}: weights must be a list of mappings with 'name' and 'url', got {row!r}")
        rows.append({**row, "file": row.get("file") or row["url"].rsplit("/", 1)[-1]})
    return tuple(rows)


def too_small(entry: ModelEntry, input_size: Any) -> str | None:
    """Why ``input_size`` ``(C, H, W)`` is below ``entry``'s minimum, naming it; None when it is not."""
    minimum = entry.min_input_size
    if minimum is None or (input_size[-2] >= minimum[0] and input_size[-1] >= minimum[1]):
        return None
    shown = str(minimum[0]) if minimum[0] == minimum[1] else f"{minimum[0]}x{minimum[1]}"
    given = str(input_size[-2]) if input_size[-2] == input_size[-1] else f"{input_size[-2]}x{input_size[-1]}"
    return f"model '{entry.name}' takes inputs of at least {shown} pixels, not {given}"


def check_interval(interval: Any, source: str) -> str:
    """``interval`` when it is one of INTERVALS; else a UsageError naming ``source``."""
    if interval not in INTERVALS:
        raise UsageError(f"{source}: interval must be 'epoch' or 'step', got {interval!r}")
    return interval


def resolve(target: Any, what: str) -> Any:
    """Turn an import path ``"pkg.module:attr"`` into the object; pass callables through."""
    if not isinstance(target, str):
        return target
    module_name, _, attr = target.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in attr.split(".") if attr else []:
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise UsageError(f"{what}: cannot import '{target}': {one_line(exc)}") from exc
    return obj
