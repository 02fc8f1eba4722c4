"""``zoo sweep`` at its edges: a sweep killed by SIGKILL while its trial trains on, a signal sent
by pid to a sweep at a terminal, ``--resume`` with nothing to resume, trial options that would
fail every trial, seeded samplers, and the default directory of a qualified model name.

Every kill and signal is sent while a trial is held at a point of its checkpoint write (the
write handshake of zoo/testhooks.py), so what each test asserts follows from that point."""

from __future__ import annotations

import json
import os
import pty
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import assert_user_error
from handshake import WriteStops
from test_sweep import parse
from test_sweep_runs import FAKE, SPY_LOG
from zoo.cli import main
from zoo.runs import read_metrics
from zoo.sweep import plan_from_args
from zoo.sweep_space import Choices, Range, Space
from zoo.sweep_study import Study, process_stamp

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl, /proc and ptys: Linux")

# A plugin in every trial process: which process started which run at which epoch, and the epochs it finished.
SPY = f"""
import json, os
from zoo import hookimpl

def _log(**row):
    with open(os.environ["{SPY_LOG}"], "a") as f:
        f.write(json.dumps({{"pid": os.getpid(), **row}}) + "\\n")

@hookimpl
def on_run_start(run):
    _log(run=os.path.basename(run.run_dir), start_epoch=run.start_epoch)

@hookimpl
def on_epoch_end(run, epoch, metrics):
    _log(run=os.path.basename(run.run_dir), epoch=epoch)
"""

TWO_EPOCHS = ["sweep", "tudui", "sgd", "--lr", "0.01", "--epochs", "2", *FAKE, "--out", "s"]


def first_checkpoint(stop: dict) -> bool:
    """Trial 0 is writing its epoch-1 last.pt: it has trained epoch 1 and saved nothing yet."""
    return stop["path"].endswith(os.path.join("trial-0000", "last.pt"))


class Pid:
    """A process that is not our child, as WriteStops sees one: running while it exists (a zombie is gone)."""

    def __init__(self, pid: int):
        self.pid = pid

    def poll(self) -> int | None:
        return None if process_stamp(self.pid) is not None else 0


def launches(root: Path, trial: str = "trial-0000") -> list[str]:
    return [line for line in (root / "logs" / f"{trial}.log").read_text().splitlines() if line.startswith("$ zoo run")]


# -- 1. kill -9 of the sweep: --resume never trains a trial in two processes -----------------------


