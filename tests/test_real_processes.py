"""The command line as a user starts it: each call a plain ``python -m zoo`` process, never the
fork server (tests/forkcli.py), whatever ``ZOO_TESTS_NO_FORK`` says.

Most CLI tests fork their calls from a process that has already imported torch and the zoo, and
whose children leave with ``os._exit``: a failure at import time (a module that no longer imports,
an import cycle) or at exit (an exception in an atexit handler, a hung thread) would not show
there. These few calls, a run, an interrupt, a resume, a validate and a bad input, go the whole
way from interpreter start-up to exit.
"""

from __future__ import annotations

import json

import pytest
import torch

from conftest import ZooCLI, assert_user_error
from zoo.testhooks import KILL_WORKER_ENV

TINY = [
    "--data",
    "fake",
    "--limit-train",
    "48",
    "--limit-val",
    "16",
    "--batch-size",
    "16",
    "--device",
    "cpu",
]  # 3 steps


def clean_exit(result) -> None:
    """Nothing a real interpreter prints when it starts or ends badly."""
    for needle in ("Traceback", "Exception ignored", "Fatal Python error", "Warning"):
        assert needle not in result.stderr, result.stderr


@pytest.fixture
def zoo_process(zoo_cli) -> ZooCLI:
    assert type(zoo_cli) is ZooCLI  # a plain subprocess per call
    return zoo_cli


def test_an_interrupted_run_resumes_and_validates(zoo_process):
    # SIGINT after the 4th step: epoch 2, step 1 of 3 (ZOO_TEST_KILL_WORKER, no clock involved).
    stopped = zoo_process(
        "run", "tudui", "sgd", *TINY, "--epochs", "2", "--out", "r", env={KILL_WORKER_ENV: "0:4:SIGINT"}
    )
    assert_user_error(stopped, 130, "stopped by SIGINT at epoch 2, step 1/3", "--resume")
    checkpoint = torch.load(zoo_process.cwd / "r" / "last.pt", weights_only=True)
    assert (checkpoint["epoch"], checkpoint["partial"]["epoch"], checkpoint["partial"]["step"]) == (1, 2, 1)

    resumed = zoo_process("run", "tudui", "sgd", *TINY, "--epochs", "2", "--out", "r", "--resume", "--json")
    assert resumed.returncode == 0, resumed.stderr
    clean_exit(resumed)
    summary = json.loads(resumed.stdout)
    assert (
        summary["epochs"] == 2
        and json.loads((zoo_process.cwd / "r" / "status.json").read_text())["status"] == "finished"
    )

    validated = zoo_process("validate", "r/last.pt", "--limit-val", "16", "--json")
    assert validated.returncode == 0, validated.stderr
    clean_exit(validated)
    report = json.loads(validated.stdout)
    assert report["samples"] == 16 and report["val_accuracy"] == pytest.approx(summary["val_accuracy"])


def test_a_bad_input_is_one_line_and_exit_2(zoo_process):
    result = zoo_process("run", "tudui", "sgdd", *TINY, "--out", "r")
    assert_user_error(result, 2, "did you mean 'sgd'")
    assert not (zoo_process.cwd / "r").exists()
