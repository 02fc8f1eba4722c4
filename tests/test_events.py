"""zoo.events: the stop control (signals, the vote, the kill hook) and the per-rank event hooks."""

from __future__ import annotations

import signal

import pytest

from zoo import hookimpl
from zoo.errors import UsageError
from zoo.events import RunEvents, StopControl
from zoo.plugins import PluginHost


class Voter:
    """A process group of one that records its votes (``zoo.ddp.Dist`` is the real one)."""

    def __init__(self, rank: int = 0, others_stop_at: int | None = None):
        self.rank, self.votes, self.others_stop_at = rank, [], others_stop_at

    def stop_vote(self, local: bool) -> bool:
        self.votes.append(local)
        return local or len(self.votes) == self.others_stop_at

    def agree(self, local: bool) -> bool:
        return local


def test_a_signal_stops_after_the_step_and_handlers_are_restored():
    before = signal.getsignal(signal.SIGTERM)
    stop = StopControl(Voter())
    with stop:
        assert stop.after_step() is False
        signal.raise_signal(signal.SIGTERM)
        assert stop.signum == signal.SIGTERM and stop.name == "SIGTERM"
        assert stop.after_step() is True and stop.after_epoch() is True
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_second_signal_stops_at_once():
    with StopControl(Voter()) as stop:
        signal.raise_signal(signal.SIGINT)
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)
    assert stop.name == "SIGINT"


def test_another_rank_s_wish_stops_this_one():
    voter = Voter(others_stop_at=3)
    with StopControl(voter) as stop:
        assert [stop.after_step() for _ in range(3)] == [False, False, True]
    assert voter.votes == [False, False, False] and stop.signum is None


def test_an_inherited_ignored_sigint_stays_ignored():
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with StopControl(Voter()) as stop:
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
            signal.raise_signal(signal.SIGINT)
            assert stop.signum is None
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)


def test_the_kill_hook_signals_after_exactly_that_step(monkeypatch):
    monkeypatch.setenv("ZOO_TEST_KILL_WORKER", "0:3:SIGINT")
    with StopControl(Voter()) as stop:
        assert [stop.after_step() for _ in range(3)] == [False, False, True]
    assert stop.signum == signal.SIGINT
    monkeypatch.setenv("ZOO_TEST_KILL_WORKER", "1:1:SIGINT")  # another rank's
    with StopControl(Voter(rank=0)) as stop:
        assert [stop.after_step() for _ in range(3)] == [False, False, False]
    monkeypatch.setenv("ZOO_TEST_KILL_WORKER", "0:x")
    with pytest.raises(UsageError, match="ZOO_TEST_KILL_WORKER must be RANK:STEP"):
        StopControl(Voter())


class Recorder:
    def __init__(self):
        self.seen = []

    @hookimpl
    def on_epoch_end(self, run, epoch, metrics):
        self.seen.append(epoch)


def test_run_events_reach_a_run_plugin_on_the_writer_only():
    host = PluginHost(strict=True)
    writer, reader = Recorder(), Recorder()
    with RunEvents(host).plugin(writer, "recorder"):
        RunEvents(host).emit("on_epoch_end", run=None, epoch=1, metrics={})
        RunEvents(host, active=False).emit("on_epoch_end", run=None, epoch=2, metrics={})
    with RunEvents(host, active=False).plugin(reader, "recorder"):
        RunEvents(host).emit("on_epoch_end", run=None, epoch=3, metrics={})
    RunEvents(host).emit("on_epoch_end", run=None, epoch=4, metrics={})  # the run is over: unregistered
    assert writer.seen == [1] and reader.seen == []
    assert "recorder" not in host.infos and host.pm.get_plugin("recorder") is None
