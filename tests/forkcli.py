"""The zoo command line in a fresh process per call, without paying for ``import torch`` each time.

A plain ``python -m zoo`` spends ~3 s importing torch before it can refuse a bad argument; a
catalogue of dozens of bad inputs would spend minutes on imports. A fork server does the imports
once: it is a ``python`` process that imports torch and the zoo, then forks one child per call.
The child takes the call's working directory, environment, ``sys.path`` additions and standard
streams (files, at the descriptor level, so C-level output and warnings are caught too), runs
``zoo.cli.main(args)`` exactly as the ``zoo`` console script does, and exits with its return
value. Each call is its own process: its exit code, crashes, files and any code a crafted file
manages to run stay in it, and nothing carries over from one call to the next.

What it does not cover is what happens at import time (the server has done it) and at exit
(the child leaves with ``os._exit``); tests that need the interpreter start-up itself use
``conftest.ZooCLI`` (``python -m zoo``), and ``ZOO_TESTS_NO_FORK=1`` runs every test that would
use the server through :class:`ProcessServer` instead: the same calls, each a plain
``python -m zoo`` process (slower, nothing shared).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from conftest import ZooCLI

SERVER = r"""
import json, os, sys, traceback
import importlib

import numpy, PIL.Image, yaml                       # the expensive imports, done once
import torch, torch._dynamo, torchvision            # (constructing an optimizer imports dynamo)
import zoo.cli, zoo.runner, zoo.predict, zoo.export, zoo.checkpoint, zoo.data, zoo.registry

for line in sys.stdin:
    call = json.loads(line)
    sys.stdout.flush(); sys.stderr.flush()          # nothing buffered may reach the child
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
            os.dup2(os.open(call["stdout"], os.O_WRONLY), 1)
            os.dup2(1 if call["stderr"] == call["stdout"] else os.open(call["stderr"], os.O_WRONLY), 2)
            os.chdir(call["cwd"])
            os.environ.clear()
            os.environ.update(call["env"])
            sys.path[:0] = call["path"]
            importlib.invalidate_caches()
            sys.argv = ["zoo", *call["args"]]
            code = zoo.cli.main(call["args"])
        except SystemExit as exc:                   # argparse: usage errors, --help
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            if isinstance(exc.code, str):
                print(exc.code, file=sys.stderr)
        except BaseException:
            traceback.print_exc()                   # what the interpreter would have printed
        finally:
            sys.stdout.flush(); sys.stderr.flush()
            os._exit(code)
    print(json.dumps({"pid": pid}), flush=True)
    _, status = os.waitpid(pid, 0)
    print(json.dumps({"returncode": os.waitstatus_to_exitcode(status)}), flush=True)
