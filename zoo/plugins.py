"""The plugin manager: built-ins and third-party plugins, loaded the same way and in isolation.

Every plugin, built-in or not, is an entry point of group ``zoo``. Each one is imported,
registered and checked on its own, so one broken plugin is reported (``zoo: warning: ...``)
and marked ``failed`` while everything else keeps working. pluggy's own
``load_setuptools_entrypoints`` has no such isolation (one bad plugin kills the CLI).

Two distributions with an entry point of one name is a warning too: the built-in keeps the
plugin name, else the one loaded first (built-ins load first, then the others by entry-point
name). Entries of one name from several plugins are zoo.registry's: a qualified name
``PLUGIN/NAME`` reaches each.

Environment:
  ``ZOO_LOAD_PLUGINS=a,b``  load only these third-party entry points (empty: none).
  ``ZOO_STRICT_PLUGINS=1``   any plugin failure, plugin name taken twice or ambiguous entry name is
                             fatal (exit 2), for plugin authors.
"""

from __future__ import annotations

import difflib
import importlib.metadata
import os
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import pluggy

from zoo import hookspecs
from zoo.errors import PluginError, UsageError, one_line

ENTRY_POINT_GROUP = "zoo"
DISTRIBUTION = "tudui-zoo"  # this project's own distribution: its entry points are the built-ins

__all__ = ["PluginInfo", "PluginHost", "get_plugin_host", "reset_plugin_host", "uninstall_targets"]


@dataclass
class PluginInfo:
    """What ``zoo plugins`` reports about one plugin."""

    name: str
    version: str | None = None
    distribution: str | None = None
    builtin: bool = False
    status: str = "ok"  # "ok" | "failed"
    error: str | None = None
    hooks: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "hooks": self.hooks,
            "status": self.status,
            "error": self.error,
            "builtin": self.builtin,
            "distribution": self.distribution,
        }


def _is_builtin(dist: Any) -> bool:
    name = getattr(dist, "name", None) or ""
    return name.lower().replace("_", "-") == DISTRIBUTION


