"""The registry: models, optimizers, datasets, schedulers and augmentations by name, from
plugins and registry.yaml, and recipes (named bundles of run options) from registry.yaml.

Registering builds nothing: an entry holds a builder (a callable or an import path
``"package.module:function"``) that runs only when a model is asked for. Models, optimizers,
datasets, schedulers and augmentations are separate namespaces. A name two plugins register in one of them is a warning
naming both, once: the built-in's entry is kept (the built-in registry.yaml's too), else the
first loaded plugin's, and every command keeps working (ZOO_STRICT_PLUGINS=1: exit 2). A name
that a user's registry file takes again is an error naming both sources.
"""

from __future__ import annotations

import difflib
import fnmatch
import os
import re
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from zoo.edits import apply_edits, check_model, edit_from_json
from zoo.entries import (
    KINDS,
    AugmentationEntry,
    DatasetEntry,
    Entry,
    ModelEntry,
    OptimizerEntry,
    RecipeEntry,
    SchedulerEntry,
    check_interval,
    check_name,
    check_size,
    resolve,
)
from zoo.errors import DuplicateNameError, UnknownNameError, UsageError, ZooError, one_line
from zoo.plugins import PluginHost, get_plugin_host
from zoo.registry_file import read_registry_file

__all__ = [
    "Registry",
    "get_registry",
    "reset_registry",
    "registry_files",
    "model_from_checkpoint",
    "BUILTIN_REGISTRY",
]


def _natural_key(name: str) -> list[Any]:
    # vgg2 before vgg16, as timm's list_models sorts
    return [int(tok) if tok.isdigit() else tok for tok in re.split(r"(\d+)", name)]


