"""Issue 12's run-side findings, each through the command line as a new user met them: a resume
that takes the run's own options, --lr against --opt lr=, unreadable files in an image folder,
zoo validate on an image-folder run, and a stop that is not an error (the epoch line's own rate:
tests/test_console.py)."""

from __future__ import annotations

import json
import re

import pytest
import torch
import yaml

from conftest import assert_user_error
from datafiles import write_image_folder
from zoo.config import RunConfig
from zoo.resume import resumed_config
from zoo.testhooks import KILL_WORKER_ENV

DIGITS = ["--data", "digits", "--limit-train", "64", "--limit-val", "32", "--quiet"]


def _snapshot(root):
    return sorted((str(p.relative_to(root)), p.stat().st_mtime_ns) for p in root.rglob("*"))


def test_resume_takes_the_run_s_own_data_and_batch_size(zoo_fork):
    first = zoo_fork("run", "tudui", "sgd", *DIGITS, "--epochs", "1", "--batch-size", "16", "--out", "a")
    assert first.returncode == 0, first.stderr
    # The README's example: neither --data nor --batch-size again.
    resumed = zoo_fork("run", "tudui", "sgd", "--epochs", "2", "--out", "a", "--resume", "--json")
    assert resumed.returncode == 0, resumed.stderr
    summary = json.loads(resumed.stdout)
    assert (summary["epochs"], summary["dataset"]) == (2, "digits")
    spec = torch.load(zoo_fork.cwd / "a" / "last.pt", weights_only=True)["spec"]
    assert (spec["batch_size"], spec["limit_train"], spec["limit_val"]) == (16, 64, 32)
    # Given again and different: refused as before, naming the flag; nothing changed on disk.
    before = _snapshot(zoo_fork.cwd / "a")
    refused = zoo_fork("run", "tudui", "sgd", "--epochs", "3", "--out", "a", "--resume", "--batch-size", "32")
    assert_user_error(refused, 2, "trained with --batch-size 16, not 32")
    assert _snapshot(zoo_fork.cwd / "a") == before


def test_resumed_config_fills_what_was_not_given_and_keeps_the_global_batch():
    saved = {
        "dataset": "digits",
        "data_dir": "/data",
        "batch_size": 16,
        "nproc": 2,
        "world_size": 2,
        "limit_train": None,
        "limit_val": 32,
        "seed": 7,
        "skip_bad_images": False,
    }
    named = RunConfig("tudui", "sgd", resume=True, seed=3, given=("seed",))
    resumed = resumed_config(named, saved, world=1)
    assert (resumed.data, resumed.data_dir, resumed.limit_val, resumed.seed) == ("digits", "/data", 32, 3)
    assert resumed.batch_size == 32  # 2 processes x 16, continued in one
    assert resumed_config(named, saved, world=4).batch_size == 8
    assert resumed_config(named, {}, world=1) == named  # no config.yaml: nothing to take
    # Without `given` (a script's RunConfig): what differs from the defaults counts as given.
    scripted = resumed_config(RunConfig("tudui", "sgd", resume=True, batch_size=8), saved)
    assert (scripted.batch_size, scripted.seed) == (8, 7)


def test_lr_and_opt_lr_must_agree_and_config_yaml_records_what_trained(zoo_fork):
    refused = zoo_fork("run", "tudui", "sgd", *DIGITS, "--opt", "lr=0.1", "--lr", "0.2", "--out", "r")
    assert_user_error(refused, 2, "--lr 0.2 and --opt lr=0.1 disagree")
    assert not (zoo_fork.cwd / "r").exists()
    ok = zoo_fork("run", "tudui", "sgd", *DIGITS, "--epochs", "1", "--opt", "lr=0.03", "--out", "r")
    assert ok.returncode == 0, ok.stderr
    config = yaml.safe_load((zoo_fork.cwd / "r" / "config.yaml").read_text())
    assert config["lr"] == config["hparams"]["lr"] == 0.03


@pytest.fixture
def folder_with_a_broken_image(tmp_path):
    root = write_image_folder(tmp_path / "images", per_class=4)
    (root / "train" / "dog" / "broken.png").write_text("x\n")
    (root / "train" / "cat" / "half.png").write_bytes((root / "train" / "cat" / "0.png").read_bytes()[:40])
    return root


def test_unreadable_images_are_refused_before_anything_is_written(zoo_fork, folder_with_a_broken_image):
    args = ["run", "tudui", "adam", "--data", "imagefolder", "--data-dir", str(folder_with_a_broken_image)]
    refused = zoo_fork(*args, "--epochs", "1", "--out", "r")
    assert_user_error(refused, 2, "2 image file(s) of the training split", "cannot be read", "--skip-bad-images")
    assert re.search(r"(broken|half)\.png", refused.stderr)
    assert not (zoo_fork.cwd / "r").exists()
    skipped = zoo_fork(*args, "--epochs", "1", "--out", "r", "--skip-bad-images", "--json")
    assert skipped.returncode == 0, skipped.stderr
    warnings = [line for line in skipped.stderr.splitlines() if line.startswith("zoo: warning:")]
    assert len(warnings) == 1 and "left out 2 unreadable image file(s) of the training split" in warnings[0]
    spec = torch.load(zoo_fork.cwd / "r" / "last.pt", weights_only=True)["spec"]
    assert spec["classes"] == ["cat", "dog", "frog"]


def test_validate_uses_the_run_s_own_image_folder_and_config_records_it_absolute(zoo_fork, tmp_path):
    root = write_image_folder(tmp_path / "images", per_class=4)
    images = root.relative_to(tmp_path)  # a relative --data-dir, as a user types it
    zoo_fork.cwd = tmp_path
    run = zoo_fork(
        "run",
        "tudui",
        "adam",
        "--data",
        "imagefolder",
        "--data-dir",
        str(images),
        "--epochs",
        "1",
        "--out",
        "r",
        "--quiet",
        "--json",
    )
    assert run.returncode == 0, run.stderr
    assert yaml.safe_load((tmp_path / "r" / "config.yaml").read_text())["data_dir"] == str(root)
    (tmp_path / "elsewhere").mkdir()
    zoo_fork.cwd = tmp_path / "elsewhere"  # neither the run's cwd nor $ZOO_DATA holds the images
    result = zoo_fork("validate", str(tmp_path / "r" / "best.pt"), "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["samples"] == 12
    missing = zoo_fork("validate", str(tmp_path / "r" / "best.pt"), "--data-dir", str(tmp_path / "nothing"))
    assert_user_error(missing, 2, "no image folder at")  # --data-dir still wins


def test_a_stop_is_said_as_a_stop_not_an_error(zoo_fork):
    result = zoo_fork(
        "run", "tudui", "sgd", "--data", "digits", "--limit-train", "64", "--limit-val", "32", "--batch-size", "16",
        "--epochs", "3", "--out", "r", env={KILL_WORKER_ENV: "0:10:SIGINT"},
    )  # fmt: skip
    # One "zoo: stopped:" line and no "zoo: error:" (assert_user_error checks both for 130).
    assert_user_error(result, 130, "stopped by SIGINT at epoch 3, step 2/4", "--resume --out r")
    assert torch.load(zoo_fork.cwd / "r" / "last.pt", weights_only=True)["partial"]["step"] == 2
