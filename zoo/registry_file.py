"""registry.yaml: model variants, optimizer presets and scheduler presets, declared as data.

```yaml
models:
  vgg16-replace:
    base: vgg16              # a model registered by a plugin
    base_classes: 1000       # optional: build the base 1000-wide (ImageNet weights fit)
    summary: VGG16 with classifier.6 replaced
    edits:
      - replace: classifier.6
        layer: Linear        # a torch.nn class, never an arbitrary import
        args: [4096, $num_classes]
optimizers:
  sgd-momentum:
    base: sgd
    hparams: {lr: 0.01, momentum: 0.9}
schedulers:
  cosine:
    base: cosineannealinglr  # a scheduler registered by a plugin
    hparams: {eta_min: 0.0}
    interval: epoch          # optional: the base's by default
recipes:
  digits-sgd:                # zoo run MODEL OPTIMIZER --recipe digits-sgd
    summary: SGD with Nesterov momentum, one-cycle, label smoothing and crops
    opts: {momentum: 0.9, nesterov: true}
    sched: onecycle
    augment: ["crop:padding=3"]
```

Everything is validated before use, and each error names ``file:line``. Nothing in the file is
evaluated as code. :func:`read_run_file` reads ``zoo run --config FILE.yaml`` the same way.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

from zoo.config import FILE_OPTIONS, RECIPE_OPTIONS, RunConfig, check_config, option_value
from zoo.edits import parse_edit
from zoo.entries import (
    ModelEntry,
    OptimizerEntry,
    RecipeEntry,
    SchedulerEntry,
    check_interval,
    check_name,
    check_size,
    too_small,
)
from zoo.errors import UnknownNameError, UsageError

__all__ = ["read_registry_file", "read_run_file", "load_yaml", "RUN_FILE_IGNORED"]

_TOP_KEYS = {"models", "optimizers", "schedulers", "recipes"}
_MODEL_KEYS = {"base", "base_classes", "summary", "edits", "input_size", "default_dataset"}
_OPTIMIZER_KEYS = {"base", "summary", "hparams"}
_SCHEDULER_KEYS = {"base", "summary", "hparams", "interval"}
_RECIPE_KEYS = {"summary", *RECIPE_OPTIONS}
_SECTIONS = "'models', 'optimizers', 'schedulers' and/or 'recipes'"


class _Lined(dict):
    """A mapping that remembers the line it started on, and each key's."""

    line = 0
    key_lines: dict[Any, int] = {}


class _LineLoader(yaml.SafeLoader):
    """SafeLoader (no tags that build objects) whose mappings carry line numbers and reject
    duplicate keys, which plain YAML silently overwrites."""


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode) -> _Lined:
    loader.flatten_mapping(node)
    out = _Lined()
    out.line = node.start_mark.line + 1
    out.key_lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in out:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        out[key] = loader.construct_object(value_node, deep=True)
        out.key_lines[key] = key_node.start_mark.line + 1
    return out


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _line(node: Any, default: int) -> int:
    return getattr(node, "line", 0) or default


def _key_line(mapping: Any, key: Any, default: int) -> int:
    return getattr(mapping, "key_lines", {}).get(key) or _line(mapping, default)


