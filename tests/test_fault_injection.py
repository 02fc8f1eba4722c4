"""Fault injection: ``zoo run`` SIGKILLed at random moments loses nothing, and ``--resume``
continues it to the very weights of a run that was never stopped.

SIGKILL cannot be caught: it is the crash that a power cut or the OOM killer causes. The test
starts ``zoo run`` (Tudui on a few ``fake`` images, three epochs) and kills it at a moment drawn
from a seeded plan: during start-up, inside a write of ``config.yaml``/``metrics.jsonl``/
``status.json``, inside a write of ``best.pt`` or ``last.pt``, or in the middle of an epoch.
``ZOO_TEST_SLOW_CHECKPOINT_WRITE`` makes every atomic write pause twice (the temporary file
half written; complete but not yet renamed), so the kills aimed at writes land inside them.

After every kill, ``last.pt`` and ``best.pt`` must open with ``weights_only=True`` and
``last.pt`` must not have lost an epoch. A copy of the run directory, leftover temporary files
and all, is then resumed to the end: it must start at the epoch its ``last.pt`` holds (a resume
that quietly started over would also end with the right weights), finish without error, leave
no temporary file, and end with ``last.pt``, ``best.pt`` (weights and optimizer state) and
``metrics.jsonl`` equal bit for bit to those of one uninterrupted ``python -m zoo`` run. The
original directory is resumed by the next trial and killed again, three kills to a run, so
kills also hit runs that were resuming.

Each run is a process forked from a server that has already imported torch (forkcli.py), so a
trial costs about a second; the uninterrupted reference is a plain ``python -m zoo``, which also
shows that forking changes nothing. The plan is reproducible from ``SEED``; a failure prints it
with what each kill left. SIGINT and SIGTERM (a checkpoint, then exit 130/143) are tested in
test_runner.py; a full disk and an unwritable run directory at the end of this file.
"""

from __future__ import annotations

import errno
import json
import os
import random
import re
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

import pytest
import torch

from conftest import assert_user_error
from forkcli import SERVER_ENV, Forked, ForkServer
from zoo.checkpoint import SLOW_WRITE_ENV
from zoo.errors import RunError
from zoo.runner import RunConfig, run

SEED = 20261125
EPOCHS = 3
PAUSE = 0.1  # seconds each atomic write pauses, twice, under ZOO_TEST_SLOW_CHECKPOINT_WRITE
COMMAND = ("run", "tudui", "adam", "--data", "fake", "--limit-train", "32", "--limit-val", "8",
           "--batch-size", "8", "--epochs", str(EPOCHS), "--device", "cpu", "--seed", "0")
# Where the kills are aimed, in a seeded order:
#   start-up          0-0.6 s after the fork: registry, data, model, loading last.pt, the run directory
#   run-dir-write     inside the first write of config.yaml, metrics.jsonl or status.json
#   checkpoint-write  inside the n-th write of best.pt or last.pt
#   last-write        inside the n-th write of last.pt
#   training          in the epoch after the n-th metrics line
MOMENTS = ["start-up"] * 2 + ["run-dir-write"] * 2 + ["checkpoint-write"] * 3 + ["last-write"] * 3 + ["training"] * 2
KILLS_PER_RUN = 3  # then a new run: kills land in every epoch, on fresh and on resumed processes
CHECKPOINT_TEMP = (".last.pt.", ".best.pt.")
TEMP = re.compile(r"^\..+\.tmp$")  # atomic_write's temporary files: .NAME.XXXXXXXX.tmp
BANNER = re.compile(r"epochs (\d+)-\d+ ->")  # the runner's first line names the first epoch it trains


@dataclass
class Trial:
    """One kill: where it is aimed (``where`` and ``wait`` are uniform draws in [0, 1)) and what it left."""

    moment: str
    where: float  # which write or epoch, as a fraction of those still to come
    wait: float  # how long after the moment's event, as a fraction of its window
    seconds: float = 0.0  # the wait, in seconds
    epochs_before: int = 0
    epochs_after: int = 0
    left: dict[str, int] = field(default_factory=dict)  # temporary files right after the kill: name -> bytes

    def __str__(self) -> str:
        return (f"{self.moment:<16}  where {self.where:.2f}  +{self.seconds:.3f}s  "
                f"epochs {self.epochs_before} -> {self.epochs_after}  left {self.left}")


def plan() -> list[Trial]:
    rng = random.Random(SEED)
    return [Trial(moment, rng.random(), rng.random()) for moment in rng.sample(MOMENTS, len(MOMENTS))]


def temp_files(out: Path) -> dict[str, int]:
    found = {}
    for name in os.listdir(out) if out.is_dir() else ():
        if TEMP.match(name):
            try:
                found[name] = (out / name).stat().st_size
            except FileNotFoundError:  # renamed into place while we looked
                pass
    return found


def metric_lines(out: Path) -> int:
    try:
        return len((out / "metrics.jsonl").read_text().splitlines())
    except FileNotFoundError:
        return 0


