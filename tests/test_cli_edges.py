"""Rough edges of the command line: ``--registry`` on predict and export, flags never abbreviated,
and optimizers built by ``zoo check`` and ``zoo.create_optimizer`` without ``torch._dynamo``."""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import datafiles
from conftest import assert_user_error
from zoo.cli import build_parser
from zoo.runner import RunConfig, run

VARIANT = """\
models:
  tudui-head:
    base: tudui
    edits:
      - append: head
        layer: Linear
        args: [10, $num_classes]
"""


@pytest.fixture(scope="module")
def variant_run(tmp_path_factory) -> Path:
    """A one-epoch run of ``tudui-head``, a variant that only ``--registry mine.yaml`` defines."""
    root = tmp_path_factory.mktemp("edges")
    (root / "mine.yaml").write_text(VARIANT)
    out = root / "run"
    common = dict(data="fake", epochs=1, batch_size=8, limit_train=16, limit_val=8, quiet=True, device="cpu")
    run(RunConfig("tudui-head", "sgd", out=str(out), registry_files=(str(root / "mine.yaml"),), **common))
    return out


@pytest.fixture
def variant_files(zoo_fork, variant_run) -> Path:
    """The variant's checkpoint, its registry file and an image, in the CLI's working directory."""
    work = zoo_fork.cwd
    shutil.copy(variant_run / "last.pt", work / "last.pt")
    shutil.copy(variant_run.parent / "mine.yaml", work / "mine.yaml")
    datafiles.write_image(work / "cat.png")
    return work


# -- 1. predict and export take --registry and honour it, as validate and run do -----------------


def test_predict_of_a_registry_variant_with_its_registry_file(zoo_fork, variant_files):
    result = zoo_fork("predict", "last.pt", "cat.png", "--registry", "mine.yaml", "--json", "--device", "cpu")
    assert result.returncode == 0, result.stderr
    [row] = json.loads(result.stdout)
    assert row["image"] == "cat.png" and 0 <= row["probability"] <= 1


def test_export_of_a_registry_variant_with_its_registry_file(zoo_fork, variant_files):
    result = zoo_fork("export", "last.pt", "--format", "state-dict", "-o", "out.pth", "--registry", "mine.yaml")
    assert result.returncode == 0, result.stderr
    saved = torch.load(variant_files / "out.pth", weights_only=True)
    assert saved.keys() == torch.load(variant_files / "last.pt", weights_only=True)["model"].keys()
    assert any(key.startswith("head.") for key in saved)


@pytest.mark.parametrize(
    "command",
    [
        ("validate", "last.pt", "--device", "cpu"),
        ("predict", "last.pt", "cat.png", "--device", "cpu"),
        ("export", "last.pt", "--format", "state-dict", "-o", "out.pth"),
    ],
    ids=lambda c: c[0],
)
def test_a_registry_file_that_is_not_there_is_refused_by_every_checkpoint_command(zoo_fork, variant_files, command):
    """Before: predict and export took --registry and dropped it, answering as if it was not given."""
    result = zoo_fork(*command, "--registry", "missing.yaml")
    assert_user_error(result, 2, "missing.yaml", "--registry")
    assert not (variant_files / "out.pth").exists()


# -- 2. flags are never abbreviated ---------------------------------------------------------------


def _parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    found = [parser]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found += _parsers(sub)
    return found


def test_the_parser_and_every_subcommand_refuse_abbreviations():
    parsers = _parsers(build_parser())
    assert len(parsers) > 10 and [p.prog for p in parsers if p.allow_abbrev] == []


@pytest.mark.parametrize(
    "args, given, meant",
    [
        (("run", "tudui", "sgd", "--data", "fake", "--epo", "1"), "--epo", "--epochs"),
        (("list", "models", "--js"), "--js", "--json"),
        (("sweep", "tudui", "sgd", "--par", "2"), "--par", "--parallel"),
        (("export", "last.pt", "--format", "full", "-o", "x.pth", "--forc"), "--forc", "--force"),
    ],
    ids=["run", "list", "sweep", "export"],
)
def test_a_prefix_of_a_flag_is_a_usage_error_naming_it(zoo_fork, args, given, meant):
    """Before: argparse took ``--epo`` as ``--epochs``, so adding a flag could change an old command."""
    result = zoo_fork(*args)
    assert_user_error(result, 2, "unrecognized arguments", given, meant, f"zoo {args[0]} --help")
    assert not (zoo_fork.cwd / "x.pth").exists()


def test_a_misspelt_flag_names_the_flag_it_nearly_spells_not_every_near_one(zoo_fork):
    result = zoo_fork("run", "tudui", "sgd", "--data", "fake", "--epohcs", "1")
    assert_user_error(result, 2, "unrecognized arguments: --epohcs", "(did you mean --epochs for --epohcs?)")


@pytest.mark.parametrize(
    "args, expected",
    [
        (("--vers",), ("unrecognized arguments: --vers", "--version", "zoo --help")),
        (("lst", "models"), ("unknown command 'lst'", "did you mean 'list'?", "commands: list, show")),
        (("frobnicate",), ("unknown command 'frobnicate'", "commands: list, show")),
    ],
    ids=["flag", "misspelt-command", "unknown-command"],
)
def test_the_first_word_is_checked_before_argparse_asks_for_a_command(zoo_fork, args, expected):
    """Before: ``zoo --vers`` said "the following arguments are required: COMMAND", and
    ``zoo lst`` listed the choices without the one it was meant to be."""
    assert_user_error(zoo_fork(*args), 2, *expected)


# -- 3. zoo check and zoo.create_optimizer build optimizers without torch._dynamo -----------------


def _fresh(code: str) -> str:
    """Run ``code`` in a fresh interpreter (the fork server has imported dynamo); its stdout."""
    got = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120)
    assert got.returncode == 0, got.stderr[-3000:]
    return got.stdout


def test_create_optimizer_imports_no_dynamo():
    out = _fresh("""
        import sys, zoo
        model = zoo.create_model("tudui")
        optimizers = [zoo.create_optimizer("sgd", model, lr=0.1), zoo.create_optimizer("adam-lr3e-4", model)]
        print(sorted({type(o).__name__ for o in optimizers}), "torch._dynamo" in sys.modules)
    """)
    assert out.split() == ["['Adam',", "'SGD']", "False"], out


def test_check_builds_and_steps_optimizers_without_dynamo_in_the_parent_and_the_children():
    out = _fresh("""
        import sys
        from zoo import check

        class Said:  # the child's end of the pipe: says whether dynamo came in, then sends
            def __init__(self, conn):
                self.conn, self.close = conn, conn.close

            def send(self, result):
                print("child", "torch._dynamo" in sys.modules, flush=True)
                self.conn.send(result)

        step = check._step
        check._step = lambda conn, *args: step(Said(conn), *args)  # the parent kills it once it has sent
        rows = check.run_check(models="tudui", optimizers="sgd*", budget_s=60)
        print("rows", *sorted({row["status"] for row in rows}), len(rows))
        print("parent", "torch._dynamo" in sys.modules, flush=True)
    """)
    assert sorted(out.splitlines()) == ["child False", "child False", "parent False", "rows ok 2"], out
