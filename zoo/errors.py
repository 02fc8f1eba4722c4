"""Errors a user can act on. The CLI turns each into one ``zoo: error:`` line and an exit code."""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable

__all__ = [
    "ZooError",
    "UsageError",
    "RunError",
    "Interrupted",
    "UnknownNameError",
    "AmbiguousNameError",
    "PluginError",
    "DuplicateNameError",
    "DEBUG_ENV",
    "one_line",
    "debug_enabled",
    "error_report",
]

DEBUG_ENV = "ZOO_DEBUG"  # set (and not "0"): errors re-raise with their traceback


class ZooError(Exception):
    """Base class: ``exit_code`` is what the command line exits with."""

    exit_code = 1


class UsageError(ZooError):
    """Bad input: an unknown name, a bad option, an unreadable file (exit 2)."""

    exit_code = 2


class RunError(ZooError):
    """A failure while running: NaN loss, I/O error (exit 1)."""

    exit_code = 1


class Interrupted(ZooError):
    """SIGINT (exit 130) or SIGTERM (exit 143) stopped a run after it saved a checkpoint."""

    def __init__(self, message: str, signum: int = 2):
        super().__init__(message)
        self.signum = int(signum)
        self.exit_code = 128 + self.signum


class UnknownNameError(UsageError, KeyError):
    """A name that is not in the registry, with the closest match as a suggestion."""

    def __init__(self, kind: str, name: str, known: Iterable[str]):
        self.kind, self.name = kind, name
        close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.5)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        kinds = ("model", "optimizer", "dataset", "scheduler", "augmentation", "recipe")
        plural = f" {kind}s" if kind in kinds else ""
        super().__init__(f"unknown {kind} '{name}'{hint} (zoo list{plural})")

    def __str__(self) -> str:  # KeyError would quote the message
        return self.args[0]


class AmbiguousNameError(UsageError, KeyError):
    """A bare name that two third-party plugins register: only their qualified names reach them."""

    def __str__(self) -> str:  # KeyError would quote the message
        return self.args[0]


class PluginError(UsageError):
    """A plugin that failed to load or register (fatal only under ZOO_STRICT_PLUGINS=1)."""


class DuplicateNameError(UsageError):
    """Two sources registered the same name in one namespace."""


def one_line(exc: BaseException) -> str:
    """``"TypeName: message"`` with the message's whitespace (newlines too) collapsed; just
    ``"TypeName"`` when the message is empty."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def debug_enabled() -> bool:
    """Whether ``ZOO_DEBUG`` asks for tracebacks (set and not ``"0"``)."""
    return os.environ.get(DEBUG_ENV, "") not in ("", "0")


def report_prefix(exc: BaseException) -> str:
    """How a command's end is announced: ``zoo: stopped:`` for a stop the user asked for (a
    signal: not an error, and ``--resume`` continues), ``zoo: error:`` for everything else."""
    return "zoo: stopped:" if isinstance(exc, Interrupted | KeyboardInterrupt) else "zoo: error:"


def error_report(exc: BaseException) -> tuple[int, str]:
    """The exit code and the text after ``zoo: error:`` for an exception that ends a command."""
    if isinstance(exc, ZooError):
        return exc.exit_code, str(exc)
    if isinstance(exc, KeyboardInterrupt):
        return 130, "interrupted"
    return 1, f"internal error: {one_line(exc)} ({DEBUG_ENV}=1 shows the traceback)"
