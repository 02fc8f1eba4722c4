"""Shared fixtures: the CLI in a real subprocess, and plugin distributions written to disk."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

# Before anything imports torch (OpenMP reads it once, at load), here and in every process the
# tests start (they inherit it): a thread waiting at the end of a parallel region sleeps instead
# of spinning. Spinning pays off on an idle machine; on two busy cores, with the tests' tiny
# tensors, the spinning thread takes the core its partner needs: steps 5-10x slower. The
# results are the same either way (the same threads do the same sums).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest

from zoo.plugins import reset_plugin_host
from zoo.registry import reset_registry

ROOT = Path(__file__).resolve().parents[1]
_ZOO_VARS = ("ZOO_REGISTRY", "ZOO_LOAD_PLUGINS", "ZOO_STRICT_PLUGINS", "ZOO_DEBUG", "ZOO_DATA")


def pytest_configure(config: pytest.Config) -> None:
    # The tests send SIGINT on purpose, here and to the zoo processes they start. A suite run in
    # the background (cmd &, nohup) inherits SIGINT ignored, which the runner and every child
    # would honour; give it Python's own handler, which children then get too.
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(scope="session", autouse=True)
def _no_zoo_environment(tmp_path_factory):
    """The developer's ZOO_* variables are gone for the whole session, module-scoped fixtures
    included (they run before ``_isolated_zoo``); ZOO_TESTS_* (the suite's own switches) stay."""
    with pytest.MonkeyPatch.context() as patch:
        for name in [n for n in os.environ if n.startswith("ZOO_") and not n.startswith("ZOO_TESTS_")]:
            patch.delenv(name)
        patch.setenv("ZOO_DATA", str(tmp_path_factory.mktemp("zoo-data")))
        yield


@pytest.fixture(autouse=True)
def _isolated_zoo(monkeypatch, tmp_path):
    """Every test starts with no zoo environment and fresh plugin/registry caches."""
    for name in _ZOO_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ZOO_DATA", str(tmp_path / "zoo-data"))
    reset_plugin_host()
    reset_registry()
    yield
    reset_plugin_host()
    reset_registry()


@pytest.fixture(scope="session")
def builtin_registry():
    """The registry of the built-in plugins and registry.yaml alone, built once, whatever the
    developer's environment (ZOO_REGISTRY, ZOO_LOAD_PLUGINS, installed third-party plugins).

    Tests that go over every entry take it as a fixture: a registry built at import time would
    make the collected tests depend on that environment."""
    from zoo.registry import get_registry

    with pytest.MonkeyPatch.context() as patch:
        for name in [n for n in os.environ if n.startswith("ZOO_")]:
            patch.delenv(name)
        patch.setenv("ZOO_LOAD_PLUGINS", "")  # built-ins only
        reset_plugin_host()
        reset_registry()
        try:
            return get_registry()
        finally:
            reset_plugin_host()
            reset_registry()


class ZooCLI:
    """Runs ``python -m zoo`` in a subprocess, with extra entries on PYTHONPATH."""

    def __init__(self, cwd: Path):
        self.cwd = cwd
        self.paths: list[str] = []
        self.env: dict[str, str] = {}

    def environment(self, env: dict[str, str] | None = None) -> dict[str, str]:
        """The environment a call runs in: ours without ZOO_* variables, plus ``self.env`` and ``env``."""
        full_env = {k: v for k, v in os.environ.items() if k not in _ZOO_VARS}
        full_env["ZOO_DATA"] = str(self.cwd / "zoo-data")
        full_env["PYTHONPATH"] = os.pathsep.join(self.paths + [full_env.get("PYTHONPATH", "")]).strip(os.pathsep)
        full_env.update(self.env)
        full_env.update(env or {})
        return full_env

    def __call__(
        self, *args: str, env: dict[str, str] | None = None, timeout: float = 300
    ) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "zoo", *args],
            cwd=self.cwd,
            env=self.environment(env),
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )


@pytest.fixture
def zoo_cli(tmp_path) -> ZooCLI:
    work = tmp_path / "work"
    work.mkdir()
    return ZooCLI(work)


@pytest.fixture(scope="session")
def fork_server():
    """Runs ``zoo`` calls as forks of a process that has imported torch (tests/forkcli.py), or as
    plain ``python -m zoo`` processes under ``ZOO_TESTS_NO_FORK=1``."""
    from forkcli import ForkServer, ProcessServer, no_fork

    server = ProcessServer() if no_fork() else ForkServer()
    yield server
    server.close()


@pytest.fixture
def zoo_fork(tmp_path, fork_server) -> ZooCLI:
    """Like ``zoo_cli``, but each call is a child forked from a process that has already
    imported torch (tests/forkcli.py): a fresh process per call in ~0.3 s instead of ~3 s."""
    from forkcli import ForkedZooCLI

    work = tmp_path / "work"
    work.mkdir()
    return ForkedZooCLI(work, fork_server)


def assert_user_error(result: subprocess.CompletedProcess, code: int = 2, *needles: str) -> None:
    """One ``zoo: error:`` line (``zoo: stopped:`` for 130 and 143: a signal is not an error),
    the given exit code, no traceback."""
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    prefix = "zoo: stopped:" if code in (130, 143) else "zoo: error:"
    assert not (code in (130, 143) and "zoo: error:" in result.stderr), result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith(prefix)]
    assert len(errors) == 1, result.stderr
    for needle in needles:
        assert needle in errors[0], (needle, errors[0])


@pytest.fixture
def plugin_dist(tmp_path) -> Iterator[Callable[..., Path]]:
    """Write an installed distribution (a module + its .dist-info with a ``zoo`` entry point)
    into a site directory; returns that directory, to go on sys.path / PYTHONPATH."""
    site = tmp_path / "site"
    site.mkdir(exist_ok=True)
    modules: list[str] = []

    def make(entry_name: str, source: str, *, module: str | None = None, version: str = "1.0") -> Path:
        # a module name unique to this test, so no earlier test's import is reused
        module = module or f"zoo_test_{entry_name.replace('-', '_')}_{abs(hash(str(tmp_path))) % 10**8}"
        modules.append(module)
        (site / f"{module}.py").write_text(textwrap.dedent(source))
        dist = f"zoo_test_dist_{entry_name.replace('-', '_')}"
        info = site / f"{dist}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
        (info / "entry_points.txt").write_text(f"[zoo]\n{entry_name} = {module}\n")
        return site

    yield make
    for module in modules:
        sys.modules.pop(module, None)