@pytest.mark.slow
@linux_only
def test_resume_after_kill_9_waits_for_the_trial_the_killed_sweep_left_training(zoo_cli, plugin_dist, tmp_path):
    zoo_cli.paths.append(str(plugin_dist("sweepedgespy", SPY)))
    log = tmp_path / "spy.jsonl"
    stops = WriteStops(tmp_path / "stop.json")
    sweep = subprocess.Popen([sys.executable, "-m", "zoo", *TWO_EPOCHS], cwd=zoo_cli.cwd,
                             env=zoo_cli.environment({**stops.env(), SPY_LOG: str(log)}),
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                             start_new_session=True)  # fmt: skip
    assert stops.until(sweep, first_checkpoint) is not None, sweep.stderr.read()
    trainer = Pid(json.loads(log.read_text().splitlines()[0])["pid"])  # trial 0's zoo run, held in its write
    resumed = None
    try:
        os.kill(sweep.pid, signal.SIGKILL)  # the sweep alone: its trial's zoo run lives on
        sweep.wait()
        resumed = subprocess.Popen([sys.executable, "-m", "zoo", *TWO_EPOCHS, "--resume", "--json"],
                                   cwd=zoo_cli.cwd, env=zoo_cli.environment({SPY_LOG: str(log)}),
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
        said = []
        while (line := resumed.stderr.readline()) and "waiting for it to stop" not in line:
            said.append(line)
        assert line, f"--resume did not wait for pid {trainer.pid}: {''.join(said)}"
        assert f"pid {trainer.pid}" in line and trainer.poll() is None
        assert len(launches(zoo_cli.cwd / "s")) == 1  # nothing started in trial-0000 while it trains
        stops.release_all(trainer)  # it ends its epoch, checkpointed, and stops: its sweep is gone
        out, err = resumed.communicate(timeout=600)
    finally:
        for proc in (trainer, resumed):
            if proc is not None and proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
    assert resumed.returncode == 0, err
    (trial,) = json.loads(out)["trials"]
    assert (trial["state"], trial["epochs"]) == ("complete", 2)
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    assert [(r["pid"] == trainer.pid, r.get("start_epoch"), r.get("epoch")) for r in rows] == [
        (True, 0, None), (True, None, 1),  # the killed sweep's trial stopped after its epoch 1 ...
        (False, 1, None), (False, None, 2),  # ... and --resume continued from that checkpoint
    ]  # fmt: skip
    assert [m["epoch"] for m in read_metrics(zoo_cli.cwd / "s" / "trial-0000")] == [1, 2]
    assert launches(zoo_cli.cwd / "s")[1].endswith("--resume")
    trial_log = (zoo_cli.cwd / "s" / "logs" / "trial-0000.log").read_text()
    assert "zoo: stopped: stopped by SIGTERM after epoch 1" in trial_log  # once: not "at once by a second"


# -- 2. a signal sent by pid to a sweep at a terminal reaches its trials ----------------------------

# Runs zoo as the leader of a new session whose controlling terminal is stdin (a pty): the sweep
# is then the terminal's foreground process group, as when typed at a shell.
AT_TERMINAL = (
    "import fcntl, os, sys, termios; os.setsid(); fcntl.ioctl(0, termios.TIOCSCTTY, 0); "
    "os.execv(sys.executable, [sys.executable, '-m', 'zoo', *sys.argv[1:]])"
)


def at_terminal(zoo_cli, stops: WriteStops) -> tuple[subprocess.Popen, int]:
    """The two-epoch sweep started at a pseudo-terminal, held in trial 0's first checkpoint write;
    and the terminal's master side."""
    master, slave = pty.openpty()
    try:
        sweep = subprocess.Popen([sys.executable, "-c", AT_TERMINAL, *TWO_EPOCHS], cwd=zoo_cli.cwd,
                                 env=zoo_cli.environment(stops.env()), stdin=slave,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
    finally:
        os.close(slave)
    assert stops.until(sweep, first_checkpoint) is not None, sweep.stderr.read()
    assert os.tcgetpgrp(master) == sweep.pid  # the sweep is the terminal's foreground group
    return sweep, master


def stopped_after_epoch_1(zoo_cli, sweep: subprocess.Popen, stops: WriteStops, signum: int) -> None:
    """The sweep says it stops; its trial, released, ends epoch 1 checkpointed and stops there."""
    assert sweep.stderr.readline().startswith(f"zoo: {signal.Signals(signum).name}: stopping")
    stops.release_all(sweep)
    err = sweep.stderr.read()
    assert sweep.wait() == 128 + signum, err
    trial = json.loads((zoo_cli.cwd / "s" / "sweep.json").read_text())["trials"][0]
    assert trial["state"] == "running", trial  # stopped by the signal, for --resume; not run to its end
    assert [m["epoch"] for m in read_metrics(zoo_cli.cwd / "s" / "trial-0000")] == [1]
    assert (zoo_cli.cwd / "s" / "trial-0000" / "last.pt").exists()


@pytest.mark.slow
@linux_only
def test_sigterm_by_pid_to_a_sweep_at_a_terminal_reaches_its_trial(zoo_cli, tmp_path):
    stops = WriteStops(tmp_path / "stop.json")
    sweep, master = at_terminal(zoo_cli, stops)
    try:
        sweep.send_signal(signal.SIGTERM)  # as `kill PID` from another shell: the terminal sent nothing
        stopped_after_epoch_1(zoo_cli, sweep, stops, signal.SIGTERM)
    finally:
        if sweep.poll() is None:
            sweep.kill()
        os.close(master)


@pytest.mark.slow
@linux_only
def test_ctrl_c_at_the_terminal_reaches_the_trial_once_and_it_stops_checkpointed(zoo_cli, tmp_path):
    # Passed on by the sweep, a Ctrl-C must not reach the trial from the terminal too: a second
    # SIGINT stops a run at once, in the middle of the write it is held in.
    stops = WriteStops(tmp_path / "stop.json")
    sweep, master = at_terminal(zoo_cli, stops)
    try:
        os.write(master, b"\x03")  # the terminal's interrupt character: SIGINT to its foreground group
        stopped_after_epoch_1(zoo_cli, sweep, stops, signal.SIGINT)
    finally:
        if sweep.poll() is None:
            sweep.kill()
        os.close(master)


# -- 3. --resume with nothing to resume ---------------------------------------------------------------


def sweep_study(url: str, name: str) -> Study:
    space = Space({"optimizer": Choices(("sgd",))})
    return Study.open(url, name, direction="maximize", sampler="grid", prune="none", space=space, seeds=[0],
                      target=None, spec={}, resume=False)  # fmt: skip


@pytest.mark.parametrize(
    "storage, needle",
    [
        (None, "s holds no sweep (no study.db)"),
        ("shared.db", "no study 'typo' in sqlite:///"),
        ("missing.db", "missing.db does not exist"),
        ("journal:shared.log", "no study 'typo' in journal:"),
    ],
)
def test_resume_refuses_a_directory_or_study_that_is_no_sweep_and_writes_nothing(
    storage, needle, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "s").mkdir()
    if storage in ("shared.db", "journal:shared.log"):
        url = f"sqlite:///{tmp_path / 'shared.db'}" if storage == "shared.db" else f"journal:{tmp_path / 'shared.log'}"
        sweep_study(url, "mine")
    before = sorted(p.name for p in tmp_path.rglob("*"))
    where = ["--storage", storage, "--study", "typo"] if storage else []
    code = main(["sweep", "tudui", "sgd", "--lr", "0.1", *FAKE, "--epochs", "1", "--out", "s", "--resume", *where])
    assert code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line]
    assert len(errors) == 1 and errors[0].startswith("zoo: error: nothing to resume") and needle in errors[0], errors
    assert sorted(p.name for p in tmp_path.rglob("*")) == before
    if storage == "shared.db":
        assert "it holds 'mine'" in errors[0]


# -- 4. trial options that would fail every trial -----------------------------------------------------


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["sgd", "--augment", "nosuch"], "unknown augmentation 'nosuch'"),
        (["sgd,adam", "--opt", "momentum=0,0.9"], "optimizer 'adam' has no parameter 'momentum'"),
        (["sgd", "--input-size", "4"], "fails a dry forward pass on input (2, 3, 4, 4)"),
        (["sgd", "--sched", "cosine", "--sched-opt", "gama=0.5"], "scheduler 'cosine' has no parameter 'gama'"),
        (["sgd", "--label-smoothing", "1.5"], "--label-smoothing must be a number in [0, 1)"),
    ],
)
def test_trial_options_that_fail_every_trial_are_refused_before_the_sweep_starts(
    argv, needle, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    assert main(["sweep", "tudui", *argv, "--lr", "0.1", *FAKE, "--epochs", "1", "--quiet"]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line]
    assert len(errors) == 1 and errors[0].startswith("zoo: error:") and needle in errors[0], errors
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_a_quiet_sweep_with_no_completed_trial_says_so_in_one_error_line(zoo_cli):
    # A bad value fails its own trials only: the sweep runs them, and then says none completed.
    drawn = ["--lr", "1e-3..1e-1", "--sampler", "random", "--trials", "1", "--seed", "5"]
    result = zoo_cli("sweep", "tudui", "sgd", "--opt", "nesterov=maybe", *drawn, *FAKE, "--epochs", "1", "--out", "s",
                     "--quiet", "--json")  # fmt: skip
    assert_user_error(result, 1, "no trial of s completed (1 failed)", "trial 0:", "nesterov")
    sweep = json.loads(result.stdout)
    assert sweep["trials"][0]["state"] == "failed"
    assert (sweep["sampler"], sweep["seed"], sweep["trials"][0]["seed"]) == ("random", 5, 5)  # what drew the lr


# -- 5. the samplers are seeded by --seed ---------------------------------------------------------------


def drawn(url: str, sampler: str, seed: int, handles: int = 1) -> list[tuple[int, float, int]]:
    """(number, lr, seed) of every trial of a 4-draw study, claimed in turn by ``handles`` handles."""
    space = Space({"optimizer": Choices(("sgd",)), "lr": Range(1e-4, 1e-1, log=True, integer=False)})
    options = dict(direction="maximize", sampler=sampler, prune="none", space=space, seeds=[seed, seed + 1],
                   target=8, spec={}, resume=False)  # fmt: skip
    studies = [Study.open(url, "st", **options) for _ in range(handles)]
    claimed = []
    while (got := studies[len(claimed) % handles].claim()) is not None:
        claimed.append((got.number, got.params["lr"], got.seed))
    return claimed


@pytest.mark.parametrize("sampler", ["random", "tpe"])
def test_the_same_sweep_draws_the_same_values_and_another_seed_others(sampler, tmp_path):
    one = drawn(f"sqlite:///{tmp_path / 'one.db'}", sampler, seed=3)
    assert len(one) == 8 and len({lr for _, lr, _ in one}) == 4
    assert drawn(f"sqlite:///{tmp_path / 'two.db'}", sampler, seed=3) == one
    assert drawn(f"journal:{tmp_path / 'three.log'}", sampler, seed=3, handles=2) == one  # whoever asks
    assert [lr for _, lr, _ in drawn(f"sqlite:///{tmp_path / 'four.db'}", sampler, seed=4)] != [lr for _, lr, _ in one]


# -- 6. the default directory of a qualified model name ----------------------------------------------


def test_the_default_sweep_directory_of_a_qualified_name_has_no_slash(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    plan = plan_from_args(parse("tudui/tudui", "sgd", "--lr", "0.1"))
    assert plan.sweep_dir.parent == Path("sweeps") and plan.sweep_dir.name.startswith("tudui-tudui-")
    assert plan.study == plan.sweep_dir.name
