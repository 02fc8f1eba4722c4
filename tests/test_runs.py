"""``zoo runs``: every run directory as one row, finished, interrupted or failed, never a crash."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

from conftest import assert_user_error
from runfiles import metrics_line, write_run
from zoo.errors import UsageError
from zoo.processes import process_stamp
from zoo.runs import list_runs


@pytest.fixture
def runs_root(zoo_cli):
    """runs/ as a user's would look: one finished run, one interrupted, one broken."""
    root = zoo_cli.cwd / "runs"
    finished = write_run(root, "tudui-sgd-20261125-210000", epochs=10, started="2026-11-25T21:00:00+00:00")
    lines = (finished / "metrics.jsonl").read_text().splitlines()
    lines[-1] = json.dumps({**json.loads(lines[-1]), "val_accuracy": 0.5})  # the best epoch is not the last
    (finished / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    write_run(
        root, "tudui-adam-20261125-220000", optimizer="adam", epochs=10, done=4, started="2026-11-25T22:00:00+00:00"
    )
    broken = write_run(root, "vgg16-sgd-20261125-213000", model="vgg16", started="2026-11-25T21:30:00+00:00")
    (broken / "metrics.jsonl").write_text('{"epoch": 1, "train_loss": 2.1}\nnot json\n')
    (root / "notes").mkdir()  # not a run: other files, none of a run's
    (root / "notes" / "ideas.txt").write_text("try adam\n")
    (root / "README.txt").write_text("my experiments\n")
    return root


def test_runs_json_finished_interrupted_broken(zoo_cli, runs_root):
    result = zoo_cli("runs", "--json")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [(r["run_dir"], r["status"]) for r in rows] == [  # oldest first
        (os.path.join("runs", "tudui-sgd-20261125-210000"), "finished"),
        (os.path.join("runs", "vgg16-sgd-20261125-213000"), "failed"),
        (os.path.join("runs", "tudui-adam-20261125-220000"), "interrupted"),
    ]
    finished, broken, interrupted = rows
    assert finished == {
        "run_dir": os.path.join("runs", "tudui-sgd-20261125-210000"),
        "model": "tudui",
        "optimizer": "sgd",
        "dataset": "digits",
        "epochs": 10,
        "epochs_done": 10,
        "best_val_accuracy": metrics_line(9)["val_accuracy"],  # the best line's, not the last's (0.5)
        "status": "finished",
        "started": "2026-11-25T21:00:00+00:00",
        "error": None,
    }
    assert (interrupted["epochs_done"], interrupted["epochs"], interrupted["error"]) == (4, 10, None)
    assert interrupted["best_val_accuracy"] < finished["best_val_accuracy"]
    assert broken["model"] == "vgg16" and broken["error"] == "metrics.jsonl line 2 is not a JSON object with an 'epoch'"


def test_runs_table(zoo_cli, runs_root):
    result = zoo_cli("runs", "runs")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == [
        "RUN",
        "MODEL",
        "OPTIMIZER",
        "DATASET",
        "EPOCHS",
        "BEST",
        "ACC",
        "STATUS",
        "STARTED",
        "ERROR",
    ]
    assert "10/10" in lines[1] and "finished" in lines[1]
    assert "failed" in lines[2] and "metrics.jsonl line 2" in lines[2]
    assert "4/10" in lines[3] and "interrupted" in lines[3]


def test_runs_errors_and_empty(zoo_cli):
    assert_user_error(zoo_cli("runs"), 2, "'runs' does not exist")
    (zoo_cli.cwd / "empty").mkdir()
    result = zoo_cli("runs", "empty", "--json")
    assert (result.returncode, json.loads(result.stdout)) == (0, [])
    result = zoo_cli("runs", "empty")
    assert result.returncode == 0 and "no runs under 'empty'" in result.stderr


def test_status_json_is_read_when_present_and_inferred_otherwise(tmp_path):
    write_run(
        tmp_path,
        "nan",
        epochs=10,
        done=3,
        started="2026-11-25T21:00:00Z",
        status={
            "status": "failed",
            "updated": "2026-11-25T21:03:00Z",
            "epochs_done": 3,
            "error": "loss is NaN at epoch 4",
        },
    )
    write_run(
        tmp_path,
        "now",
        epochs=10,
        done=2,
        started="2026-11-25T21:01:00Z",
        status={"status": "running", "updated": "2026-11-25T21:02:00Z", "epochs_done": 2},
    )
    # killed before its first epoch: no metrics.jsonl yet, status.json says so
    starting = write_run(
        tmp_path,
        "starting",
        done=0,
        started="2026-11-25T21:02:00Z",
        status={"status": "interrupted", "updated": "2026-11-25T21:02:05Z", "epochs_done": 0},
    )
    (starting / "metrics.jsonl").unlink()
    stopped = write_run(tmp_path, "stopped", epochs=10, done=10, started="2026-11-25T21:03:00Z")
    (stopped / "status.json").write_text("{half")  # unreadable: fall back to inferring
    rows = {r["run_dir"].rsplit(os.sep, 1)[-1]: r for r in list_runs(tmp_path)}
    assert (rows["nan"]["status"], rows["nan"]["error"]) == ("failed", "loss is NaN at epoch 4")
    assert (rows["now"]["status"], rows["now"]["epochs_done"]) == ("running", 2)
    assert (rows["starting"]["status"], rows["starting"]["epochs_done"], rows["starting"]["error"]) == (
        "interrupted",
        0,
        None,
    )
    assert rows["stopped"]["status"] == "finished"


def test_broken_runs_say_why(tmp_path):
    no_config = write_run(tmp_path, "no-config", started="2026-11-25T21:00:00Z")
    (no_config / "config.yaml").unlink()
    bad_yaml = write_run(tmp_path, "bad-yaml", started="2026-11-25T21:00:00Z")
    (bad_yaml / "config.yaml").write_text("model: [tudui\n")
    no_metrics = write_run(tmp_path, "no-metrics", started="2026-11-25T21:00:00Z")
    (no_metrics / "metrics.jsonl").unlink()
    torn = write_run(tmp_path, "torn", epochs=3, started="2026-11-25T21:00:00Z")
    with open(torn / "metrics.jsonl", "a") as f:
        f.write('{"epoch": 4, "train_lo')  # a process killed mid-write: not a broken run
    rows = {r["run_dir"].rsplit(os.sep, 1)[-1]: r for r in list_runs(tmp_path)}
    assert rows["no-config"]["status"] == "failed" and rows["no-config"]["error"] == "no config.yaml"
    assert rows["no-config"]["epochs_done"] == 10 and rows["no-config"]["started"]  # from the file times
    assert rows["bad-yaml"]["status"] == "failed" and rows["bad-yaml"]["error"].startswith("unreadable config.yaml:")
    assert rows["no-metrics"]["status"] == "failed" and rows["no-metrics"]["error"] == "no metrics.jsonl"
    assert (rows["torn"]["status"], rows["torn"]["epochs_done"], rows["torn"]["error"]) == ("finished", 3, None)


def test_without_a_recorded_start_the_directory_name_gives_the_order(tmp_path):
    # zoo run's default names end in the local start time; resuming rewrites every file, so
    # the files' times would put an old resumed run last.
    later = write_run(tmp_path, "tudui-sgd-20261125-230000", started=None)
    earlier = write_run(tmp_path, "tudui-adam-20261125-220000", started=None)
    os.utime(later / "config.yaml", (0, 0))
    rows = list_runs(tmp_path)
    assert [r["run_dir"] for r in rows] == [str(earlier), str(later)]
    assert rows[0]["started"].startswith("2026-11-25T22:00:00")


def test_a_run_directory_given_as_root_is_listed_alone(tmp_path):
    run_dir = write_run(tmp_path, "one")
    assert [r["run_dir"] for r in list_runs(run_dir)] == [str(run_dir)]
    with pytest.raises(UsageError, match="is not a directory"):
        list_runs(run_dir / "config.yaml")


def test_runs_and_plot_do_not_import_torch(tmp_path):
    write_run(tmp_path / "runs", "a")
    code = (
        "import sys, io, contextlib, importlib.util\n"
        "from zoo.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):\n"
        "    assert main(['runs', 'runs', '--json']) == 0\n"
        "    if importlib.util.find_spec('matplotlib'):\n"
        "        assert main(['plot', 'runs/a']) == 0\n"
        "assert 'torch' not in sys.modules\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_an_empty_folder_is_a_failed_run_and_a_folder_of_other_files_is_not_a_run(zoo_fork):
    runs_root = zoo_fork.cwd / "runs"
    write_run(runs_root, "tudui-sgd-20261125-210000")
    (runs_root / "notes").mkdir()
    (runs_root / "notes" / "ideas.txt").write_text("try adam\n")
    (runs_root / "tudui-sgd-20261125-233000").mkdir()  # killed between creating it and its first file
    killed = runs_root / "tudui-adam-20261125-234000"
    killed.mkdir()
    (killed / ".config.yaml.k3j2h1.tmp").write_text("model: tu")  # and one killed in its first write
    (runs_root / ".ipynb_checkpoints").mkdir()  # hidden: some tool's, not a run
    rows = {r["run_dir"].rsplit(os.sep, 1)[-1]: r for r in list_runs(runs_root)}
    assert "notes" not in rows and ".ipynb_checkpoints" not in rows
    for name in ("tudui-sgd-20261125-233000", "tudui-adam-20261125-234000"):
        assert rows[name]["status"] == "failed", rows[name]
        assert rows[name]["error"].startswith("empty: no config.yaml"), rows[name]
        assert rows[name]["epochs_done"] == 0 and rows[name]["started"].startswith("2026-11-25T23:")
    result = zoo_fork("runs")
    assert result.returncode == 0, result.stderr
    empty = [line for line in result.stdout.splitlines() if "tudui-sgd-20261125-233000" in line]
    assert len(empty) == 1 and "failed" in empty[0] and "empty: no config.yaml" in empty[0]


def test_a_running_status_whose_process_is_gone_a_zombie_or_another_is_interrupted(tmp_path):
    # SIGKILL leaves status "running"; until its parent reaps it the process is a zombie, which
    # still answers kill(pid, 0).
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)  # exited, not reaped: a zombie
    reaped = subprocess.Popen([sys.executable, "-c", "pass"])
    reaped.wait()
    here, me = socket.gethostname(), process_stamp(os.getpid())
    records = {
        "alive": {"pid": os.getpid(), "host": here, "process_started": me},
        "zombie": {"pid": child.pid},
        "gone": {"pid": reaped.pid, "host": here},
        "reused": {"pid": os.getpid(), "host": here, "process_started": "1"},  # the pid, another process's now
        "elsewhere": {"pid": reaped.pid, "host": "another-host"},  # a shared file system: not ours to judge
        "unrecorded": {"pid": None},
    }
    try:
        for name, record in records.items():
            status = {"status": "running", "updated": "2026-11-25T21:02:00Z", "epochs_done": 2, **record}
            write_run(tmp_path, name, epochs=10, done=2, started="2026-11-25T21:01:00Z", status=status)
        rows = {r["run_dir"].rsplit(os.sep, 1)[-1]: r["status"] for r in list_runs(tmp_path)}
    finally:
        child.wait()
    assert rows == {
        "alive": "running",
        "zombie": "interrupted",
        "gone": "interrupted",
        "reused": "interrupted",
        "elsewhere": "running",
        "unrecorded": "running",
    }