"""


NO_FORK_ENV = "ZOO_TESTS_NO_FORK"  # "1": ProcessServer instead of ForkServer


def no_fork() -> bool:
    """Whether ``ZOO_TESTS_NO_FORK`` asks for plain processes instead of forks."""
    return os.environ.get(NO_FORK_ENV, "") not in ("", "0")


# What the server starts with; torch reads it at import, so it holds for every child whatever
# environment the call gives. One thread each: the models are tiny, and a thread pool in a
# forked child of a loaded machine spends its time spinning.
SERVER_ENV = {k: v for k, v in os.environ.items() if not k.startswith("ZOO_")} | {"OMP_NUM_THREADS": "1"}


class Forked:
    """One call in flight, with the parts of ``subprocess.Popen`` the tests use."""

    def __init__(self, server: ForkServer, pid: int):
        self.server, self.pid = server, pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                os.kill(self.pid, 0)  # still there (the server reaps it the moment it ends)
            except ProcessLookupError:
                self._collect()
        return self.returncode

    def send_signal(self, signum: int) -> None:
        if self.returncode is None:
            try:
                os.kill(self.pid, signum)
            except ProcessLookupError:
                pass

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def wait(self, timeout: float | None = None) -> int:
        """The exit code; past ``timeout`` seconds the child is killed and TimeoutExpired raised."""
        if self.returncode is None:
            expired = threading.Event()

            def expire() -> None:
                expired.set()
                self.kill()

            timer = threading.Timer(timeout, expire) if timeout is not None else None
            if timer:
                timer.start()
            try:
                self._collect()
            finally:
                if timer:
                    timer.cancel()
            if expired.is_set():
                raise subprocess.TimeoutExpired(f"zoo (pid {self.pid})", timeout or 0)
        assert self.returncode is not None
        return self.returncode

    def _collect(self) -> None:
        self.returncode = self.server._receive()["returncode"]
        self.server._lock.release()


class ForkServer:
    """One server process, serving one call at a time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._proc = subprocess.Popen(
            [sys.executable, "-c", SERVER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=SERVER_ENV,
        )

    def start(
        self, args: list[str], *, cwd: Path, env: dict[str, str], path: list[str], stdout: Path, stderr: Path
    ) -> Forked:
        """Fork a child running ``zoo ARGS``; its output goes to the files ``stdout`` and ``stderr``.
        The next call waits until this one has been waited for (or polled to its end)."""
        for stream in (stdout, stderr):
            stream.write_bytes(b"")
        self._lock.acquire()
        try:
            request = {
                "args": list(args),
                "cwd": str(cwd),
                "env": env,
                "path": path,
                "stdout": str(stdout),
                "stderr": str(stderr),
            }
            assert self._proc.stdin is not None and self._proc.poll() is None, "the fork server has died"
            self._proc.stdin.write(json.dumps(request) + "\n")
            self._proc.stdin.flush()
            return Forked(self, self._receive()["pid"])
        except BaseException:
            self._lock.release()
            raise

    def call(
        self, args: list[str], *, cwd: Path, env: dict[str, str], path: list[str], timeout: float
    ) -> subprocess.CompletedProcess:
        with tempfile.TemporaryDirectory() as streams:
            out, err = Path(streams) / "stdout", Path(streams) / "stderr"
            returncode = self.start(args, cwd=cwd, env=env, path=path, stdout=out, stderr=err).wait(timeout)
            return subprocess.CompletedProcess(["zoo", *args], returncode, out.read_text(), err.read_text())

    def _receive(self) -> dict:
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()
        assert line, f"the fork server has died (exit code {self._proc.poll()})"
        return json.loads(line)

    def close(self) -> None:
        if self._proc.stdin:
            self._proc.stdin.close()
        self._proc.wait(timeout=30)


class ProcessServer(ForkServer):
    """:class:`ForkServer`'s interface, each call a plain ``python -m zoo`` process (``subprocess.Popen``,
    which has the ``poll``/``send_signal``/``kill``/``wait`` of :class:`Forked`)."""

    def __init__(self) -> None:  # no server process
        pass

    def start(
        self, args: list[str], *, cwd: Path, env: dict[str, str], path: list[str], stdout: Path, stderr: Path
    ) -> subprocess.Popen:
        env = dict(env)
        env["PYTHONPATH"] = os.pathsep.join([*path, env.get("PYTHONPATH", "")]).strip(os.pathsep)
        with open(stdout, "wb") as out, open(stderr, "wb") if stderr != stdout else contextlib.nullcontext() as err:
            return subprocess.Popen(
                [sys.executable, "-m", "zoo", *args],
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err if err is not None else subprocess.STDOUT,
            )

    def call(
        self, args: list[str], *, cwd: Path, env: dict[str, str], path: list[str], timeout: float
    ) -> subprocess.CompletedProcess:
        with tempfile.TemporaryDirectory() as streams:
            out, err = Path(streams) / "stdout", Path(streams) / "stderr"
            proc = self.start(args, cwd=cwd, env=env, path=path, stdout=out, stderr=err)
            try:
                returncode = proc.wait(timeout)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
            return subprocess.CompletedProcess(["zoo", *args], returncode, out.read_text(), err.read_text())

    def close(self) -> None:
        pass


class ForkedZooCLI(ZooCLI):
    """``ZooCLI`` (same working directory, ``paths``, ``env``), served by a :class:`ForkServer`."""

    def __init__(self, cwd: Path, server: ForkServer):
        super().__init__(cwd)
        self.server = server

    def __call__(
        self, *args: str, env: dict[str, str] | None = None, timeout: float = 300
    ) -> subprocess.CompletedProcess:
        full_env = self.environment(env)
        return self.server.call(list(args), cwd=self.cwd, env=full_env, path=list(self.paths), timeout=timeout)
