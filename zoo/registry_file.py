"""registry.yaml: model variants and optimizer presets, declared as data.

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
```

Everything is validated before use, and each error names ``file:line``. Nothing in the file is
evaluated as code.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

from zoo.edits import parse_edit
from zoo.entries import ModelEntry, OptimizerEntry, check_name, check_size
from zoo.errors import UnknownNameError, UsageError

__all__ = ["read_registry_file", "load_yaml"]

_TOP_KEYS = {"models", "optimizers"}
_MODEL_KEYS = {"base", "base_classes", "summary", "edits", "input_size", "default_dataset"}
_OPTIMIZER_KEYS = {"base", "summary", "hparams"}


class _Lined(dict):
    """A mapping that remembers the line it started on."""

    line = 0


class _LineLoader(yaml.SafeLoader):
    """SafeLoader (no tags that build objects) whose mappings carry line numbers and reject
    duplicate keys, which plain YAML silently overwrites."""


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode) -> _Lined:
    loader.flatten_mapping(node)
    out = _Lined()
    out.line = node.start_mark.line + 1
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in out:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        out[key] = loader.construct_object(value_node, deep=True)
    return out


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _line(node: Any, default: int) -> int:
    return getattr(node, "line", 0) or default


def load_yaml(path: Path, display: str) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"registry file {display} does not exist (check --registry / ZOO_REGISTRY)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read registry file {display}: {exc}") from None
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
) -> Iterator[ModelEntry | OptimizerEntry]:
    """Yield the entries of one registry file, checked against the ``models`` and
    ``optimizers`` registered so far (a variant's or preset's base must be among them)."""
    doc = load_yaml(path, display)
    if doc is None:
        return
    if not isinstance(doc, dict):
        raise UsageError(f"{display}:1: expected a mapping with 'models' and/or 'optimizers'")
    unknown = set(doc) - _TOP_KEYS
    if unknown:
        raise UsageError(
            f"{display}:{_line(doc, 1)}: unknown section(s) {sorted(map(str, unknown))}; "
            "expected 'models' and/or 'optimizers'"
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
    return ModelEntry(
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
    )


def _optimizer_preset(
    name: Any, raw: Any, where: str, display: str, optimizers: Mapping[str, OptimizerEntry]
) -> OptimizerEntry:
    """One entry of ``optimizers:``: a plugin's optimizer plus hyper-parameters."""
    check_name(name, "optimizer", where)
    if not isinstance(raw, dict):
        raise UsageError(f"{where}: optimizer '{name}' must be a mapping with 'base' and 'hparams'")
    extra = set(raw) - _OPTIMIZER_KEYS
    if extra:
        raise UsageError(
            f"{where}: unknown key(s) {sorted(extra)} in optimizer '{name}'; allowed: {sorted(_OPTIMIZER_KEYS)}"
        )
    base_name = raw.get("base")
    base = _plugin_base(optimizers, "optimizer", name, base_name, where)
    hparams = raw.get("hparams") or {}
    if not isinstance(hparams, dict) or not all(isinstance(k, str) for k in hparams):
        raise UsageError(f"{where}: hparams of optimizer '{name}' must be a mapping of parameter -> value")
    return OptimizerEntry(
        name=name,
        plugin=display,
        factory=base.factory,
        summary=raw.get("summary") or f"{base_name} with {', '.join(f'{k}={v}' for k, v in hparams.items())}",
        defaults={**base.defaults, **dict(hparams)},
        base=base_name,
        source=where,
    )
