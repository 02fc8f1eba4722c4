"""zoo.testhooks: the test-only switches, on their own (the suites that use them: test_fault_injection.py,
test_distributed.py, test_real_processes.py)."""

from __future__ import annotations

import signal
import threading

import pytest
import torch

from handshake import WriteStops
from zoo.errors import UsageError
from zoo.files import atomic_save
from zoo.testhooks import KILL_WORKER_ENV, SLOW_WRITE_ENV, kill_at, write_pause


@pytest.mark.parametrize(
    "text, rank, expected",
    [
        ("0:5", 0, (5, signal.SIGKILL)),
        ("0:5:SIGINT", 0, (5, signal.SIGINT)),
        ("1:9:SIGTERM", 1, (9, signal.SIGTERM)),
        ("1:9", 0, None),  # another rank's
    ],
)
def test_kill_at_reads_rank_step_and_signal(monkeypatch, text, rank, expected):
    monkeypatch.setenv(KILL_WORKER_ENV, text)
    assert kill_at(rank) == expected


def test_kill_at_is_off_when_unset_and_on_restarted_attempts(monkeypatch):
    assert kill_at(0) is None
    monkeypatch.setenv(KILL_WORKER_ENV, "0:5")
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "1")  # the restarted group must not die again
    assert kill_at(0) is None
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "0")
    assert kill_at(0) == (5, signal.SIGKILL)


@pytest.mark.parametrize("text", ["5", "0:five", "0:5:SIGNOPE", "0:5:SIGINT:x", "0:0", "-1:5"])
def test_kill_at_refuses_bad_text_naming_the_variable(monkeypatch, text):
    monkeypatch.setenv(KILL_WORKER_ENV, text)
    with pytest.raises(UsageError, match=f"{KILL_WORKER_ENV} must be RANK:STEP or RANK:STEP:SIGNAL.*{text!r}"):
        kill_at(0)


def test_no_pause_unless_asked(monkeypatch, tmp_path):
    assert write_pause(tmp_path / "a", tmp_path / ".a.tmp") is None
    monkeypatch.setenv(SLOW_WRITE_ENV, "not a number")
    assert write_pause(tmp_path / "a", tmp_path / ".a.tmp") is None


def test_a_write_stops_at_each_point_until_the_test_lets_it_go_on(monkeypatch, tmp_path):
    stops = WriteStops(tmp_path / "stop.json")
    for name, value in stops.env().items():
        monkeypatch.setenv(name, value)
    target = tmp_path / "last.pt"
    writer = threading.Thread(target=atomic_save, args=({"a": torch.ones(1000)}, target))
    writer.start()
    try:
        partial = stops.next(ThreadAsProcess(writer))
        assert (partial["point"], partial["name"]) == ("partial", "last.pt")
        temp = tmp_path / partial["temp"]
        assert temp.exists() and not target.exists()  # half written, beside its target
        stops.go_on()
        complete = stops.next(ThreadAsProcess(writer))
        assert (complete["point"], complete["temp"]) == ("complete", partial["temp"])
        assert torch.load(temp, weights_only=True)["a"].shape == (1000,) and not target.exists()  # whole, not in place
        stops.go_on()
        writer.join(timeout=60)
        assert stops.next(ThreadAsProcess(writer)) is None  # no third stop: the write is done
    finally:
        stops.release_all(ThreadAsProcess(writer))
        writer.join(timeout=60)
    assert torch.load(target, weights_only=True)["a"].shape == (1000,) and not temp.exists()


class ThreadAsProcess:
    """A writer thread, with the ``poll()`` that WriteStops asks a process for."""

    def __init__(self, thread: threading.Thread):
        self.thread = thread

    def poll(self) -> int | None:
        return None if self.thread.is_alive() else 0