class Registry:
    """Every registered entry, by kind and name."""

    def __init__(self) -> None:
        self.models: dict[str, ModelEntry] = {}
        self.optimizers: dict[str, OptimizerEntry] = {}
        self.datasets: dict[str, DatasetEntry] = {}
        self.schedulers: dict[str, SchedulerEntry] = {}
        self.augmentations: dict[str, AugmentationEntry] = {}
        self.recipes: dict[str, RecipeEntry] = {}  # registry files only: no hook registers one
        self.host: PluginHost | None = None
        self.files: list[str] = []  # registry files layered in, in order
        self.builtin_files: set[str] = set()  # of those, the zoo's own (its entries are built-ins)

    # -- building the registry -----------------------------------------------------------------

    def table(self, kind: str) -> dict[str, Any]:
        return {
            "model": self.models,
            "optimizer": self.optimizers,
            "dataset": self.datasets,
            "scheduler": self.schedulers,
            "augmentation": self.augmentations,
            "recipe": self.recipes,
        }[kind]

    def add(self, entry: Entry) -> None:
        """Add one entry; a name already taken in its namespace is an error naming both."""
        table = self.table(entry.kind)
        other = table.get(entry.name)
        if other is not None:
            raise DuplicateNameError(f"{self._twice(other, entry)}; uninstall or rename one of them")
        table[entry.name] = entry

    def is_builtin(self, entry: Entry) -> bool:
        """Whether ``entry`` comes with the zoo: a built-in plugin's, or the built-in registry.yaml's."""
        if getattr(entry, "source", None):
            return entry.plugin in self.builtin_files
        info = self.host.infos.get(entry.plugin) if self.host is not None else None
        return bool(info and info.builtin)

    def origin(self, entry: Entry) -> str:
        """Where an entry comes from, for messages: ``built-in plugin 'tudui'``, ``registry.yaml:10``."""
        source = getattr(entry, "source", None)
        if source:
            return source
        return f"{'built-in ' if self.is_builtin(entry) else ''}plugin '{entry.plugin}'"

    def _twice(self, first: Entry, second: Entry) -> str:
        return f"{first.kind} '{first.name}' is registered twice: by {self.origin(first)} and by {self.origin(second)}"

    def _clash(self, kept: Entry, ignored: Entry) -> None:
        """Two plugins (or a plugin and the built-in registry.yaml) took one name: say so once
        and carry on with ``kept`` (ZOO_STRICT_PLUGINS: stop, exit 2)."""
        message = self._twice(kept, ignored)
        if self.host is not None and self.host.strict:
            raise DuplicateNameError(f"{message} (ZOO_STRICT_PLUGINS is set)")
        why = "the built-in one" if self.is_builtin(kept) else f"the one from {self.origin(kept)} (loaded first)"
        warning = f"{message}; keeping {why}, {self.origin(ignored)} is ignored for this name"
        if self.host is not None:
            self.host.warn_once(warning)
        else:
            print(f"zoo: warning: {warning}", file=sys.stderr)

    def _add_registered(self, entry: Entry) -> None:
        """A plugin's entry: a name already taken stays with its first holder (the built-ins,
        their registry.yaml included, are all in before any other plugin registers), and the
        clash is a warning; a registry file goes through :meth:`add`, where it is an error."""
        table = self.table(entry.kind)
        other = table.get(entry.name)
        if other is None:
            table[entry.name] = entry
        else:
            self._clash(other, entry)

    def collect_plugins(self, host: PluginHost, builtin: bool | None = None) -> None:
        """Ask every loaded plugin (``builtin``: only the built-ins, or only the others) to
        register; a plugin that raises is reported and skipped."""
        self.host = host
        for plugin_name, _plugin in list(host.loaded()):
            if builtin is not None and host.infos[plugin_name].builtin != builtin:
                continue
            staged: list[Entry] = []
            try:
                host.call_one(plugin_name, "register_models", register=_ModelRegistrar(plugin_name, staged))
                host.call_one(plugin_name, "register_optimizers", register=_OptimizerRegistrar(plugin_name, staged))
                host.call_one(plugin_name, "register_datasets", register=_DatasetRegistrar(plugin_name, staged))
                host.call_one(plugin_name, "register_schedulers", register=_SchedulerRegistrar(plugin_name, staged))
                host.call_one(
                    plugin_name, "register_augmentations", register=_AugmentationRegistrar(plugin_name, staged)
                )
            except Exception as exc:  # the plugin's bug: report it, keep everything else
                host.fail(host.infos[plugin_name], one_line(exc))
                continue
            for entry in staged:
                self._add_registered(entry)

    def load_file(self, path: str | os.PathLike[str], display: str | None = None, *, builtin: bool = False) -> None:
        """Layer a registry.yaml over the plugin entries (validated fully before use).
        ``builtin``: the zoo's own file, whose entries count as built-ins."""
        display = display or str(path)
        if builtin:
            self.builtin_files.add(display)
        for entry in read_registry_file(
            Path(path), display, models=self.models, optimizers=self.optimizers, schedulers=self.schedulers
        ):
            self.add(entry)
        self.files.append(display)

    # -- lookups ----------------------------------------------------------------------------------

    def get(self, kind: str, name: str) -> Any:
        table = self.table(kind)
        try:
            return table[name]
        except KeyError:
            raise UnknownNameError(kind, name, table) from None

    def model(self, name: str) -> ModelEntry:
        return self.get("model", name)

    def optimizer(self, name: str) -> OptimizerEntry:
        return self.get("optimizer", name)

    def dataset(self, name: str) -> DatasetEntry:
        return self.get("dataset", name)

    def scheduler(self, name: str) -> SchedulerEntry:
        return self.get("scheduler", name)

    def augmentation(self, name: str) -> AugmentationEntry:
        return self.get("augmentation", name)

    def recipe(self, name: str) -> RecipeEntry:
        return self.get("recipe", name)

    def recipe_options(self, name: str) -> dict[str, Any]:
        """The run options of recipe ``name``, its names (optimizer, scheduler, augmentations)
        checked against the registry: an unknown one is a UsageError naming the recipe's
        ``file:line`` with the closest name."""
        entry = self.recipe(name)
        options = dict(entry.options)
        wanted = [("optimizer", options.get("optimizer")), ("scheduler", options.get("sched"))]
        wanted += [("augmentation", spec.partition(":")[0].strip()) for spec in options.get("augment", ())]
        for kind, wanted_name in wanted:
            if wanted_name is not None and wanted_name not in self.table(kind):
                raise UsageError(
                    f"recipe '{name}' ({entry.source}): {UnknownNameError(kind, wanted_name, self.table(kind))}"
                )
        return options

    def find(self, name: str) -> list[Entry]:
        """Entries of any kind under ``name`` (a name may exist in several namespaces).

        An unknown name is reported as :meth:`get` reports it, for the kind of the closest
        name there is ("unknown model 'vgg61'; did you mean 'vgg16'? (zoo list models)")."""
        found = [self.table(kind)[name] for kind in KINDS if name in self.table(kind)]
        if not found:
            kind_of = {n: kind for kind in reversed(KINDS) for n in self.table(kind)}  # a model first
            close = difflib.get_close_matches(name, sorted(kind_of), n=1, cutoff=0.5)  # UnknownNameError's
            if close:
                kind = kind_of[close[0]]
                raise UnknownNameError(kind, name, self.table(kind))
            raise UnknownNameError(f"{', '.join(KINDS[:-1])} or {KINDS[-1]}", name, ())
        return found

    def entries(self, kind: str | None = None, pattern: str | None = None) -> Iterator[Entry]:
        """Entries by kind then natural name order, optionally filtered by a glob."""
        for k in [kind] if kind else list(KINDS):
            for name in sorted(self.table(k), key=_natural_key):
                if pattern is None or fnmatch.fnmatchcase(name, pattern):
                    yield self.table(k)[name]

    # -- using entries (these import torch) -------------------------------------------------------

    def build_model(
        self,
        name: str,
        num_classes: int,
        *,
        before_edits: Callable[[Any], None] | None = None,
        check: bool = True,
    ) -> Any:
        """Build a model: the base builder, then ``before_edits`` (base weights), then the edits,
        then a dry forward pass that proves the output is ``(batch, num_classes)``."""
        entry = self.model(name)
        base = self.model(entry.base) if entry.base else entry
        builder = resolve(base.builder, f"model '{base.name}' (plugin '{base.plugin}')")
        model = builder(entry.base_classes or num_classes)
        if before_edits is not None:
            before_edits(model)
        model, touched = apply_edits(model, entry.edits, num_classes, where=entry.source or name)
        if check:
            check_model(model, entry, num_classes, touched)
        return model

    def make_optimizer(self, name: str, params: Any, hparams: dict[str, Any] | None = None) -> Any:
        entry = self.optimizer(name)
        factory = resolve(entry.factory, f"optimizer '{name}' (plugin '{entry.plugin}')")
        return factory(params, **{**entry.defaults, **(hparams or {})})

    def optimizer_factory(self, name: str) -> Any:
        entry = self.optimizer(name)
        return resolve(entry.factory, f"optimizer '{name}' (plugin '{entry.plugin}')")

    def scheduler_factory(self, name: str) -> Any:
        """The factory of scheduler ``name`` (a preset's base's), imported now."""
        entry = self.scheduler(name)
        return resolve(entry.factory, f"scheduler '{name}' (plugin '{entry.plugin}')")

    def augmentation_factory(self, name: str) -> Any:
        """The factory of augmentation ``name``, imported now."""
        entry = self.augmentation(name)
        return resolve(entry.factory, f"augmentation '{name}' (plugin '{entry.plugin}')")

    def load_dataset(self, name: str, *, train: bool, root: str, download: bool = False) -> Any:
        entry = self.dataset(name)
        loader = resolve(entry.loader, f"dataset '{name}' (plugin '{entry.plugin}')")
        try:
            return loader(train=train, root=root, download=download)
        except ZooError:
            raise
        except (FileNotFoundError, NotADirectoryError, PermissionError) as exc:
            raise UsageError(f"dataset '{name}': {exc}") from exc
        except Exception as exc:
            raise UsageError(
                f"dataset '{name}' (plugin '{entry.plugin}') failed to load from {root}: {one_line(exc)}"
            ) from exc