def load_yaml(
    path: Path, display: str, what: str = "registry file", hint: str = " (check --registry / ZOO_REGISTRY)"
) -> Any:
    """The YAML document in ``path`` (mappings remember their lines); errors name ``display``
    and its line, and say it is a ``what`` (a registry file, a config file)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"{what} {display} does not exist{hint}") from None
    except IsADirectoryError:
        raise UsageError(f"{what} {display} is a directory, not a YAML file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read {what} {display}: {' '.join(str(exc).split())}") from None
    try:
        return yaml.load(text, Loader=_LineLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 0
        problem = " ".join(str(exc.problem or exc).split())
        raise UsageError(f"{display}:{line}: invalid YAML: {problem}") from None
    except yaml.YAMLError as exc:
        raise UsageError(f"{display}: invalid YAML: {' '.join(str(exc).split())}") from None


def _plugin_base(table: Mapping[str, Any], kind: str, name: str, base_name: Any, where: str) -> Any:
    """The plugin entry a variant or preset builds on (variants of variants are not allowed)."""
    if not isinstance(base_name, str):
        raise UsageError(f"{where}: {kind} '{name}' needs 'base': the name of a registered {kind}")
    base = table.get(base_name)
    if base is None or base.base is not None:
        plugin_entries = [n for n, e in table.items() if e.base is None]
        raise UsageError(
            f"{where}: {kind} '{name}': base must be a plugin's {kind}: "
            f"{UnknownNameError(kind, base_name, plugin_entries)}"
        )
    return base


def read_registry_file(
    path: Path,
    display: str,
    *,
    models: Mapping[str, ModelEntry],
    optimizers: Mapping[str, OptimizerEntry],
    schedulers: Mapping[str, SchedulerEntry] | None = None,
) -> Iterator[ModelEntry | OptimizerEntry | SchedulerEntry | RecipeEntry]:
    """Yield the entries of one registry file, checked against the ``models``, ``optimizers``
    and ``schedulers`` registered so far (a variant's or preset's base must be among them)."""
    doc = load_yaml(path, display)
    if doc is None:
        return
    if not isinstance(doc, dict):
        raise UsageError(f"{display}:1: expected a mapping with {_SECTIONS}")
    unknown = set(doc) - _TOP_KEYS
    if unknown:
        raise UsageError(
            f"{display}:{_line(doc, 1)}: unknown section(s) {sorted(map(str, unknown))}; expected {_SECTIONS}"
        )
    section = doc.get("models") or {}
    if not isinstance(section, dict):
        raise UsageError(f"{display}:{_line(doc, 1)}: 'models' must be a mapping of name -> variant")
    for name, raw in section.items():
        yield _model_variant(name, raw, f"{display}:{_line(raw, _line(section, 1))}", display, models)
    section = doc.get("optimizers") or {}
    if not isinstance(section, dict):
        raise UsageError(f"{display}:{_line(doc, 1)}: 'optimizers' must be a mapping of name -> preset")
    for name, raw in section.items():
        yield _optimizer_preset(name, raw, f"{display}:{_line(raw, _line(section, 1))}", display, optimizers)
    section = doc.get("schedulers") or {}
    if not isinstance(section, dict):
        raise UsageError(f"{display}:{_line(doc, 1)}: 'schedulers' must be a mapping of name -> preset")
    for name, raw in section.items():
        yield _scheduler_preset(name, raw, f"{display}:{_line(raw, _line(section, 1))}", display, schedulers or {})
    section = doc.get("recipes") or {}
    if not isinstance(section, dict):
        raise UsageError(f"{display}:{_line(doc, 1)}: 'recipes' must be a mapping of name -> recipe")
    for name, raw in section.items():
        yield _recipe(name, raw, f"{display}:{_key_line(section, name, 1)}", display)


def _model_variant(name: Any, raw: Any, where: str, display: str, models: Mapping[str, ModelEntry]) -> ModelEntry:
    """One entry of ``models:``: a plugin's model plus edits."""
    check_name(name, "model", where)
    if not isinstance(raw, dict):
        raise UsageError(f"{where}: model '{name}' must be a mapping with 'base' and 'edits'")
    extra = set(raw) - _MODEL_KEYS
    if extra:
        raise UsageError(f"{where}: unknown key(s) {sorted(extra)} in model '{name}'; allowed: {sorted(_MODEL_KEYS)}")
    base_name = raw.get("base")
    base = _plugin_base(models, "model", name, base_name, where)
    edits_raw = raw.get("edits") or []
    if not isinstance(edits_raw, list):
        raise UsageError(f"{where}: 'edits' of model '{name}' must be a list")
    edits = tuple(parse_edit(e, f"{display}:{_line(e, _line(raw, 1))}") for e in edits_raw)
    base_classes = raw.get("base_classes")
    if base_classes is not None and (
        not isinstance(base_classes, int) or isinstance(base_classes, bool) or base_classes < 1
    ):
        raise UsageError(f"{where}: base_classes must be a positive integer, got {base_classes!r}")
    summary = raw.get("summary", "")
    if not isinstance(summary, str):
        raise UsageError(f"{where}: summary must be text")
    entry = ModelEntry(
        name=name,
        plugin=display,
        builder=base.builder,
        summary=summary or f"{base_name} with {len(edits)} edit(s)",
        input_size=check_size(raw["input_size"], where) if "input_size" in raw else base.input_size,
        default_dataset=raw.get("default_dataset", base.default_dataset),
        base=base_name,
        edits=edits,
        base_classes=base_classes,
        source=where,
        min_input_size=base.min_input_size,  # the base's: edits to the head do not change it
        weights=base.weights,  # --weights imagenet loads the base's, before the edits
    )
    problem = too_small(entry, entry.input_size)
    if problem:
        raise UsageError(f"{where}: input_size {list(entry.input_size)} of model '{name}' is too small: {problem}")
    return entry


