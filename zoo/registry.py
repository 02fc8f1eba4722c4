"""The registry: models, optimizers, datasets, schedulers and augmentations by name, from
plugins and registry.yaml, and recipes (named bundles of run options) from registry.yaml.

Registering builds nothing: an entry holds a builder (a callable or an import path
``"package.module:function"``) that runs only when a model is asked for. Models, optimizers,
datasets, schedulers and augmentations are separate namespaces.

Names (docs/plugins.md, "Names and clashes"): every entry is reachable by its qualified name
``PLUGIN/NAME`` (a registry file's entries: ``FILE/NAME``, the file's name, ``registry.yaml``
for the built-in one). A bare NAME that several sources register goes to one of them by rank:
the built-ins (plugins and registry.yaml) first, then the user's registry files, then the
third-party plugins; the others are reached qualified only ("shadowed"). Two third-party
plugins of the same rank leave the bare name to neither: using it is an AmbiguousNameError
naming both qualified names (ZOO_STRICT_PLUGINS=1: fatal when the registry is built). A
registry file that takes a name a built-in or another file holds is an error naming both.
"""

from __future__ import annotations

import difflib
import fnmatch
import inspect
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
    check_min_size,
    check_name,
    check_size,
    check_weights,
    resolve,
    too_small,
)
from zoo.errors import AmbiguousNameError, DuplicateNameError, UnknownNameError, UsageError, ZooError, one_line
from zoo.plugins import PluginHost, get_plugin_host
from zoo.registry_file import read_registry_file

__all__ = [
    "Registry",
    "get_registry",
    "reset_registry",
    "registry_files",
    "model_from_checkpoint",
    "call_builder",
    "build_base",
    "loaded_registry",
    "qualifier",
    "BUILTIN_REGISTRY",
]


def _natural_key(name: str) -> list[Any]:
    # vgg2 before vgg16, as timm's list_models sorts
    return [int(tok) if tok.isdigit() else tok for tok in re.split(r"(\d+)", name)]


