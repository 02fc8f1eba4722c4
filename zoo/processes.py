"""Whether a process that wrote a record (a run's ``status.json``, a sweep's trial) still runs.

A pid alone can mislead: a killed process's parent may not have reaped it yet (a zombie still
answers ``kill(pid, 0)``), and a pid is reused once reaped. On Linux, /proc tells both apart.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

__all__ = ["process_stamp", "alive", "pid_alive"]


def process_stamp(pid: int) -> str | None:
    """The start time of live process ``pid`` (Linux's /proc: tells a reused pid apart); "" where
    it is alive but /proc cannot say; None when no such process runs (a zombie is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        if Path("/proc/self/stat").exists():
            return None
    except OSError:
        return ""
    else:
        fields = stat.rpartition(")")[2].split()  # fields 3.. of proc(5); the name may hold spaces
        return None if fields[0] in ("Z", "X") else fields[19]
    try:  # no /proc: ask the kernel
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    return ""


def alive(record: Any) -> bool:
    """Whether the process a ``zoo_owner`` or ``zoo_child`` record names still runs on this host
    (a pid now held by another process is not it); a record of another host counts as alive."""
    if not isinstance(record, dict):
        return False
    if record.get("host", socket.gethostname()) != socket.gethostname():
        return True  # another host's: not ours to judge
    try:
        stamp = process_stamp(int(record["pid"]))
    except (ValueError, KeyError, TypeError):
        return True
    if stamp is None:
        return False
    return not (stamp and record.get("started") and stamp != record["started"])  # else: its pid, reused


def pid_alive(pid: Any, *, host: Any = None, started: Any = None) -> bool:
    """Whether process ``pid`` of ``host`` (None: this one) runs, a zombie not counted, nor
    another process now holding the pid (``started``: its :func:`process_stamp`, when recorded).
    A pid that is not a positive integer (an old or hand-written record) counts as alive, and so
    does another host's process: nothing here says it is gone."""
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return True
    record: dict[str, Any] = {"pid": pid}
    if isinstance(host, str) and host:
        record["host"] = host
    if isinstance(started, str) and started:
        record["started"] = started
    return alive(record)
