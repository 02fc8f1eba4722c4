"""Fault injection: ``zoo run`` SIGKILLed at chosen moments loses nothing, and ``--resume``
continues it to the very weights of a run that was never stopped.

SIGKILL cannot be caught: it is the crash that a power cut or the OOM killer causes. The test
starts ``zoo run`` (Tudui on a few ``fake`` images, three epochs) and kills it at a moment drawn
from a seeded plan: at its first write (start-up), inside a write of ``config.yaml``/
``metrics.jsonl``/``status.json``, inside a write of ``best.pt`` or ``last.pt``, or after a given
training step. No kill is aimed by the clock: each is a handshake with a point the code reached.

* Writes: ``ZOO_TEST_SLOW_CHECKPOINT_WRITE`` with ``ZOO_TEST_WRITE_MARKER`` (zoo/testhooks.py)
  make every atomic write stop twice, with the temporary file half written ("partial") and
  complete but not yet renamed ("complete"). At each stop the writer creates the marker file,
  saying where it is, and waits. The test reads it, then SIGKILLs the process or removes the
  marker to let the write go on. It sees every stop, so it knows exactly how many writes of
  ``last.pt`` and ``best.pt`` had completed when the kill came.
* Steps: ``ZOO_TEST_KILL_WORKER=0:STEP:SIGKILL`` makes the process SIGKILL itself after its
  STEP-th training step.

After every kill, ``last.pt`` and ``best.pt`` must open with ``weights_only=True``, ``last.pt``
must hold exactly the epochs whose ``last.pt`` writes completed (for a step kill: the epochs
before that step's), a checkpoint no completed write touched must be unchanged byte for byte,
and a kill inside a write must have left that write's temporary file (when complete, a whole
checkpoint of the next epoch). A copy of the run directory, leftover temporary files and all,
is then resumed to the end: it must start at the epoch its ``last.pt`` holds (a resume that
quietly started over would also end with the right weights), finish without error, leave no
temporary file, and end with ``last.pt``, ``best.pt`` (weights and optimizer state) and
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
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from conftest import assert_user_error
from forkcli import SERVER_ENV, Forked, ForkServer
from handshake import WriteStops
from zoo.errors import RunError
from zoo.runner import RunConfig, run
from zoo.testhooks import KILL_WORKER_ENV

SEED = 20261125
EPOCHS = 3
STEPS_PER_EPOCH = 4  # 32 training images in batches of 8
COMMAND = (
    "run",
    "tudui",
    "adam",
    "--data",
    "fake",
    "--limit-train",
    "32",
    "--limit-val",
    "8",
    "--batch-size",
    "8",
    "--epochs",
    str(EPOCHS),
    "--device",
    "cpu",
    "--seed",
    "0",
)
# Where the kills are aimed, in a seeded order:
#   start-up          at the process's first write (before any training)
#   run-dir-write     inside the n-th write of config.yaml, metrics.jsonl or status.json
#   checkpoint-write  inside the n-th write of best.pt or last.pt
#   last-write        inside the n-th write of last.pt
#   training          after the n-th training step (ZOO_TEST_KILL_WORKER)
MOMENTS = ["start-up"] * 2 + ["run-dir-write"] * 2 + ["checkpoint-write"] * 3 + ["last-write"] * 3 + ["training"] * 2
KILLS_PER_RUN = 3  # then a new run: kills land in every epoch, on fresh and on resumed processes
RUN_FILES = ("config.yaml", "metrics.jsonl", "status.json")
TEMP = re.compile(r"^\..+\.tmp$")  # atomic_write's temporary files: .NAME.XXXXXXXX.tmp
BANNER = re.compile(r"epochs (\d+)-\d+ ->")  # the runner's first line names the first epoch it trains


@dataclass
class Trial:
    """One kill: where it is aimed (``where`` and ``draw`` are uniform draws in [0, 1)) and what it left."""

    moment: str
    where: float  # which write or step, as a fraction of those still to come
    draw: float  # which stop of the write: "partial" below 0.5, "complete" above
    target: str = ""  # the stop or step the kill was aimed at
    epochs_before: int = 0
    epochs_after: int = 0
    stops: list[tuple[str, str]] = field(default_factory=list)  # every (point, file) the process stopped at
    left: dict[str, int] = field(default_factory=dict)  # temporary files right after the kill: name -> bytes

    @property
    def point(self) -> str:
        return "partial" if self.draw < 0.5 else "complete"

    def completed(self, name: str) -> int:
        """Writes of ``name`` that were let go past their "complete" stop (and so were renamed)."""
        released = self.stops[:-1] if self.moment != "training" else self.stops
        return sum(1 for stop in released if stop == ("complete", name))

    def __str__(self) -> str:
        return (
            f"{self.moment:<16}  {self.target:<28}  epochs {self.epochs_before} -> {self.epochs_after}  "
            f"stops {len(self.stops)}  left {self.left}"
        )


def plan() -> list[Trial]:
    rng = random.Random(SEED)
    return [Trial(moment, rng.random(), rng.random()) for moment in rng.sample(MOMENTS, len(MOMENTS))]


def temp_files(out: Path) -> dict[str, int]:
    return {p.name: p.stat().st_size for p in out.iterdir() if TEMP.match(p.name)} if out.is_dir() else {}


def checkpointed_epochs(out: Path) -> int:
    """Epochs in ``last.pt`` (0: none yet), after checking that both checkpoints open."""
    for name in ("best.pt", "last.pt"):
        if (out / name).exists():
            ckpt = torch.load(out / name, weights_only=True)  # raises if a kill left it unreadable
            assert ckpt["format"] == "zoo.checkpoint" and ckpt["spec"]["model"] == "tudui/tudui", name
    return int(torch.load(out / "last.pt", weights_only=True)["epoch"]) if (out / "last.pt").exists() else 0


def first_epoch(log: str) -> int | None:
    """The first epoch a process set out to train, or None if it was killed before saying."""
    match = BANNER.search(log)
    return int(match.group(1)) if match else None


def snapshot(out: Path) -> dict[str, bytes | None]:
    return {name: (out / name).read_bytes() if (out / name).exists() else None for name in ("last.pt", "best.pt")}


class Runs:
    """``zoo run COMMAND --out OUT [--resume]`` as forked processes, logged under ``logs``."""

    def __init__(self, server: ForkServer, env: dict[str, str], logs: Path):
        self.server, self.env, self.logs = server, env, logs
        self.stops = WriteStops(logs / "stop.json")
        self.count = 0

    def start(self, out: Path, **env: str) -> tuple[Forked, Path]:
        self.count += 1
        log = self.logs / f"{self.count:02d}-{out.name}.log"
        args = [*COMMAND, "--out", str(out), *(["--resume"] if out.exists() else [])]
        return self.server.start(args, cwd=out.parent, env={**self.env, **env}, path=[], stdout=log, stderr=log), log

    def start_stopping(self, out: Path, **env: str) -> tuple[Forked, Path]:
        """A run whose every atomic write stops twice for the test (``self.stops``)."""
        return self.start(out, **self.stops.env(), **env)


def aim(trial: Trial, runs: Runs, out: Path) -> tuple[Forked, Path, dict | None]:
    """Start the trial's run and kill it where the trial says; returns the stop it was killed at
    (None for a kill by step, which the process does itself)."""
    remaining = EPOCHS - trial.epochs_before
    n = 1 + int(trial.where * remaining)  # every epoch writes last.pt: the n-th write comes
    env: dict[str, str] = {}
    names: tuple[str, ...] = ()  # the files whose n-th write is aimed at; () for any file
    if trial.moment == "training":
        step = 1 + int(trial.where * remaining * STEPS_PER_EPOCH)
        trial.target = f"after step {step}"
        env[KILL_WORKER_ENV] = f"0:{step}:SIGKILL"
    elif trial.moment == "start-up":
        n, trial.target = 1, f"first write, {trial.point}"
    else:
        names = {"run-dir-write": RUN_FILES, "checkpoint-write": ("last.pt", "best.pt"), "last-write": ("last.pt",)}[
            trial.moment
        ]
        if trial.moment == "run-dir-write":
            n = 1 + int(trial.where * 2)  # every process writes at least config.yaml and status.json first
        trial.target = f"write {n} of {'/'.join(names)}, {trial.point}"

    def aimed(stop: dict) -> bool:
        if trial.moment == "training" or stop["point"] != trial.point or (names and stop["name"] not in names):
            return False
        writes = {s["temp"] for s in runs.stops.seen if not names or s["name"] in names}  # one temp file a write
        return len(writes) == n

    proc, log = runs.start_stopping(out, **env)
    try:
        stop = runs.stops.until(proc, aimed)
        if stop is not None:
            proc.kill()
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        trial.stops = [(s["point"], s["name"]) for s in runs.stops.seen]
    return proc, log, stop


def check_kill(trial: Trial, proc: Forked, log: Path, stop: dict | None, out: Path, before: dict) -> int:
    """What the kill's point implies; returns the epochs ``last.pt`` now holds."""
    text = log.read_text()
    if trial.moment == "training":
        assert proc.returncode == -signal.SIGKILL, f"the run was not killed after its step:\n{text}"
    else:
        assert stop is not None, f"the run ended before the kill:\n{text}"
    assert "Traceback" not in text and "zoo: error" not in text, text
    assert first_epoch(text) in (None, trial.epochs_before + 1), f"last.pt held {trial.epochs_before} epochs:\n{text}"
    trial.left = temp_files(out)
    trial.epochs_after = checkpointed_epochs(out)
    # last.pt holds the epochs whose write of it completed, not one more or less
    assert trial.epochs_after == trial.epochs_before + trial.completed("last.pt")
    if trial.moment == "training":
        step = int(trial.target.split()[-1])
        assert trial.epochs_after == trial.epochs_before + (step - 1) // STEPS_PER_EPOCH
    for name, old in before.items():  # no completed write, no change
        if not trial.completed(name):
            assert snapshot(out)[name] == old, f"{name} changed without a completed write"
    if stop is not None:  # killed inside that write: its temporary file is there
        temp = Path(stop["temp"])
        assert temp.name in trial.left, (stop, trial.left)
        name = Path(stop["path"]).name
        if stop["point"] == "complete" and name in ("last.pt", "best.pt"):  # a whole checkpoint, not in place
            epoch = torch.load(temp, weights_only=True)["epoch"]
            expected = (trial.epochs_after + 1,) if name == "last.pt" else (trial.epochs_after, trial.epochs_after + 1)
            assert epoch in expected, (stop, epoch)
    return trial.epochs_after