def qualifier(entry: Entry) -> str:
    """What an entry's qualified name starts with: its plugin's name (the entry point's, as
    ``zoo plugins`` shows it), or for a registry file's entry the file's name."""
    return os.path.basename(entry.plugin) if getattr(entry, "source", None) else entry.plugin


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
        # kind -> "PLUGIN/NAME" -> entry: every entry, those that hold their bare name or not
        self.qualified: dict[str, dict[str, Entry]] = {kind: {} for kind in KINDS}
        # kind -> bare name -> the third-party entries that share it (no one holds it)
        self.ambiguous: dict[str, dict[str, list[Entry]]] = {kind: {} for kind in KINDS}

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
        """Add one entry (a registry file's): a name a built-in or another file holds in its
        namespace is an error naming both; one that only third-party plugins hold is the file's."""
        self._place(entry)

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
        """A plugin registered one name twice, or two built-in plugins did (bugs, not designed
        clashes): say so once and carry on with ``kept`` (ZOO_STRICT_PLUGINS: stop, exit 2)."""
        same = self.qualified_name(kept) == self.qualified_name(ignored)
        if same:
            message = f"{kept.kind} '{kept.name}' is registered twice by {self.origin(kept)}"
        else:
            message = self._twice(kept, ignored)
        if self._strict():
            raise DuplicateNameError(f"{message} (ZOO_STRICT_PLUGINS is set)")
        if same:
            warning = f"{message}; keeping the first"
        else:
            warning = f"{message}; keeping {self.origin(kept)}'s, the other is {self.qualified_name(ignored)}"
        if self.host is not None:
            self.host.warn_once(warning)
        else:
            print(f"zoo: warning: {warning}", file=sys.stderr)

    def _strict(self) -> bool:
        return self.host is not None and self.host.strict

    def _rank(self, entry: Entry) -> int:
        """Who keeps a bare name several sources register, lowest first: 0 the built-ins (plugins
        and registry.yaml), 1 the user's registry files, 2 the third-party plugins."""
        if self.is_builtin(entry):
            return 0
        return 1 if getattr(entry, "source", None) else 2

    def _place(self, entry: Entry) -> None:
        """File ``entry`` under its qualified name, and under its bare name when it ranks first
        among those registering it (:meth:`_rank`); see the module's docstring."""
        kind, name, qualified = entry.kind, entry.name, self.qualified_name(entry)
        everyone, table = self.qualified[kind], self.table(kind)
        holder = table.get(name)
        others = [holder] if holder is not None else self.ambiguous[kind].get(name, [])
        rank = self._rank(entry)
        best = min((self._rank(o) for o in others), default=3)
        if getattr(entry, "source", None) and best <= 1:  # a file redefining a built-in's or a file's
            raise DuplicateNameError(f"{self._twice(others[0], entry)}; uninstall or rename one of them")
        if qualified in everyone:  # one plugin registering a name twice
            self._clash(everyone[qualified], entry)
            return
        everyone[qualified] = entry
        if rank < best:
            table[name] = entry
            self.ambiguous[kind].pop(name, None)
        elif rank == best == 2:  # two third-party plugins: the bare name is neither's
            if self._strict():
                ambiguity = self._ambiguity(kind, name, [*others, entry])
                raise DuplicateNameError(f"{self._twice(others[0], entry)} (ZOO_STRICT_PLUGINS is set): {ambiguity}")
            table.pop(name, None)
            self.ambiguous[kind][name] = [*others, entry]
        elif rank == best:  # two built-in plugins: the zoo's own bug
            self._clash(others[0], entry)

    def _add_registered(self, entry: Entry) -> None:
        """A plugin's entry (see :meth:`_place`)."""
        self._place(entry)

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
        models, optimizers, schedulers = (_Names(self, kind) for kind in ("model", "optimizer", "scheduler"))
        for entry in read_registry_file(
            Path(path), display, models=models, optimizers=optimizers, schedulers=schedulers
        ):
            self.add(entry)
        self.files.append(display)

    # -- lookups ----------------------------------------------------------------------------------

    def qualified_name(self, entry: Entry) -> str:
        """``PLUGIN/NAME``: the name that reaches ``entry`` whoever else registers its NAME."""
        return f"{qualifier(entry)}/{entry.name}"

    def shown_name(self, entry: Entry) -> str:
        """The name ``zoo list`` shows ``entry`` by: NAME when that reaches it, else ``PLUGIN/NAME``."""
        return entry.name if self.table(entry.kind).get(entry.name) is entry else self.qualified_name(entry)

    def lookup(self, kind: str, name: str) -> Any:
        """The entry a bare or qualified name reaches, or None (unknown, or ambiguous)."""
        entry = self.table(kind).get(name)
        if entry is None and "/" in name:
            entry = self.qualified[kind].get(name)
        return entry

    def _ambiguity(self, kind: str, name: str, entries: list[Entry]) -> str:
        plugins = " and ".join(f"'{e.plugin}'" for e in entries)
        names = " or ".join(self.qualified_name(e) for e in entries)
        return (
            f"{kind} '{name}' is ambiguous: plugins {plugins} {'both' if len(entries) == 2 else 'all'} "
            f"register it; name one of them: {names}"
        )

    def _candidates(self, kind: str, name: str) -> list[str]:
        """What an unknown ``name`` may have meant: every qualified name for a qualified one, else
        the bare names and the qualified names of the entries no bare name reaches."""
        everyone = self.qualified[kind]
        if "/" in name:
            return list(everyone)
        table = self.table(kind)
        return [*table, *(q for q, e in everyone.items() if table.get(e.name) is not e)]

    def get(self, kind: str, name: str) -> Any:
        """The entry ``name`` (bare or ``PLUGIN/NAME``) reaches; an ambiguous bare name is an
        AmbiguousNameError naming each qualified name, an unknown one an UnknownNameError with
        the closest name (qualified names too)."""
        entry = self.lookup(kind, name)
        if entry is not None:
            return entry
        contenders = self.ambiguous[kind].get(name)
        if contenders:
            raise AmbiguousNameError(self._ambiguity(kind, name, contenders))
        raise UnknownNameError(kind, name, self._candidates(kind, name))

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
            if wanted_name is not None and self.lookup(kind, wanted_name) is None:
                try:
                    self.get(kind, wanted_name)
                except UsageError as exc:
                    raise UsageError(f"recipe '{name}' ({entry.source}): {exc}") from None
        return options

    def find(self, name: str) -> list[Entry]:
        """Entries of any kind under ``name`` (a name may exist in several namespaces).

        An unknown name is reported as :meth:`get` reports it, for the kind of the closest
        name there is ("unknown model 'vgg-16'; did you mean 'vgg16'? (zoo list models)")."""
        found = [entry for entry in (self.lookup(kind, name) for kind in KINDS) if entry is not None]
        if not found:
            for kind in KINDS:
                if name in self.ambiguous[kind]:
                    raise AmbiguousNameError(self._ambiguity(kind, name, self.ambiguous[kind][name]))
            kind_of = {n: kind for kind in reversed(KINDS) for n in self._candidates(kind, name)}  # a model first
            close = difflib.get_close_matches(name, sorted(kind_of), n=1, cutoff=0.5)  # UnknownNameError's
            if close:
                kind = kind_of[close[0]]
                raise UnknownNameError(kind, name, self._candidates(kind, name))
            raise UnknownNameError(f"{', '.join(KINDS[:-1])} or {KINDS[-1]}", name, ())
        return found

    def entries(self, kind: str | None = None, pattern: str | None = None) -> Iterator[Entry]:
        """Every entry (those shadowed or ambiguous too: :meth:`shown_name` says how to reach
        each), by kind then natural name order, the holder of a bare name first among those that
        share it. ``pattern``: a glob over the qualified names when it holds a ``/``
        (``'timm/*'``), else over the names."""
        qualified = pattern is not None and "/" in pattern
        for k in [kind] if kind else list(KINDS):
            table = self.table(k)
            everyone = dict(self.qualified[k])
            everyone.update((self.qualified_name(e), e) for e in table.values())  # an entry set in table wins
            chosen = [
                (q, e)
                for q, e in everyone.items()
                if pattern is None or fnmatch.fnmatchcase(q if qualified else e.name, pattern)
            ]
            chosen.sort(key=lambda qe: (_natural_key(qe[1].name), table.get(qe[1].name) is not qe[1], qe[0]))
            for _q, entry in chosen:
                yield entry

    def names(self, kind: str, pattern: str | None = None) -> list[str]:
        """The names :meth:`entries` lists, each as :meth:`shown_name` gives it (the Python API's
        ``zoo.list_models``)."""
        return [self.shown_name(e) for e in self.entries(kind, pattern)]

    # -- using entries (these import torch) -------------------------------------------------------

    def build_model(
        self,
        name: str,
        num_classes: int,
        *,
        before_edits: Callable[[Any], None] | None = None,
        check: bool = True,
        input_size: tuple[int, ...] | None = None,
        weights: str | None = None,
    ) -> Any:
        """Build a model: the base builder, then ``before_edits`` (base weights), then the edits,
        then a dry forward pass on ``input_size`` (default: the entry's) that proves the output
        is ``(batch, num_classes)``. ``weights``: the run's ``--weights`` (default: what
        ``before_edits`` loads), which a builder taking ``imagenet=`` is told of."""
        entry = self.model(name)
        base = self.model(entry.base) if entry.base else entry
        builder = resolve(base.builder, f"model '{base.name}' (plugin '{base.plugin}')")
        size = tuple(input_size) if input_size is not None else entry.input_size
        imagenet = (weights if weights is not None else getattr(before_edits, "weights", None)) == "imagenet"
        model = build_base(builder, base, entry.base_classes or num_classes, size, imagenet=imagenet,
                           shown=self.shown_name(base))  # fmt: skip
        if before_edits is not None:
            before_edits(model)
        model, touched = apply_edits(model, entry.edits, num_classes, where=entry.source or name)
        if check:
            check_model(model, entry, num_classes, touched, input_size=size)
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