def checkpointed_epochs(out: Path) -> int:
    """Epochs in ``last.pt`` (0: none yet), after checking that both checkpoints open."""
    for name in ("best.pt", "last.pt"):
        if (out / name).exists():
            ckpt = torch.load(out / name, weights_only=True)  # raises if a kill left it unreadable
            assert ckpt["format"] == "zoo.checkpoint" and ckpt["spec"]["model"] == "tudui", name
    return int(torch.load(out / "last.pt", weights_only=True)["epoch"]) if (out / "last.pt").exists() else 0


def first_epoch(log: str) -> int | None:
    """The first epoch a process set out to train, or None if it was killed before saying."""
    match = BANNER.search(log)
    return int(match.group(1)) if match else None


class Runs:
    """``zoo run COMMAND --out OUT [--resume]`` as forked processes, logged under ``logs``."""

    def __init__(self, server: ForkServer, env: dict[str, str], logs: Path):
        self.server, self.env, self.logs = server, env, logs
        self.count = 0

    def start(self, out: Path, *, slow: bool) -> tuple[Forked, Path]:
        self.count += 1
        log = self.logs / f"{self.count:02d}-{out.name}.log"
        args = [*COMMAND, "--out", str(out), *(["--resume"] if out.exists() else [])]
        env = {**self.env, SLOW_WRITE_ENV: str(PAUSE)} if slow else self.env
        return self.server.start(args, cwd=out.parent, env=env, path=[], stdout=log, stderr=log), log


def wait_until(proc: Forked, event: Callable[[], bool], what: str, timeout: float = 120) -> bool:
    """Poll until ``event()`` (True) or until the process ends (False)."""
    deadline = time.monotonic() + timeout
    while not event():
        if proc.poll() is not None:
            return False
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.002)
    return True


def aim(trial: Trial, proc: Forked, out: Path, stale: set[str]) -> bool:
    """Wait for the trial's moment; False if the process ended first. ``stale``: temporary
    files an earlier kill left, which are no sign of this process."""
    remaining = EPOCHS - trial.epochs_before
    if trial.moment == "training" and remaining < 2:
        trial.moment = "last-write"  # no epoch after the next one's metrics line
    writes: set[str] = set()

    def new_writes(*prefixes: str) -> int:
        writes.update(n for n in temp_files(out) if n not in stale and n.startswith(prefixes))
        return len(writes)

    reached = True
    if trial.moment == "start-up":
        trial.seconds = 0.6 * trial.wait
    elif trial.moment == "run-dir-write":
        reached = wait_until(proc, lambda: new_writes(".config.yaml.", ".metrics.jsonl.", ".status.json.") > 0, trial.moment)
        trial.seconds = 1.2 * PAUSE * trial.wait  # a temporary file lives >= 2 * PAUSE
    elif trial.moment in ("checkpoint-write", "last-write"):
        prefixes = CHECKPOINT_TEMP if trial.moment == "checkpoint-write" else CHECKPOINT_TEMP[:1]
        n = 1 + int(trial.where * remaining)  # every epoch writes last.pt: the n-th write comes
        reached = wait_until(proc, lambda: new_writes(*prefixes) >= n, f"{trial.moment} {n}")
        trial.seconds = 1.2 * PAUSE * trial.wait
    else:
        lines = trial.epochs_before + 1 + int(trial.where * (remaining - 1))
        reached = wait_until(proc, lambda: metric_lines(out) >= lines, f"metrics line {lines}")
        trial.seconds = 2 * PAUSE * trial.wait
    time.sleep(trial.seconds if reached else 0)
    return proc.poll() is None


def uninterrupted(out: Path, env: dict[str, str]) -> None:
    """The reference: one plain ``python -m zoo`` run, never stopped."""
    log = out.parent / "reference.log"
    with open(log, "w") as f:
        code = subprocess.run([sys.executable, "-m", "zoo", *COMMAND, "--out", str(out)], cwd=out.parent, env=env,
                              stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, timeout=300).returncode
    assert code == 0, log.read_text()


