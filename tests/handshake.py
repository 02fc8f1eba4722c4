"""The test side of the write handshake (zoo/testhooks.py): a zoo process run with
``WriteStops.env()`` stops at two points of every atomic write and waits there for the test.

A stop is announced by a marker file that stays until the test removes it ("go on") or kills
the writer, so whenever the test sees it, the writer is at that point: no clock decides anything.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from zoo.testhooks import SLOW_WRITE_ENV, WRITE_MARKER_ENV

# How long a stopped write waits for the test before going on by itself: only a bound on a
# broken test, which pytest-timeout reports anyway.
STOP_S = 120


class Process(Protocol):
    def poll(self) -> int | None: ...


class WriteStops:
    """Stops announced through the marker file ``marker`` (one writing process at a time)."""

    def __init__(self, marker: Path):
        self.marker = marker
        self.seen: list[dict] = []  # every stop so far: {"point", "path", "temp"}

    def env(self) -> dict[str, str]:
        """The environment that makes a zoo process stop at every write (forgets earlier stops)."""
        self.marker.unlink(missing_ok=True)
        self.seen = []
        return {SLOW_WRITE_ENV: str(STOP_S), WRITE_MARKER_ENV: str(self.marker)}

    def next(self, proc: Process) -> dict | None:
        """The stop the writer waits at, or None once ``proc`` has ended without another one."""
        while not self.marker.exists():  # polls, but races nothing: the marker stays
            if proc.poll() is not None:
                return None
            time.sleep(0.001)
        stop = json.loads(self.marker.read_text())
        stop["name"] = Path(stop["path"]).name
        self.seen.append(stop)
        return stop

    def go_on(self) -> None:
        """Let the waiting writer go on to its next point."""
        self.marker.unlink()

    def until(self, proc: Process, aimed: Callable[[dict], bool]) -> dict | None:
        """Let every stop go on until one that is ``aimed``, and return it with the writer held
        there; None if ``proc`` ended first."""
        while (stop := self.next(proc)) is not None:
            if aimed(stop):
                return stop
            self.go_on()
        return None

    def release_all(self, proc: Process) -> None:
        """Let every stop go on until ``proc`` ends."""
        if self.marker.exists():
            self.go_on()
        self.until(proc, lambda stop: False)
