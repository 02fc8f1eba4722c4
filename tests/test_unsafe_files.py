"""Files from strangers: nothing in them runs, and every bad one is one clear error.

Through the command line, a fresh process per call (forkcli.py):

* crafted files whose unpickling would run code (``os.system``, ``os.mkdir``, ``exec``; saved
  by ``torch.save`` in both its formats and by plain ``pickle``) given to ``validate``,
  ``predict``, ``export``, ``run --resume`` (as ``last.pt``) and ``run --weights`` exit 2 with
  one line that says why, and the code never runs: no marker file appears and nothing on disk
  changes. The same files with ``--trust`` do run it, which proves the payloads are live;
* a crafted CIFAR-10 directory is refused the same way;
* broken files (zero bytes, truncated, an empty checkpoint, a PNG renamed ``.pt``, a
  safetensors file, another model's weights) exit 2 with one line naming the file and the problem;
* loading refuses a torch older than 2.10, whose ``weights_only`` can be escaped.
"""

from __future__ import annotations

import os
import pickle
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

import datafiles
from conftest import assert_user_error
from zoo import checkpoint
from zoo.cli import main
from zoo.runner import RunConfig, run
from zoo_tudui.model import Tudui

TRAIN = (
    "run",
    "tudui",
    "sgd",
    "--data",
    "fake",
    "--limit-train",
    "8",
    "--limit-val",
    "8",
    "--epochs",
    "2",
    "--batch-size",
    "4",
    "--device",
    "cpu",
)


class Payload:
    """Unpickling this calls ``function(*args)``: what a crafted file does."""

    def __init__(self, function: Callable, *args: object):
        self.function, self.args = function, args

    def __reduce__(self):
        return self.function, self.args


def zoo_like(payload: Payload) -> dict:
    """A dict that looks like a zoo checkpoint, with the payload where the weights go."""
    return {"format": "zoo.checkpoint", "version": 1, "model": {"model.0.weight": payload}, "epoch": 1}


# name -> (write the file, given the marker path; the global its error names)
CRAFTED = {
    "torch.save-os.system": (lambda f, m: torch.save(zoo_like(Payload(os.system, f"touch '{m}'")), f), "posix.system"),
    "torch.save-legacy-os.mkdir": (
        lambda f, m: torch.save(zoo_like(Payload(os.mkdir, m)), f, _use_new_zipfile_serialization=False),
        "posix.mkdir",
    ),
    "torch.save-exec": (lambda f, m: torch.save([Payload(exec, f"open({m!r}, 'w').close()")], f), "exec"),
    "pickle-protocol-2": (
        lambda f, m: Path(f).write_bytes(pickle.dumps(Payload(os.mkdir, m), protocol=2)),
        "posix.mkdir",
    ),
    "pickle-protocol-5": (
        lambda f, m: Path(f).write_bytes(pickle.dumps(Payload(os.system, f"touch '{m}'"), protocol=5)),
        None,
    ),
}


def commands(path: str) -> dict[str, tuple[list[str], str]]:
    """command name -> (arguments, the path its error names) for a file at ``path``.
    ``old-run`` (a run directory whose last.pt is the file) and ``cat.png`` are set up by ``workdir``."""
    return {
        "validate": (["validate", path, "--device", "cpu"], path),
        "predict": (["predict", path, "cat.png", "--device", "cpu"], path),
        "export": (["export", path, "--format", "state-dict", "-o", "exported.pt"], path),
        "run --resume": ([*TRAIN, "--out", "old-run", "--resume"], "old-run/last.pt"),
        "run --weights": ([*TRAIN, "--out", "new-run", "--weights", path], path),
    }


def workdir(cwd: Path, path: str) -> None:
    datafiles.write_image(cwd / "cat.png")
    (cwd / "old-run").mkdir()
    (cwd / "old-run" / "config.yaml").write_text("model: tudui\n")
    shutil.copyfile(cwd / path, cwd / "old-run" / "last.pt")


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() if p.is_file() else b"<dir>" for p in sorted(root.rglob("*"))}


@pytest.mark.parametrize("crafted", CRAFTED)
def test_a_file_whose_loading_would_run_code_is_refused_by_every_command(zoo_fork, tmp_path, crafted):
    write, unsafe = CRAFTED[crafted]
    marker = tmp_path / "CODE-RAN"
    write(zoo_fork.cwd / "crafted.pt", str(marker))
    workdir(zoo_fork.cwd, "crafted.pt")
    before = snapshot(zoo_fork.cwd)
    for command, (args, named) in commands("crafted.pt").items():
        result = zoo_fork(*args)
        error = result.stderr.strip()
        assert_user_error(result, 2, named)
        if unsafe:
            for needle in (
                f"refused: it pickles Python objects ({unsafe})",
                "weights_only=False",
                "--trust only if you trust",
            ):
                assert needle in error, (command, error)
        else:  # no torch file at all: refused before any unpickling
            assert "not a torch file: a plain pickle" in error, (command, error)
        assert not marker.exists(), f"{command}: loading {crafted} ran its code"
        assert snapshot(zoo_fork.cwd) == before, f"{command} changed files"

    # The control: trusting the file does run its code, so the refusals above were real.
    result = zoo_fork("validate", "crafted.pt", "--trust")
    if unsafe:
        assert marker.exists(), result.stderr
        assert "zoo: warning: loading crafted.pt with weights_only=False (--trust)" in result.stderr
    else:
        assert_user_error(result, 2, "not a torch file")  # a plain pickle is never a torch file


