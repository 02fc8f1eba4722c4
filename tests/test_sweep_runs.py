"""``zoo sweep`` training for real: each trial a ``zoo run`` process. Pruning, two sweeps sharing
one study, a SIGKILL mid-trial and ``--resume``, a failed trial. Kept small: Tudui, a few dozen
samples, one or two epochs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from handshake import WriteStops
from zoo.runs import read_metrics

pytestmark = pytest.mark.slow

FAKE = ["--data", "fake", "--limit-train", "32", "--limit-val", "16", "--batch-size", "16", "--device", "cpu"]
SPY_LOG = "ZOO_TESTS_SWEEP_SPY"

# A plugin in every trial process: which run started at which epoch, which epochs it finished.
SPY = f"""
import json, os
from zoo import hookimpl

def _log(**row):
    with open(os.environ["{SPY_LOG}"], "a") as f:
        f.write(json.dumps(row) + "\\n")

@hookimpl
def on_run_start(run):
    _log(run=os.path.basename(run.run_dir), start_epoch=run.start_epoch)

@hookimpl
def on_epoch_end(run, epoch, metrics):
    _log(run=os.path.basename(run.run_dir), epoch=epoch)
"""


def spied(log: Path) -> dict[str, dict[str, list[int]]]:
    """Per trial run directory: the start epochs of its processes and the epochs they finished."""
    out: dict[str, dict[str, list[int]]] = {}
    for line in log.read_text().splitlines():
        row = json.loads(line)
        seen = out.setdefault(row["run"], {"starts": [], "epochs": []})
        seen["starts" if "start_epoch" in row else "epochs"].append(row.get("start_epoch", row.get("epoch")))
    return out


def test_a_grid_with_median_pruning_stops_a_hopeless_trial_and_reports(zoo_cli):
    # Two good learning rates complete first; lr 1e-9 is still at chance after epoch 1, below the
    # median of the two at epoch 1: pruned there, before its last epoch, its checkpoint kept.
    # On the CPU a seeded run is the same every time, so the verdict is too.
    data = ["--data", "digits", "--limit-train", "128", "--limit-val", "32", "--batch-size", "16", "--device", "cpu"]
    result = zoo_cli("sweep", "tudui", "adam", "--lr", "0.003,0.002,1e-9", "--epochs", "2", "--prune", "median",
                     *data, "--out", "s", "--json")  # fmt: skip
    assert result.returncode == 0, result.stderr
    sweep = json.loads(result.stdout)
    assert [(t["params"]["lr"], t["state"], t["epochs"]) for t in sweep["trials"]] == [
        (0.003, "complete", 2),
        (0.002, "complete", 2),
        (1e-9, "pruned", 1),
    ]
    root = zoo_cli.cwd / "s"
    assert (root / "trial-0002" / "last.pt").exists()  # stopped through the runner's SIGINT path
    assert json.loads((root / "sweep.json").read_text()) == sweep
    assert sweep["best"]["number"] in (0, 1) and sweep["best"]["value"] > 0.5
    lines = [line for line in result.stderr.splitlines() if line.startswith("[")]
    assert len(lines) == 3 and lines[2].startswith("[3/3] trial 2  optimizer=adam lr=1e-09 seed=0  pruned")
    table = (root / "summary.md").read_text()
    assert "| adam | 1e-09 | 1 | - | 1 |" in table and table.index("| adam | 0.00") < table.index("1e-09")


def test_two_sweeps_on_one_study_train_each_configuration_once(zoo_cli, tmp_path):
    # Started together on one SQLite study (one of them with two slots): whoever creates the
    # study enqueues the grid, the other waits for it, and each trial is claimed by one slot.
    common = ["sweep", "tudui", "sgd", "--lr", "0.01,0.02,0.03,0.04", "--epochs", "1", *FAKE, "--out", "s",
              "--storage", str(tmp_path / "shared.db"), "--study", "shared", "--json", "--quiet"]  # fmt: skip
    env = zoo_cli.environment()
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "zoo", *common, *extra],
            cwd=zoo_cli.cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for extra in ([], ["--parallel", "2"])
    ]
    outputs = [proc.communicate(timeout=600) for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], [err for _, err in outputs]
    last = json.loads((zoo_cli.cwd / "s" / "sweep.json").read_text())
    trials = last["trials"]
    assert sorted(t["params"]["lr"] for t in trials) == [0.01, 0.02, 0.03, 0.04]
    assert {t["state"] for t in trials} == {"complete"}
    for t in trials:
        run_dir = zoo_cli.cwd / "s" / f"trial-{t['number']:04d}"
        assert [m["epoch"] for m in read_metrics(run_dir)] == [1]
        log = (zoo_cli.cwd / "s" / "logs" / f"{run_dir.name}.log").read_text()
        assert log.count("$ zoo run ") == 1  # started once, by one process
    assert len(list((zoo_cli.cwd / "s").glob("trial-*"))) == 4


def test_a_sweep_killed_mid_trial_resumes_without_training_anything_twice(zoo_cli, plugin_dist, tmp_path):
    zoo_cli.paths.append(str(plugin_dist("sweepspy", SPY)))
    log = tmp_path / "spy.jsonl"
    command = ["sweep", "tudui", "sgd", "--lr", "0.01,0.02", "--epochs", "2", *FAKE, "--out", "s"]
    stops = WriteStops(tmp_path / "stop.json")
    env = zoo_cli.environment({**stops.env(), SPY_LOG: str(log)})
    sweep = subprocess.Popen([sys.executable, "-m", "zoo", *command], cwd=zoo_cli.cwd, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                             start_new_session=True)  # fmt: skip
    seen = []

    def epoch_two_of_trial_one(stop: dict) -> bool:
        # trial 1 has finished epoch 1 (last.pt, metrics, hooks) and is saving epoch 2
        if stop["path"].endswith(os.path.join("trial-0001", "last.pt")) and stop["point"] == "partial":
            seen.append(stop)
        return len(seen) == 2

    try:
        assert stops.until(sweep, epoch_two_of_trial_one) is not None, sweep.stderr.read()
    finally:
        os.killpg(sweep.pid, signal.SIGKILL)  # the sweep, as kill -9 on its group would ...
        sweep.wait()
    # ... and its trial, held in its write (in a session of its own, the sweep's group spares it)
    os.kill(json.loads((zoo_cli.cwd / "s" / "trial-0001" / "status.json").read_text())["pid"], signal.SIGKILL)
    (tmp_path / "stop.json").unlink(missing_ok=True)

    resumed = zoo_cli(*command, "--resume", "--json", env={SPY_LOG: str(log)})
    assert resumed.returncode == 0, resumed.stderr
    trials = json.loads(resumed.stdout)["trials"]
    assert [(t["number"], t["state"], t["epochs"]) for t in trials] == [(0, "complete", 2), (1, "complete", 2)]
    runs = spied(log)
    assert runs["trial-0000"] == {"starts": [0], "epochs": [1, 2]}  # finished before the kill: kept
    assert runs["trial-0001"] == {"starts": [0, 1], "epochs": [1, 2]}  # continued from its epoch-1 last.pt
    assert [m["epoch"] for m in read_metrics(zoo_cli.cwd / "s" / "trial-0001")] == [1, 2]


def test_a_failed_trial_is_recorded_and_no_completed_trial_is_exit_1(zoo_cli):
    result = zoo_cli("sweep", "tudui", "sgd", "--opt", "nesterov=maybe", *FAKE, "--epochs", "1", "--out", "s", "--json")
    assert result.returncode == 1, result.stderr
    (trial,) = json.loads(result.stdout)["trials"]
    assert trial["state"] == "failed" and "nesterov" in trial["error"], trial
    assert "failed  error:" in result.stderr


def test_sigint_stops_the_sweep_and_its_trial_which_resume_continues(zoo_cli, tmp_path):
    # The trial is held in its epoch-1 checkpoint write; SIGINT goes to the sweep alone, which
    # passes it on and says so; then the trial ends its epoch, checkpointed, and stops (130).
    command = ["sweep", "tudui", "sgd", "--lr", "0.01", "--epochs", "2", *FAKE, "--out", "s"]
    stops = WriteStops(tmp_path / "stop.json")
    sweep = subprocess.Popen([sys.executable, "-m", "zoo", *command], cwd=zoo_cli.cwd,
                             env=zoo_cli.environment(stops.env()), stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)  # fmt: skip
    held = stops.until(sweep, lambda stop: stop["path"].endswith("last.pt"))
    assert held is not None
    sweep.send_signal(signal.SIGINT)
    assert sweep.stderr.readline().startswith("zoo: SIGINT: stopping")  # said once passed on
    stops.release_all(sweep)
    err = sweep.stderr.read()
    assert sweep.wait() == 130 and "zoo: stopped: stopped by SIGINT" in err and "--resume" in err, err
    trial = json.loads((zoo_cli.cwd / "s" / "sweep.json").read_text())["trials"][0]
    assert trial["state"] == "running"
    assert [m["epoch"] for m in read_metrics(zoo_cli.cwd / "s" / "trial-0000")] == [1]

    resumed = zoo_cli(*command, "--resume", "--json")
    assert resumed.returncode == 0, resumed.stderr
    (trial,) = json.loads(resumed.stdout)["trials"]
    assert (trial["state"], trial["epochs"]) == ("complete", 2)
    log = (zoo_cli.cwd / "s" / "logs" / "trial-0000.log").read_text()
    launches = [line for line in log.splitlines() if line.startswith("$ zoo run ")]
    assert len(launches) == 2 and launches[1].endswith("--resume")  # continued, not started over