class _Names(Mapping[str, Any]):
    """One kind's entries by bare or qualified name: what a registry file's ``base:`` may say."""

    def __init__(self, registry: Registry, kind: str):
        self.registry, self.kind = registry, kind

    def __getitem__(self, name: str) -> Any:
        entry = self.registry.lookup(self.kind, name)
        if entry is None:
            raise KeyError(name)
        return entry

    def __iter__(self) -> Iterator[str]:
        return iter(self.registry._candidates(self.kind, ""))

    def __len__(self) -> int:
        return len(self.registry._candidates(self.kind, ""))


def _takes(builder: Any, parameter: str) -> bool:
    try:
        return parameter in inspect.signature(builder).parameters
    except (TypeError, ValueError):  # a builtin or a class without an inspectable signature
        return False


def call_builder(builder: Any, num_classes: int, input_size: tuple[int, ...], *, imagenet: bool = False) -> Any:
    """``builder(num_classes)``; with ``input_size=`` too when its signature takes it (a model
    whose constructor depends on the input size, such as torchvision's ViTs), and ``imagenet=``
    when it takes that (a model built differently for its ImageNet weights, as GoogLeNet)."""
    kwargs: dict[str, Any] = {}
    if _takes(builder, "input_size"):
        kwargs["input_size"] = tuple(input_size)
    if _takes(builder, "imagenet"):
        kwargs["imagenet"] = imagenet
    return builder(num_classes, **kwargs)