class _Registrar:
    """The ``register`` callable handed to a plugin's hook: validates, then stages entries."""

    def __init__(self, plugin: str, staged: list[Entry]):
        self.plugin, self.staged = plugin, staged

    def where(self, kind: str, name: Any) -> str:
        return f"plugin '{self.plugin}' registering {kind} {name!r}"


class _ModelRegistrar(_Registrar):
    def __call__(
        self,
        name: str,
        builder: Any,
        *,
        summary: str = "",
        input_size: Any = (3, 32, 32),
        default_dataset: str | None = None,
    ) -> None:
        where = self.where("model", name)
        check_name(name, "model", where)
        if not (callable(builder) or isinstance(builder, str)):
            raise TypeError(f"{where}: builder must be callable or 'module:function', got {builder!r}")
        self.staged.append(
            ModelEntry(name, self.plugin, builder, summary, check_size(input_size, where), default_dataset)
        )


class _OptimizerRegistrar(_Registrar):
    def __call__(self, name: str, factory: Any, *, summary: str = "", defaults: dict | None = None) -> None:
        where = self.where("optimizer", name)
        check_name(name, "optimizer", where)
        if not (callable(factory) or isinstance(factory, str)):
            raise TypeError(f"{where}: factory must be callable or 'module:Class', got {factory!r}")
        self.staged.append(OptimizerEntry(name, self.plugin, factory, summary, dict(defaults or {})))


class _DatasetRegistrar(_Registrar):
    def __call__(
        self,
        name: str,
        loader: Any,
        *,
        summary: str = "",
        num_classes: int | None,
        input_size: Any,
        classes: Iterable[str] | None = None,
    ) -> None:
        where = self.where("dataset", name)
        check_name(name, "dataset", where)
        if num_classes is not None and (not isinstance(num_classes, int) or num_classes < 1):
            raise TypeError(f"{where}: num_classes must be a positive int or None, got {num_classes!r}")
        self.staged.append(
            DatasetEntry(
                name,
                self.plugin,
                loader,
                summary,
                num_classes,
                check_size(input_size, where),
                tuple(classes) if classes is not None else None,
            )
        )