def test_a_whole_pickled_model_needs_trust_and_says_why(zoo_fork):
    torch.save(Tudui(10), zoo_fork.cwd / "method1.pt")
    result = zoo_fork(*TRAIN, "--out", "r", "--weights", "method1.pt")
    assert_user_error(result, 2, "weights file method1.pt refused", "zoo_tudui.model.Tudui", "method 1", "--trust")
    assert not (zoo_fork.cwd / "r").exists()
    result = zoo_fork(*TRAIN, "--out", "r", "--weights", "method1.pt", "--trust")
    assert result.returncode == 0, result.stderr
    assert "can run arbitrary code" in result.stderr


def test_a_crafted_cifar10_directory_is_refused_without_running_code(zoo_fork, tmp_path):
    marker = tmp_path / "CODE-RAN"
    base = datafiles.write_cifar10_dir(zoo_fork.cwd / "cifar")
    (base / "data_batch_2").write_bytes(
        pickle.dumps({"data": Payload(os.system, f"touch '{marker}'"), "labels": []}, protocol=2)
    )
    result = zoo_fork(*TRAIN[:4], "cifar10", "--data-dir", "cifar", "--out", "r")
    assert_user_error(result, 2, "cifar/cifar-10-batches-py/data_batch_2", "posix.system", "refused")
    assert not marker.exists() and not (zoo_fork.cwd / "r").exists()


# -- broken files ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def good_checkpoint(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("good") / "run"
    run(
        RunConfig(
            "tudui",
            "sgd",
            data="fake",
            epochs=1,
            batch_size=4,
            limit_train=8,
            limit_val=8,
            out=str(out),
            quiet=True,
            device="cpu",
        )
    )
    return out / "last.pt"


def _truncated(path: Path, good: Path) -> None:
    blob = good.read_bytes()
    path.write_bytes(blob[: len(blob) // 2])


def _png(path: Path, good: Path) -> None:
    datafiles.write_image(path.with_suffix(".png"))
    path.with_suffix(".png").rename(path)


def _safetensors(path: Path, good: Path) -> None:
    from safetensors.torch import save_file

    save_file(nn.Linear(3, 2).state_dict(), str(path))


# name -> (write the file; what the error says for a checkpoint; what it says for --weights)
BROKEN = {
    "zero-bytes": (lambda p, g: p.write_bytes(b""), "is empty (0 bytes)", "is empty (0 bytes)"),
    "truncated": (_truncated, "is truncated or corrupt", "is truncated or corrupt"),
    "empty-checkpoint": (
        lambda p, g: torch.save({}, p),
        "is not a zoo checkpoint: it is a dict with keys []",
        "--weights broken.pt holds a dict (keys []), not a state_dict of tensors; "
        "pass a file of parameter names to tensors",
    ),
    "png-renamed": (
        _png,
        "is not a torch file: it looks like a PNG image",
        "is not a torch file: it looks like a PNG image",
    ),
    "safetensors": (
        _safetensors,
        "is not a zoo checkpoint: it is a safetensors file (2 tensors",
        "does not fit base model 'tudui': missing keys model.0.weight",
    ),
    "another-models-state-dict": (
        lambda p, g: torch.save(nn.Linear(3, 2).state_dict(), p),
        "is not a zoo checkpoint: it is a plain state_dict (2 tensors",
        "does not fit base model 'tudui': missing keys model.0.weight",
    ),
}


@pytest.mark.parametrize("broken", BROKEN)
def test_a_broken_file_is_one_line_naming_it_and_the_problem(zoo_fork, good_checkpoint, broken):
    write, as_checkpoint, as_weights = BROKEN[broken]
    write(zoo_fork.cwd / "broken.pt", good_checkpoint)
    workdir(zoo_fork.cwd, "broken.pt")
    before = snapshot(zoo_fork.cwd)
    for command, (args, named) in commands("broken.pt").items():
        result = zoo_fork(*args)
        assert_user_error(result, 2, named, as_weights if command == "run --weights" else as_checkpoint)
        assert snapshot(zoo_fork.cwd) == before, f"{command} changed files"


# -- the torch that loads -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "version, safe",
    [
        ("2.14.1", True),
        ("2.10.0a0+git1234", True),
        ("3.0.0", True),
        ("2.9.1+cu128", False),
        ("2.6.0", False),
        ("1.13.1", False),
    ],
)
def test_torch_version_parsing(monkeypatch, version, safe):
    monkeypatch.setattr(torch, "__version__", version)
    assert (checkpoint.torch_version() >= checkpoint.MIN_TORCH) is safe


def test_a_torch_older_than_2_10_refuses_to_load_anything(monkeypatch, capsys, good_checkpoint):
    monkeypatch.setattr(checkpoint, "torch_version", lambda: (2, 5))
    assert main(["validate", str(good_checkpoint), "--device", "cpu"]) == 2
    error = capsys.readouterr().err
    assert error.count("zoo: error:") == 1 and error.startswith(
        f"zoo: error: torch {torch.__version__} cannot load files safely"
    )
    assert "CVE-2025-32434" in error and "pip install 'torch>=2.10'" in error
    monkeypatch.undo()
    assert main(["validate", str(good_checkpoint), "--device", "cpu", "--json"]) == 0