def assert_bitwise_equal(a, b, where: str) -> None:
    """Nested dicts and lists of tensors and plain values, equal bit for bit."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for key in a:
            assert_bitwise_equal(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_bitwise_equal(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def assert_same_run(out: Path, reference: Path) -> None:
    for name in ("last.pt", "best.pt"):
        ours, theirs = (torch.load(d / name, weights_only=True) for d in (out, reference))
        assert ours["epoch"] == theirs["epoch"] and (name == "best.pt" or ours["epoch"] == EPOCHS), name
        assert_bitwise_equal(ours["model"], theirs["model"], f"{out / name}: model")
        assert_bitwise_equal(ours["optimizer"], theirs["optimizer"], f"{out / name}: optimizer")
    lines = [[{k: v for k, v in json.loads(line).items() if k != "seconds"}
              for line in (d / "metrics.jsonl").read_text().splitlines()] for d in (out, reference)]
    assert lines[0] == lines[1], out


def test_sigkill_at_random_moments_then_resume_equals_an_uninterrupted_run(tmp_path, fork_server):
    env = SERVER_ENV | {"ZOO_DATA": str(tmp_path / "data")}  # the reference's threads are the forks' threads
    runs = Runs(fork_server, env, tmp_path / "logs")
    runs.logs.mkdir()
    (tmp_path / "reference").mkdir()
    trials, resumed = plan(), []
    out, done = tmp_path, 0
    with ThreadPoolExecutor(1) as pool:
        reference = pool.submit(uninterrupted, tmp_path / "reference" / "run", env)
        try:
            for number, trial in enumerate(trials):
                if number % KILLS_PER_RUN == 0 or done == EPOCHS:  # (or the last kill came after the end)
                    out, done = tmp_path / f"run-{number:02d}", 0
                # Kill the run (resuming from the previous kill, if any) at the trial's moment.
                trial.epochs_before = done
                stale = set(temp_files(out))
                proc, log = runs.start(out, slow=True)
                try:
                    killed = aim(trial, proc, out, stale)
                finally:
                    proc.kill()
                    proc.wait()
                trial.left = temp_files(out)
                text = log.read_text()
                assert killed, f"the run ended before the kill:\n{text}"
                assert "Traceback" not in text and "zoo: error" not in text, text
                assert first_epoch(text) in (None, done + 1), f"last.pt holds {done} epochs, yet:\n{text}"
                trial.epochs_after = done = checkpointed_epochs(out)
                assert done >= trial.epochs_before, "the kill lost a finished epoch"

                # Resume a copy, leftovers and all, to the end.
                copy = tmp_path / f"resumed-{number:02d}"
                if out.exists():
                    shutil.copytree(out, copy, symlinks=True)
                proc, log = runs.start(copy, slow=False)
                assert proc.wait(timeout=300) == 0, log.read_text()
                assert first_epoch(log.read_text()) == done + 1, log.read_text()
                assert temp_files(copy) == {}, "the resumed run left temporary files behind"
                resumed.append(copy)
            reference.result()
            for copy in resumed:
                assert_same_run(copy, tmp_path / "reference" / "run")
        finally:
            print("\n".join(map(str, trials)))  # pytest shows it when the test fails
    in_a_write = [t for t in trials if any(n.startswith(CHECKPOINT_TEMP) for n in t.left)]
    assert len(in_a_write) >= 3, "too few kills landed inside a checkpoint write"


# -- a full disk, an unwritable run directory --------------------------------------------------


def tiny(out: Path, **overrides) -> RunConfig:
    fields = dict(model="tudui", optimizer="adam", data="fake", epochs=1, batch_size=16, limit_train=32,
                  limit_val=16, out=str(out), quiet=True, device="cpu")
    return RunConfig(**{**fields, **overrides})


def test_a_full_disk_during_a_checkpoint_write_keeps_the_previous_checkpoints(tmp_path, monkeypatch):
    out = tmp_path / "run"
    run(tiny(out))
    before = {name: (out / name).read_bytes() for name in ("last.pt", "best.pt")}
    real_save = torch.save

    def half_then_enospc(obj, f, *args, **kwargs):  # the disk fills up half way through
        real_save(obj, f, *args, **kwargs)
        f.truncate(f.tell() // 2)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", half_then_enospc)
    with pytest.raises(RunError) as info:
        run(tiny(out, epochs=2, resume=True))
    assert info.value.exit_code == 1
    assert "No space left on device (the previous file is intact)" in str(info.value)
    assert {name: (out / name).read_bytes() for name in before} == before
    assert temp_files(out) == {}

    monkeypatch.setattr(torch, "save", real_save)  # space freed: the run goes on from epoch 1
    assert run(tiny(out, epochs=2, resume=True))["epochs"] == 2


def test_too_little_free_space_is_refused_before_the_first_epoch(tmp_path, monkeypatch):
    import zoo.runner

    out = tmp_path / "run"
    run(tiny(out))
    before = (out / "last.pt").read_bytes()
    monkeypatch.setattr(zoo.runner.shutil, "disk_usage", lambda path: SimpleNamespace(total=2**30, used=2**30 - 4096, free=4096))
    with pytest.raises(RunError, match=r"not enough disk space in .*run: checkpoints need about \d+ MiB, 0 MiB free"):
        run(tiny(out, epochs=2, resume=True))
    assert (out / "last.pt").read_bytes() == before
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1  # no epoch ran


def test_an_out_that_cannot_be_created_is_refused_before_training(zoo_fork):
    (zoo_fork.cwd / "runs").write_text("a file, not a directory\n")
    result = zoo_fork(*COMMAND, "--out", "runs/mine")
    assert_user_error(result, 2, "cannot create run directory runs/mine: Not a directory")
    assert "epoch" not in result.stderr
    assert sorted(p.name for p in zoo_fork.cwd.iterdir()) == ["runs"]