def uninterrupted(out: Path, env: dict[str, str]) -> None:
    """The reference: one plain ``python -m zoo`` run, never stopped."""
    log = out.parent / "reference.log"
    with open(log, "w") as f:
        code = subprocess.run(
            [sys.executable, "-m", "zoo", *COMMAND, "--out", str(out)],
            cwd=out.parent,
            env=env,
            stdout=f,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            timeout=300,
        ).returncode
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
    lines = [
        [
            {k: v for k, v in json.loads(line).items() if k != "seconds"}
            for line in (d / "metrics.jsonl").read_text().splitlines()
        ]
        for d in (out, reference)
    ]
    assert lines[0] == lines[1], out


@pytest.mark.slow
def test_sigkill_at_chosen_moments_then_resume_equals_an_uninterrupted_run(tmp_path, fork_server):
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
                trial.epochs_before, before = done, snapshot(out)
                proc, log, stop = aim(trial, runs, out)
                done = check_kill(trial, proc, log, stop, out, before)

                # Resume a copy, leftovers and all, to the end.
                copy = tmp_path / f"resumed-{number:02d}"
                if out.exists():
                    shutil.copytree(out, copy, symlinks=True)
                proc, log = runs.start(copy)
                assert proc.wait(timeout=300) == 0, log.read_text()
                assert first_epoch(log.read_text()) in ((done + 1,) if done < EPOCHS else (None, done + 1)), (
                    log.read_text()
                )
                assert temp_files(copy) == {}, "the resumed run left temporary files behind"
                resumed.append(copy)
            reference.result()
            for copy in resumed:
                assert_same_run(copy, tmp_path / "reference" / "run")
        finally:
            print("\n".join(map(str, trials)))  # pytest shows it when the test fails
    in_a_write = [t for t in trials if any(n.startswith((".last.pt.", ".best.pt.")) for n in t.left)]
    assert len(in_a_write) >= sum(t.moment in ("checkpoint-write", "last-write") for t in trials)


# -- a full disk, an unwritable run directory --------------------------------------------------


def tiny(out: Path, **overrides) -> RunConfig:
    fields = dict(
        model="tudui",
        optimizer="adam",
        data="fake",
        epochs=1,
        batch_size=16,
        limit_train=32,
        limit_val=16,
        out=str(out),
        quiet=True,
        device="cpu",
    )
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
    out = tmp_path / "run"
    run(tiny(out))
    before = (out / "last.pt").read_bytes()
    full = SimpleNamespace(total=2**30, used=2**30 - 4096, free=4096)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: full)  # wherever the runner asks
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
