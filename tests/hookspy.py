"""A pytest plugin for test_plugins.py's meta-test: which zoo hooks each test made a plugin of its
own (not a built-in) receive. Loaded with ``-p hookspy``; at the end of the session it writes
``{test name: [hook, ...]}`` as JSON to the file ``$ZOO_TESTS_HOOKSPY``.

Every :class:`zoo.plugins.PluginHost` gets pluggy's hook-call monitoring, which sees each call
with the implementations it is about to run.
"""

from __future__ import annotations

import json
import os
from typing import Any

import pytest

from zoo.plugins import PluginHost

REPORT_ENV = "ZOO_TESTS_HOOKSPY"
_calls: dict[str, set[str]] = {}
_current: list[str] = []  # the test running now, if any


def _monitor(host: PluginHost) -> None:
    def before(hook_name: str, hook_impls: list[Any], kwargs: dict[str, Any]) -> None:
        for impl in hook_impls:
            info = host.infos.get(impl.plugin_name)
            if _current and (info is None or not info.builtin):
                _calls.setdefault(_current[0], set()).add(hook_name)

    host.pm.add_hookcall_monitoring(before, lambda *args: None)


def pytest_configure(config: pytest.Config) -> None:
    original = PluginHost.__init__

    def init(self: PluginHost, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        _monitor(self)

    PluginHost.__init__ = init  # type: ignore[method-assign]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item):
    _current.append(item.name)
    try:
        return (yield)
    finally:
        _current.clear()


def pytest_sessionfinish(session: pytest.Session) -> None:
    path = os.environ.get(REPORT_ENV)
    if path:
        with open(path, "w") as f:
            json.dump({name: sorted(hooks) for name, hooks in _calls.items()}, f)