class PluginHost:
    """A pluggy ``PluginManager`` plus what the zoo knows about each plugin it tried to load."""

    def __init__(self, strict: bool | None = None):
        self.pm = pluggy.PluginManager("zoo")
        self.pm.add_hookspecs(hookspecs)
        self.infos: dict[str, PluginInfo] = {}  # plugin name -> info, in load order
        self.warned: set[str] = set()  # warnings given: each is said once per process
        if strict is None:
            strict = os.environ.get("ZOO_STRICT_PLUGINS", "") not in ("", "0")
        self.strict = strict

    # -- loading ---------------------------------------------------------------------------

    def load_entry_points(self) -> None:
        """Import and register every entry point of group ``zoo`` (built-ins first)."""
        allow = os.environ.get("ZOO_LOAD_PLUGINS")
        allowed = None if allow is None else {n.strip() for n in allow.split(",") if n.strip()}
        eps = sorted(
            importlib.metadata.entry_points(group=ENTRY_POINT_GROUP),
            key=lambda ep: (not _is_builtin(ep.dist), ep.name),
        )
        seen: set[str] = set()
        for ep in eps:
            builtin = _is_builtin(ep.dist)
            if not builtin and allowed is not None and ep.name not in allowed:
                continue
            seen.add(ep.name)
            info = PluginInfo(
                name=ep.name,
                version=getattr(ep.dist, "version", None),
                distribution=getattr(ep.dist, "name", None),
                builtin=builtin,
            )
            if ep.name in self.infos:
                self.name_taken(self.infos[ep.name], info)
                continue
            try:
                module = ep.load()
            except Exception as exc:  # any import-time failure is the plugin's, not ours
                self.infos[ep.name] = info
                self.fail(info, one_line(exc))
                continue
            self.register(module, info)
        for name in sorted((allowed or set()) - seen):
            print(
                f"zoo: warning: ZOO_LOAD_PLUGINS names '{name}', but no installed distribution "
                f"has a 'zoo' entry point of that name (zoo plugins)",
                file=sys.stderr,
            )

    def name_taken(self, kept: PluginInfo, dropped: PluginInfo) -> None:
        """Two distributions with an entry point of one name: the first (a built-in, when one
        is) keeps it, the other is not loaded; a warning names both (fatal when strict)."""

        def dist(info: PluginInfo) -> str:
            return f"distribution '{info.distribution}'" + (" (built-in)" if info.builtin else "")

        message = f"plugin name '{kept.name}' is taken twice: by {dist(kept)} and by {dist(dropped)}"
        if self.strict:
            raise PluginError(f"{message} (ZOO_STRICT_PLUGINS is set)")
        why = "the built-in one" if kept.builtin else f"the one from {dist(kept)} (loaded first)"
        self.warn_once(f"{message}; keeping {why}, {dist(dropped)} is not loaded")

    def warn_once(self, message: str) -> None:
        """``zoo: warning: message`` on stderr, the first time this process says it."""
        if message not in self.warned:
            self.warned.add(message)
            print(f"zoo: warning: {message}", file=sys.stderr)

    def register(self, plugin: Any, info: PluginInfo | str) -> bool:
        """Register one plugin object; returns False (and reports) when it is invalid."""
        if isinstance(info, str):
            info = PluginInfo(name=info)
        self.infos[info.name] = info
        try:
            self.pm.register(plugin, name=info.name)
        except Exception as exc:  # pluggy.PluginValidationError: bad hookimpl arguments
            self.fail(info, one_line(exc))
            return False
        unknown = self._unknown_hooks(plugin)
        if unknown:
            known = sorted(name for name, caller in vars(self.pm.hook).items() if caller.has_spec())
            close = difflib.get_close_matches(unknown[0], known, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else f" (known hooks: {', '.join(known)})"
            self.fail(info, f"unknown hook '{unknown[0]}'{hint}")
            return False
        info.hooks = sorted(caller.name for caller in self.pm.get_hookcallers(plugin) or [])
        return True

    def unregister(self, name: str) -> None:
        """Remove a plugin added with :meth:`register` (e.g. the runner's console for one run):
        its hooks are no longer called and ``zoo plugins`` no longer lists it."""
        plugin = self.pm.get_plugin(name)
        if plugin is not None:
            self.pm.unregister(plugin, name=name)
        self.infos.pop(name, None)

    def _unknown_hooks(self, plugin: Any) -> list[str]:
        # pluggy's check_pending() raises for the first unknown hook of *any* plugin; running it
        # right after each registration pins the error on the plugin that caused it.
        try:
            self.pm.check_pending()
        except pluggy.PluginValidationError:
            return sorted(caller.name for caller in self.pm.get_hookcallers(plugin) or [] if not caller.has_spec()) or [
                "?"
            ]
        return []

    def fail(self, info: PluginInfo, error: str) -> None:
        """Mark a plugin failed, unregister it, and warn once (or stop, in strict mode)."""
        info.status, info.error = "failed", error
        self.infos.setdefault(info.name, info)
        plugin = self.pm.get_plugin(info.name)
        if plugin is not None and self.infos[info.name] is info:  # never another plugin of that name
            self.pm.unregister(plugin)
        message = f"plugin '{info.name}' failed to load: {error}"
        if self.strict:
            raise PluginError(message + " (ZOO_STRICT_PLUGINS is set)")
        print(f"zoo: warning: {message}", file=sys.stderr)

    # -- calling hooks -----------------------------------------------------------------------

    def loaded(self) -> list[tuple[str, Any]]:
        """(name, plugin object) of every working plugin, in load order."""
        out = []
        for name, info in self.infos.items():
            plugin = self.pm.get_plugin(name)
            if info.status == "ok" and plugin is not None:
                out.append((name, plugin))
        return out

    def call_one(self, plugin_name: str, hook: str, **kwargs: Any) -> list[Any]:
        """Call ``hook`` on one plugin only (through pluggy, so wrappers and specs apply)."""
        others = [p for name, p in self.loaded() if name != plugin_name]
        caller = self.pm.subset_hook_caller(hook, remove_plugins=others)
        return caller(**kwargs)

    def emit(self, hook: str, **kwargs: Any) -> None:
        """Tell every observer about a run event; a failing observer is reported, not fatal."""
        for name, _plugin in self.loaded():
            try:
                self.call_one(name, hook, **kwargs)
            except Exception as exc:
                info = self.infos[name]
                if self.strict:
                    raise PluginError(f"plugin '{name}' failed in {hook}: {one_line(exc)}") from exc
                print(f"zoo: warning: plugin '{name}' failed in {hook}: {one_line(exc)}", file=sys.stderr)
                info.status, info.error = "failed", f"{hook}: {one_line(exc)}"
                self.pm.unregister(self.pm.get_plugin(name))

    def plugin_infos(self, include_builtin: bool = False) -> list[PluginInfo]:
        return [i for i in self.infos.values() if include_builtin or not i.builtin]

    def plugin_records(self) -> list[dict[str, Any]]:
        """Every plugin, built-ins included, as a checkpoint's provenance records it."""
        return [
            {
                "name": i.name,
                "distribution": i.distribution,
                "version": i.version,
                "builtin": i.builtin,
                "status": i.status,
            }
            for i in self.plugin_infos(include_builtin=True)
        ]


_host: PluginHost | None = None


def get_plugin_host(extra: Iterable[tuple[str, Any]] = ()) -> PluginHost:
    """The process-wide plugin host, loading entry points on first use."""
    global _host
    if _host is None:
        host = PluginHost()
        host.load_entry_points()
        for name, plugin in extra:
            host.register(plugin, name)
        _host = host
    return _host


def reset_plugin_host() -> None:
    """Forget the loaded plugins (tests, and long-lived processes that installed new ones)."""
    global _host
    _host = None


# a distribution's name, maybe with extras or a version specifier after it ("acme>=1.0")
_REQUIREMENT = re.compile(r"^([A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)\s*(?:[\[<>=!~;@].*)?$")


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()  # PEP 503: zoo_acme and Zoo-Acme are one distribution


def _installed(name: str) -> bool:
    try:
        importlib.metadata.distribution(name)
    except (importlib.metadata.PackageNotFoundError, ValueError):
        return False
    return True


def uninstall_targets(names: Iterable[str]) -> list[str]:
    """What ``zoo uninstall NAME...`` passes to pip: each NAME is a plugin's name as ``zoo
    plugins`` shows it (its distribution is uninstalled) or a distribution's own name.

    Found from the installed entry points, loading no plugin (a broken one can be uninstalled).
    A built-in's plugin name is refused (its distribution is the zoo itself), so is a name that
    is a plugin of one distribution and the name of another, and so is a name nothing installed
    answers to (pip would only say it skipped it, and exit 0).
    """
    providers: dict[str, list[Any]] = {}  # plugin name -> the distributions with that entry point
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if ep.dist is not None:
            providers.setdefault(ep.name, []).append(ep.dist)
    targets: dict[str, str] = {}  # normalized name -> what pip is given: each distribution once
    missing: list[str] = []
    for arg in names:
        match = _REQUIREMENT.match(arg)
        name = match.group(1) if match else arg
        dists = [d.name for d in providers.get(name, []) if not _is_builtin(d)]
        if providers.get(name) and not dists:
            raise UsageError(
                f"'{name}' is a built-in plugin: it is part of the zoo's own distribution {DISTRIBUTION}, "
                f"which zoo uninstall does not remove"
            )
        others = [d for d in dists if _normalized(d) != _normalized(name)]
        if others and match and _installed(name):
            raise UsageError(
                f"'{name}' is both plugin '{name}' (distribution {', '.join(others)}) and the distribution "
                f"'{name}': name the distribution to uninstall"
            )
        if dists:
            for dist in dists:
                targets.setdefault(_normalized(dist), dist)
        elif match and _installed(name):
            targets.setdefault(_normalized(name), arg)
        else:
            missing.append(arg)
    if missing:
        plugins = sorted(
            f"{plugin} (distribution {d.name})" for plugin, ds in providers.items() for d in ds if not _is_builtin(d)
        )
        have = f"the installed plugins are {', '.join(plugins)}" if plugins else "no third-party plugin is installed"
        raise UsageError(
            f"nothing installed is called {', '.join(repr(m) for m in missing)}: zoo uninstall takes a plugin's "
            f"name (zoo plugins) or a distribution's; {have}"
        )
    return list(targets.values())