def build_base(
    builder: Any, entry: ModelEntry, num_classes: int, size: tuple[int, ...], *, imagenet: bool = False,
    shown: str | None = None,
) -> Any:  # fmt: skip
    """``call_builder``; a builder that fails at a size other than the model's own (a size its
    constructor rejects) is a UsageError naming the model and the size. At its own size, a
    failure is the plugin's bug and stays what it is."""
    try:
        return call_builder(builder, num_classes, size, imagenet=imagenet)
    except ZooError:
        raise
    except Exception as exc:
        own = tuple(entry.input_size)
        if tuple(size) == own or not _takes(builder, "input_size"):
            raise
        raise UsageError(
            f"model '{shown or entry.name}' cannot be built for input size {size[-2]}x{size[-1]}: {one_line(exc)}; "
            f"pass another --input-size, or leave it out to train at its own {own[-2]}x{own[-1]}"
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
        min_input_size: Any = None,
        params: int | None = None,
        weights: Any = None,
    ) -> None:
        where = self.where("model", name)
        check_name(name, "model", where)
        if not (callable(builder) or isinstance(builder, str)):
            raise TypeError(f"{where}: builder must be callable or 'module:function', got {builder!r}")
        if params is not None and (not isinstance(params, int) or isinstance(params, bool) or params < 0):
            raise TypeError(f"{where}: params must be a parameter count (an int), got {params!r}")
        size = check_size(input_size, where)
        minimum = check_min_size(min_input_size, where)
        entry = ModelEntry(name, self.plugin, builder, summary, size, default_dataset, min_input_size=minimum,
                           params=params, weights=check_weights(weights, where))  # fmt: skip
        problem = too_small(entry, size)
        if problem:
            raise TypeError(f"{where}: input_size {size} is below its min_input_size: {problem}")
        self.staged.append(entry)


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


def loaded_registry() -> Registry | None:
    """The registry :func:`get_registry` last built in this process, or None; builds nothing."""
    return _registry


def reset_registry() -> None:
    global _registry, _registry_key
    _registry, _registry_key = None, None


def _recorded_model(registry: Registry, name: str, plugin: str | None) -> ModelEntry | None:
    """The model a checkpoint names: by its qualified name; a bare name (checkpoints written
    before qualified names) as ``plugin``, the plugin that made it, registers it, else as the
    registry resolves the bare name now."""
    if "/" not in name and plugin:
        entry = registry.qualified["model"].get(f"{plugin}/{name}")
        if entry is not None:
            return entry
    return registry.lookup("model", name)


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
    size = tuple(spec["input_size"]) if spec.get("input_size") else None  # what it trained at
    entry = _recorded_model(registry, name, spec.get("plugin"))
    same = entry is not None and [e.as_json() for e in entry.edits] == [dict(e) for e in recorded]
    base_entry = _recorded_model(registry, base, spec.get("plugin")) if base else None
    if entry is not None and (same or not base):
        model = registry.build_model(
            registry.qualified_name(entry), num_classes, check=False, input_size=size, weights=spec.get("weights")
        )
    elif base_entry is not None:
        builder = resolve(base_entry.builder, f"model '{base}' (plugin '{base_entry.plugin}')")
        edits = tuple(edit_from_json(e, f"{source} (edits of '{name}')") for e in recorded)
        built = build_base(builder, base_entry, spec.get("base_classes") or num_classes,
                           size or base_entry.input_size, imagenet=spec.get("weights") == "imagenet")  # fmt: skip
        model, _ = apply_edits(built, edits, num_classes, where=source)
    else:
        missing = base if base else name
        plugin = spec.get("plugin")
        hint = f" (it came from plugin '{plugin}': install it, then zoo plugins)" if plugin else " (zoo plugins)"
        raise UsageError(f"{source} needs model '{missing}', which this zoo does not have{hint}")
    # --ema: the averaged weights are the run's result (validated each epoch, chosen for best.pt).
    averaged = checkpoint.get("ema")
    weights = averaged["model"] if isinstance(averaged, Mapping) and "model" in averaged else checkpoint["model"]
    shown = registry.shown_name(entry) if entry is not None else name  # as the user knows it
    load_state_dict_strict(model, weights, source=str(source), target=f"model '{shown}'")
    return model
