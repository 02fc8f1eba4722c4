"""zoo.rundir: creating and reopening run directories, atomic files, and who writes them."""

from __future__ import annotations

import collections
import errno
import json
import os
import socket
from pathlib import Path

import pytest

import zoo.files
import zoo.rundir
from zoo.errors import RunError, UsageError
from zoo.processes import process_stamp
from zoo.rundir import RunDir, default_run_dir


def test_create_at_out_and_refuse_an_existing_one(tmp_path):
    run_dir = RunDir.create(tmp_path / "a" / "b", "tudui", "sgd")
    assert run_dir.path.is_dir() and run_dir.writer
    assert (run_dir.last, run_dir.best) == (run_dir.path / "last.pt", run_dir.path / "best.pt")
    with pytest.raises(UsageError, match="already exists: pass --resume to continue it"):
        RunDir.create(tmp_path / "a" / "b", "tudui", "sgd")


def test_default_names_never_reuse_a_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    first = RunDir.create(None, "tudui", "sgd").path
    second = RunDir.create(None, "tudui", "sgd").path
    assert first != second
    assert first.parent == second.parent == Path("runs")
    assert first.name.startswith("tudui-sgd-") and second.name.startswith(first.name[: len("tudui-sgd-20261202")])
    names = [p.name for p in default_run_dir("m", "o")]
    assert len(names) == len(set(names)) == 99 and names[1] == names[0] + "-2"


def test_create_names_the_directory_it_cannot_make(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(UsageError, match=f"cannot create run directory {blocker / 'r'}"):
        RunDir.create(blocker / "r", "tudui", "sgd")


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: None, "nothing to resume: .* does not exist"),
        (lambda p: p.write_text("x"), "nothing to resume: .* is not a run directory"),
    ],
)
def test_reopen_refuses_what_cannot_be_resumed(tmp_path, make, message):
    out = tmp_path / "r"
    make(out)
    with pytest.raises(UsageError, match=message):
        RunDir.reopen(out)
    with pytest.raises(UsageError, match="--resume needs --out DIR"):
        RunDir.reopen(None)


def test_reopen_keeps_the_first_start_and_the_writer_alone_cleans(tmp_path):
    run_dir = RunDir.create(tmp_path / "r", "tudui", "sgd")
    run_dir.started = "2026-01-02T03:04:05"
    run_dir.write_status("interrupted", epochs_done=1)
    stale = run_dir.path / f".last.pt.abcdef{zoo.files.TMP_SUFFIX}"
    stale.write_bytes(b"half a checkpoint")
    reader = RunDir.reopen(run_dir.path, writer=False)
    assert stale.exists() and reader.started == "2026-01-02T03:04:05"
    writer = RunDir.reopen(run_dir.path)
    assert not stale.exists() and writer.started == "2026-01-02T03:04:05"


def test_files_written_as_documented(tmp_path):
    run_dir = RunDir.create(tmp_path / "r", "tudui", "sgd")
    run_dir.write_config({"model": "tudui", "hparams": {"lr": 0.1}})
    history = [{"epoch": 1, "val_accuracy": 0.5}, {"epoch": 2, "val_accuracy": 0.75}]
    run_dir.write_metrics(history)
    run_dir.write_status("running", epochs_done=2)
    assert (run_dir.path / "config.yaml").read_text() == "model: tudui\nhparams:\n  lr: 0.1\n"
    assert [json.loads(line) for line in (run_dir.path / "metrics.jsonl").read_text().splitlines()] == history
    status = json.loads((run_dir.path / "status.json").read_text())
    assert status["status"] == "running" and status["epochs_done"] == 2 and status["pid"] == os.getpid()
    assert status["error"] is None and status["started"] == run_dir.started
    assert status["host"] == socket.gethostname() and status["process_started"] == process_stamp(os.getpid())
    assert run_dir.save_checkpoint(run_dir.last, {"epoch": 2}) is True
    assert run_dir.last.stat().st_size > 0


def test_metrics_are_replaced_atomically_a_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    run_dir = RunDir.create(tmp_path / "r", "tudui", "sgd")
    run_dir.write_metrics([{"epoch": 1}])
    before = (run_dir.path / "metrics.jsonl").read_bytes()

    def full_disk(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(zoo.files.os, "replace", full_disk)
    with pytest.raises(RunError, match="No space left on device"):
        run_dir.write_metrics([{"epoch": 1}, {"epoch": 2}])
    assert (run_dir.path / "metrics.jsonl").read_bytes() == before
    assert sorted(p.name for p in run_dir.path.iterdir()) == ["metrics.jsonl"]  # no temporary file left


def test_a_reader_writes_nothing(tmp_path):
    (tmp_path / "r").mkdir()
    reader = RunDir(tmp_path / "r", writer=False)
    reader.write_config({"a": 1})
    reader.write_metrics([{"epoch": 1}])
    reader.write_status("running", epochs_done=0)
    assert reader.save_checkpoint(reader.last, {"epoch": 1}) is False
    reader.check_disk(10**18, files=3)  # not its disk to check
    assert list((tmp_path / "r").iterdir()) == []


def test_check_disk_refuses_with_the_sizes(tmp_path, monkeypatch):
    run_dir = RunDir.create(tmp_path / "r", "tudui", "sgd")
    run_dir.check_disk(1024, files=3)
    usage = collections.namedtuple("usage", "total used free")(2**30, 2**30 - 2 * 2**20, 2 * 2**20)
    monkeypatch.setattr(zoo.rundir.shutil, "disk_usage", lambda path: usage)
    with pytest.raises(RunError, match=r"checkpoints need about 3 MiB, 2 MiB free"):
        run_dir.check_disk(2**20, files=3)