def _preset(
    kind: str, name: Any, raw: Any, where: str, keys: set[str], table: Mapping[str, Any]
) -> tuple[str, Any, dict[str, Any]]:
    """What an ``optimizers:`` or ``schedulers:`` entry has in common: ``(base name, base entry,
    hparams)``, each checked, with the file's line in every error."""
    check_name(name, kind, where)
    if not isinstance(raw, dict):
        raise UsageError(f"{where}: {kind} '{name}' must be a mapping with 'base' and 'hparams'")
    extra = set(raw) - set(keys)
    if extra:
        raise UsageError(f"{where}: unknown key(s) {sorted(extra)} in {kind} '{name}'; allowed: {sorted(keys)}")
    base_name = raw.get("base")
    base = _plugin_base(table, kind, name, base_name, where)
    hparams = raw.get("hparams") or {}
    if not isinstance(hparams, dict) or not all(isinstance(k, str) for k in hparams):
        raise UsageError(f"{where}: hparams of {kind} '{name}' must be a mapping of parameter -> value")
    return base_name, base, dict(hparams)


def _optimizer_preset(
    name: Any, raw: Any, where: str, display: str, optimizers: Mapping[str, OptimizerEntry]
) -> OptimizerEntry:
    """One entry of ``optimizers:``: a plugin's optimizer plus hyper-parameters."""
    base_name, base, hparams = _preset("optimizer", name, raw, where, _OPTIMIZER_KEYS, optimizers)
    return OptimizerEntry(
        name=name,
        plugin=display,
        factory=base.factory,
        summary=raw.get("summary") or f"{base_name} with {', '.join(f'{k}={v}' for k, v in hparams.items())}",
        defaults={**base.defaults, **hparams},
        base=base_name,
        source=where,
    )


def _scheduler_preset(
    name: Any, raw: Any, where: str, display: str, schedulers: Mapping[str, SchedulerEntry]
) -> SchedulerEntry:
    """One entry of ``schedulers:``: a plugin's scheduler plus hyper-parameters (and an interval)."""
    base_name, base, hparams = _preset("scheduler", name, raw, where, _SCHEDULER_KEYS, schedulers)
    interval = check_interval(raw["interval"], f"{where}: scheduler '{name}'") if "interval" in raw else base.interval
    summary = raw.get("summary", "")
    if not isinstance(summary, str):
        raise UsageError(f"{where}: summary must be text")
    shown = ", ".join(f"{k}={v}" for k, v in hparams.items())
    return SchedulerEntry(
        name=name,
        plugin=display,
        factory=base.factory,
        summary=summary or f"{base_name}{' with ' + shown if shown else ''}",
        defaults={**base.defaults, **hparams},
        interval=interval,
        base=base_name,
        source=where,
    )


