"""A run and the world outside it: event hooks going out, stop signals coming in.

:class:`RunEvents` calls the plugins' event hooks as this process should: the writer (rank 0)
tells every plugin, and the console when it prints; other ranks tell nobody, so each event is
seen once per run. :class:`StopControl` merges three things the loop would otherwise name separately: the signal
handlers, the distributed vote (every rank must stop after the same step, or DDP would wait
forever for the ones that did not) and the test hook that sends a signal after a given step.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol

from zoo.testhooks import kill_at

__all__ = ["RunEvents", "StopControl", "Voter"]


class RunEvents:
    """The event hooks of one run. ``host`` is the plugin host (``zoo.plugins.PluginHost``);
    ``active`` is False on the processes that stay silent (ranks other than 0)."""

    def __init__(self, host: Any, *, active: bool = True):
        self.host = host
        self.active = active

    def emit(self, hook: str, **kwargs: Any) -> None:
        if self.active:
            self.host.emit(hook, **kwargs)

    @contextmanager
    def plugin(self, plugin: Any | None, name: str) -> Iterator[None]:
        """``plugin`` (e.g. the console) receives this run's events, and no other run's."""
        from zoo.plugins import PluginInfo

        registered = plugin is not None and self.active
        if registered:
            self.host.register(plugin, PluginInfo(name=name, builtin=True))
        try:
            yield
        finally:
            if registered:
                self.host.unregister(name)


class Voter(Protocol):
    """What :class:`StopControl` asks of the process group (``zoo.ddp.Dist``): two votes."""

    rank: int

    def stop_vote(self, local: bool) -> bool: ...

    def agree(self, local: bool) -> bool: ...


class StopControl:
    """While entered, SIGINT and SIGTERM ask the loop to stop after the current step (it then
    checkpoints); a second signal stops at once (``KeyboardInterrupt``), leaving the previous
    checkpoint intact.

    A signal the process inherited as ignored stays ignored: a shell starts background jobs
    (``cmd &``, ``nohup``) with SIGINT ignored so that Ctrl-C at the terminal spares them.
    """

    def __init__(self, voter: Voter):
        self.voter = voter
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}
        self._steps = 0
        self._kill = kill_at(voter.rank)  # tests: (step, signal) this process sends itself
        # One process and no test hook: the vote is this process's own wish, a test a step.
        self._alone = self._kill is None and getattr(voter, "distributed", True) is False

    def __enter__(self) -> StopControl:
        if threading.current_thread() is threading.main_thread():  # signal.signal's rule
            for signum in (signal.SIGINT, signal.SIGTERM):
                previous = signal.getsignal(signum)
                if previous is not signal.SIG_IGN:
                    self._previous[signum] = previous
                    signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None:
            self.signum = signum
            raise KeyboardInterrupt  # BaseException: no `except Exception` on the way swallows it
        self.signum = signum

    @property
    def name(self) -> str:
        return signal.Signals(self.signum or signal.SIGINT).name

    def after_step(self) -> bool:
        """Called after every training step: whether every process agrees to stop now."""
        if self._alone:
            return self.signum is not None
        self._steps += 1
        if self._kill is not None and self._steps == self._kill[0]:
            # raise_signal runs the Python handler before it returns, so the signal counts for this step.
            signal.raise_signal(self._kill[1])
        return self.voter.stop_vote(self.signum is not None)

    def after_epoch(self) -> bool:
        """Called after each validated epoch: whether a signal arrived (on any process) since."""
        return self.voter.agree(self.signum is not None)
