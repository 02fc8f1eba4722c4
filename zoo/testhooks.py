"""Test-only switches, all read from the environment: nothing here acts unless a test sets one.

``ZOO_TEST_SLOW_CHECKPOINT_WRITE=SECONDS``
    Every atomic write (:func:`zoo.files.atomic_write`) stops at two points: ``"partial"``,
    just after the first ``write()`` call's bytes were flushed to the temporary file (it holds
    only the start of what is being written), and ``"complete"``, with the temporary file
    complete and fsynced but not yet renamed onto its target. Without a marker (below) each stop
    is a sleep of SECONDS.
``ZOO_TEST_WRITE_MARKER=PATH`` (with the above)
    Turns each stop into a handshake. The writer creates the file PATH (atomically, by a rename)
    holding one JSON object, ``{"point": "partial"|"complete", "path": TARGET, "temp": TEMPORARY}``,
    then waits until PATH is removed (the test's "go on") or SECONDS have passed. A test that
    sees PATH knows the writer is at that point and stays there: it can SIGKILL it, or remove
    PATH to let the write go on to its next point.
``ZOO_TEST_KILL_WORKER=RANK:STEP[:SIGNAL]``
    The process of rank RANK (0 in a single-process run) sends itself SIGNAL (a name such as
    SIGINT; SIGKILL when left out) after its STEP-th training step, counted from the process's
    start. Read by :func:`kill_at`; honoured on the first attempt of an elastic job only.

This module depends on the standard library and :mod:`zoo.errors` only.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any, BinaryIO

from zoo.errors import UsageError

__all__ = ["SLOW_WRITE_ENV", "WRITE_MARKER_ENV", "KILL_WORKER_ENV", "WritePause", "write_pause", "kill_at"]

SLOW_WRITE_ENV = "ZOO_TEST_SLOW_CHECKPOINT_WRITE"
WRITE_MARKER_ENV = "ZOO_TEST_WRITE_MARKER"
KILL_WORKER_ENV = "ZOO_TEST_KILL_WORKER"
_POLL_S = 0.001  # how often a paused writer looks whether the test removed its marker


def _seconds() -> float:
    try:
        return max(0.0, float(os.environ.get(SLOW_WRITE_ENV) or 0))
    except ValueError:
        return 0.0


class WritePause:
    """The two stops of one atomic write of ``path`` through the temporary file ``temp``."""

    def __init__(self, seconds: float, path: Path, temp: Path, marker: str | None):
        self.seconds, self.path, self.temp, self.marker = seconds, path, temp, marker

    def at(self, point: str) -> None:
        """Stop at ``point``: announce it in the marker and wait for the test, or just sleep."""
        if not self.marker:
            time.sleep(self.seconds)
            return
        part = f"{self.marker}.part"
        with open(part, "w") as f:
            json.dump({"point": point, "path": str(self.path), "temp": str(self.temp)}, f)
        os.replace(part, self.marker)  # the test never reads half a marker
        deadline = time.monotonic() + self.seconds
        while os.path.exists(self.marker) and time.monotonic() < deadline:
            time.sleep(_POLL_S)

    def wrap(self, f: BinaryIO) -> BinaryIO:
        """``f``, stopping at ``"partial"`` after its first ``write()`` (flushed first)."""
        return _PausingWriter(f, self)  # type: ignore[return-value]


class _PausingWriter:
    def __init__(self, f: BinaryIO, pause: WritePause):
        self._f, self._pause = f, pause

    def write(self, data: bytes) -> int:
        written = self._f.write(data)
        if self._pause is not None:
            pause, self._pause = self._pause, None
            self._f.flush()
            pause.at("partial")
        return written

    def __getattr__(self, name: str) -> Any:
        return getattr(self._f, name)


def write_pause(path: Path, temp: Path) -> WritePause | None:
    """The stops of this write, or None unless ``ZOO_TEST_SLOW_CHECKPOINT_WRITE`` is set."""
    seconds = _seconds()
    if not seconds:
        return None
    return WritePause(seconds, Path(path), Path(temp), os.environ.get(WRITE_MARKER_ENV) or None)


def _restart_count() -> int:
    try:
        return int(os.environ.get("TORCHELASTIC_RESTART_COUNT") or 0)
    except ValueError:
        return 0


def kill_at(rank: int) -> tuple[int, signal.Signals] | None:
    """``(STEP, SIGNAL)`` when ``ZOO_TEST_KILL_WORKER=RANK:STEP[:SIGNAL]`` names this ``rank``.

    None when the variable is unset, names another rank, or this is a restarted elastic attempt
    (``TORCHELASTIC_RESTART_COUNT`` > 0). Bad text is a :class:`UsageError` naming the variable.
    """
    text = os.environ.get(KILL_WORKER_ENV)
    if not text:
        return None
    try:
        who, step, *name = text.split(":")
        if len(name) > 1 or int(step) < 1 or int(who) < 0:
            raise ValueError(text)
        sig = signal.Signals[name[0]] if name else signal.SIGKILL
        target = (int(who), int(step))
    except (ValueError, KeyError):
        raise UsageError(
            f"{KILL_WORKER_ENV} must be RANK:STEP or RANK:STEP:SIGNAL (e.g. 0:5:SIGINT), got {text!r}"
        ) from None
    if _restart_count() or target[0] != rank:
        return None
    return target[1], sig