def _recipe(name: Any, raw: Any, where: str, display: str) -> RecipeEntry:
    """One entry of ``recipes:``: a bundle of ``zoo run`` options, their types and ranges checked
    now; the names in it (scheduler, augmentations, optimizer) when a run uses it."""
    check_name(name, "recipe", where)
    if not isinstance(raw, dict):
        raise UsageError(f"{where}: recipe '{name}' must be a mapping of run options (e.g. sched: cosine)")
    options: dict[str, Any] = {}
    for key, value in raw.items():
        at = f"{display}:{_key_line(raw, key, 1)}"
        if key not in _RECIPE_KEYS:
            raise UsageError(
                f"{at}: unknown key {key!r} in recipe '{name}' (expected one of {', '.join(sorted(_RECIPE_KEYS))})"
            )
        if key == "summary":
            if not isinstance(value, str):
                raise UsageError(f"{at}: summary must be text")
            continue
        options[key] = option_value(key, value, f"{at}: recipe '{name}'")
        if key == "sched_interval" and options[key] is not None:
            check_interval(options[key], f"{at}: recipe '{name}'")
    try:  # the ranges the command line's flags have (--ema in (0, 1), --accumulate >= 1, ...)
        check_config(RunConfig(**{"model": "model", "optimizer": "optimizer", **options}))
    except UsageError as exc:
        raise UsageError(f"{where}: recipe '{name}': {exc}") from None
    shown = ", ".join(f"{k}={v}" for k, v in options.items() if k in ("optimizer", "sched", "epochs"))
    return RecipeEntry(
        name=name, plugin=display, summary=raw.get("summary") or f"run options: {shown or 'none'}",
        options=options, source=where,
    )  # fmt: skip


# Keys of a run directory's config.yaml that are records, not options: zoo run --config accepts
# them and takes nothing from them (``dataset`` stands in for a missing ``data``).
RUN_FILE_IGNORED = (
    *("dataset", "hparams", "num_classes", "base", "edits", "resolved_device", "world_size"),
    *("out", "resume", "trust", "given"),
)


def read_run_file(path: Path, display: str) -> dict[str, Any]:
    """The options of ``zoo run --config FILE.yaml``: a file in the shape of a run directory's
    ``config.yaml``, each value checked for its type. ``out``, ``resume`` and ``trust`` are
    never taken from a file; the other records of config.yaml (:data:`RUN_FILE_IGNORED`) are
    accepted and ignored; any other key is an error naming ``FILE:LINE``."""
    doc = load_yaml(path, display, "config file", "")
    if not isinstance(doc, dict):
        line = _line(doc, 1) if doc is not None else 1
        raise UsageError(f"{display}:{line}: a config file must be a mapping of run options (as a run's config.yaml)")
    options: dict[str, Any] = {}
    for key, value in doc.items():
        at = f"{display}:{_key_line(doc, key, 1)}"
        if key in FILE_OPTIONS:
            options[key] = option_value(key, value, at)
        elif key not in RUN_FILE_IGNORED:
            expected = ", ".join(sorted(FILE_OPTIONS))
            raise UsageError(f"{at}: unknown key {key!r} (expected one of {expected})")
    if options.get("data") is None and isinstance(doc.get("dataset"), str):
        options["data"] = doc["dataset"]  # what the recorded run resolved its default dataset to
    named = {k: v for k, v in options.items() if k not in ("model", "optimizer") and v is not None}
    try:  # the ranges the command line's flags have (--ema in (0, 1), --accumulate >= 1, ...)
        check_config(RunConfig("model", "optimizer", **named))
    except UsageError as exc:
        raise UsageError(f"{display}: {exc}") from None
    return options