class _SchedulerRegistrar(_Registrar):
    def __call__(
        self,
        name: str,
        factory: Any,
        *,
        summary: str = "",
        defaults: dict | None = None,
        interval: str = "epoch",
    ) -> None:
        where = self.where("scheduler", name)
        check_name(name, "scheduler", where)
        if not (callable(factory) or isinstance(factory, str)):
            raise TypeError(f"{where}: factory must be callable or 'module:Class', got {factory!r}")
        if defaults is not None and not isinstance(defaults, dict):
            raise TypeError(f"{where}: defaults must be a dict of hyper-parameters, got {defaults!r}")
        check_interval(interval, where)
        self.staged.append(SchedulerEntry(name, self.plugin, factory, summary, dict(defaults or {}), interval))


class _AugmentationRegistrar(_Registrar):
    def __call__(self, name: str, factory: Any, *, summary: str = "", defaults: dict | None = None) -> None:
        where = self.where("augmentation", name)
        check_name(name, "augmentation", where)
        if not (callable(factory) or isinstance(factory, str)):
            raise TypeError(f"{where}: factory must be callable or 'module:function', got {factory!r}")
        if defaults is not None and not isinstance(defaults, dict):
            raise TypeError(f"{where}: defaults must be a dict of hyper-parameters, got {defaults!r}")
        self.staged.append(AugmentationEntry(name, self.plugin, factory, summary, dict(defaults or {})))


BUILTIN_REGISTRY = Path(__file__).with_name("registry.yaml")

_registry: Registry | None = None
_registry_key: tuple[str, ...] | None = None


def registry_files(extra: Iterable[str] = ()) -> list[str]:
    """The user's registry files: ``ZOO_REGISTRY`` (os.pathsep-separated), then ``--registry``."""
    env = [p for p in os.environ.get("ZOO_REGISTRY", "").split(os.pathsep) if p]
    return env + [str(p) for p in extra]


def get_registry(extra_files: Iterable[str] = ()) -> Registry:
    """The process-wide registry: the built-in plugins and registry.yaml, the other plugins, then
    the user's files."""
    global _registry, _registry_key
    files = registry_files(extra_files)
    if _registry is None or _registry_key != tuple(files):
        registry = Registry()
        # the built-ins first, so that a third-party plugin can take none of their names
        registry.collect_plugins(get_plugin_host(), builtin=True)
        registry.load_file(BUILTIN_REGISTRY, "registry.yaml", builtin=True)
        registry.collect_plugins(get_plugin_host(), builtin=False)
        for path in files:
            registry.load_file(path)
        _registry, _registry_key = registry, tuple(files)
    return _registry


def reset_registry() -> None:
    global _registry, _registry_key
    _registry, _registry_key = None, None


def model_from_checkpoint(
    checkpoint: Mapping[str, Any], *, source: str = "checkpoint", registry: Registry | None = None
) -> Any:
    """Rebuild the checkpoint's model from the registry (base + edits) and load its weights
    (the averaged ones of an ``--ema`` run) strictly: no pickled class is needed, so the seed's
    method-1 trap cannot happen.

    A variant is rebuilt from the base model and the edits recorded in the checkpoint, so it
    still loads when the variant's registry file is absent or has changed since.
    """
    from zoo.checkpoint import load_state_dict_strict  # torch: not at import (zoo list stays instant)

    registry = registry if registry is not None else get_registry()
    spec = checkpoint["spec"]
    name, num_classes = spec["model"], int(spec["num_classes"])
    base = spec.get("base")
    recorded = spec.get("edits") or []
    entry = registry.models.get(name)
    same = entry is not None and [e.as_json() for e in entry.edits] == [dict(e) for e in recorded]
    if entry is not None and (same or not base):
        model = registry.build_model(name, num_classes, check=False)
    elif base and base in registry.models:
        base_entry = registry.models[base]
        builder = resolve(base_entry.builder, f"model '{base}' (plugin '{base_entry.plugin}')")
        edits = tuple(edit_from_json(e, f"{source} (edits of '{name}')") for e in recorded)
        model, _ = apply_edits(builder(spec.get("base_classes") or num_classes), edits, num_classes, where=source)
    else:
        missing = base if base else name
        plugin = spec.get("plugin")
        hint = f" (it came from plugin '{plugin}': install it, then zoo plugins)" if plugin else " (zoo plugins)"
        raise UsageError(f"{source} needs model '{missing}', which this zoo does not have{hint}")
    # --ema: the averaged weights are the run's result (validated each epoch, chosen for best.pt).
    averaged = checkpoint.get("ema")
    weights = averaged["model"] if isinstance(averaged, Mapping) and "model" in averaged else checkpoint["model"]
    load_state_dict_strict(model, weights, source=str(source), target=f"model '{name}'")
    return model
