"""The runner's commands end to end, each call a process of its own: run -> validate -> predict ->
export -> runs, zoo check, the README's main job, and refusals that leave nothing on disk.

The calls are forked from the fork server (tests/forkcli.py; plain ``python -m zoo`` processes
under ``ZOO_TESTS_NO_FORK=1``), except the README's main job and the --compile run, which start
the interpreter as a user does; test_real_processes.py always does."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import assert_user_error
from datafiles import write_image
from zoo.registry import get_registry

RUN_KEYS = {
    "run_dir",
    "model",
    "optimizer",
    "dataset",
    "device",
    "epochs",
    "train_loss",
    "val_loss",
    "val_accuracy",
    "best_val_accuracy",
    "last_checkpoint",
    "best_checkpoint",
    "images_per_second",
}
TINY = ["--data", "fake", "--limit-train", "96", "--limit-val", "40", "--batch-size", "16"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, fork_server):
    """One tiny two-epoch run through the CLI, shared by the tests that read it."""
    from forkcli import ForkedZooCLI

    work = tmp_path_factory.mktemp("cli-run")
    cli = ForkedZooCLI(work, fork_server)
    result = cli(
        "run", "tudui", "sgd", *TINY, "--epochs", "2", "--lr", "0.05", "--out", "runs/tiny", "--json", "--quiet"
    )
    assert result.returncode == 0, result.stderr
    return cli, json.loads(result.stdout)


def test_run_prints_the_contract_summary_and_writes_the_run_directory(trained):
    cli, summary = trained
    assert set(summary) == RUN_KEYS
    assert (summary["model"], summary["optimizer"], summary["dataset"], summary["device"], summary["epochs"]) == (
        "tudui",
        "sgd",
        "fake",
        "cpu",
        2,
    )
    run_dir = cli.cwd / "runs" / "tiny"
    assert sorted(p.name for p in run_dir.iterdir()) == [
        "best.pt",
        "config.yaml",
        "last.pt",
        "metrics.jsonl",
        "status.json",
    ]
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [line["epoch"] for line in lines] == [1, 2]
    assert set(lines[0]) == {"epoch", "train_loss", "val_loss", "val_accuracy", "seconds", "lr"}
    assert summary["best_val_accuracy"] == max(line["val_accuracy"] for line in lines)
    assert json.loads((run_dir / "status.json").read_text())["status"] == "finished"
    ckpt = torch.load(run_dir / "last.pt", weights_only=True)
    assert (ckpt["format"], ckpt["version"], ckpt["epoch"]) == ("zoo.checkpoint", 1, 2)
    assert ckpt["spec"]["hparams"]["lr"] == 0.05 and not any(
        k.startswith(("module.", "_orig_mod.")) for k in ckpt["model"]
    )


def test_validate_agrees_with_the_run(trained):
    cli, summary = trained
    result = cli("validate", summary["best_checkpoint"], "--limit-val", "40", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert set(report) == {"val_loss", "val_accuracy", "samples"} and report["samples"] == 40
    assert report["val_accuracy"] == pytest.approx(summary["best_val_accuracy"])


@pytest.mark.slow
def test_compile_trains_the_same_model_and_checkpoints_its_bare_weights(trained, tmp_path):
    # --compile (inductor, on this CPU: ~20 s of compiling) must change how fast, not what is
    # learned: the same seed gives the eager run's weights up to float reordering, under the
    # eager model's state_dict keys, and its checkpoint validates as that run's does.
    from conftest import ZooCLI

    eager_cli, eager = trained
    cli = ZooCLI(tmp_path)  # not the shared directory: test_runs_lists_the_run counts its runs
    result = cli(
        "run",
        "tudui",
        "sgd",
        *TINY,
        "--epochs",
        "2",
        "--lr",
        "0.05",
        "--out",
        "compiled",
        "--json",
        "--quiet",
        "--compile",
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    compiled = json.loads(result.stdout)
    a = torch.load(cli.cwd / compiled["last_checkpoint"], weights_only=True)["model"]
    b = torch.load(eager_cli.cwd / eager["last_checkpoint"], weights_only=True)["model"]
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-3, atol=1e-4, msg=lambda m, key=key: f"{key}: {m}")
    assert compiled["val_accuracy"] == pytest.approx(eager["val_accuracy"], abs=1 / 40)
    report = json.loads(cli("validate", compiled["last_checkpoint"], "--limit-val", "40", "--json").stdout)
    assert report["val_accuracy"] == pytest.approx(compiled["val_accuracy"])


def test_predict_reports_good_images_and_names_the_bad_one(trained, tmp_path):
    cli, summary = trained
    good = [
        write_image(tmp_path / "a.png", "RGBA"),
        write_image(tmp_path / "b.jpg", "RGB"),
        write_image(tmp_path / "c.png", "L"),
    ]
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    result = cli("predict", summary["last_checkpoint"], *map(str, good), str(bad), "--top", "3", "--json")
    assert_user_error(result, 2, "notes.png")
    rows = json.loads(result.stdout)
    assert [Path(r["image"]).name for r in rows] == ["a.png", "b.jpg", "c.png"]
    for row in rows:
        assert set(row) == {"image", "label", "index", "probability", "top"} and len(row["top"]) == 3
        assert row["label"] == row["top"][0]["label"] and 0 < row["probability"] <= 1


def test_export_state_dict_loads_into_a_registry_model(trained, tmp_path):
    cli, summary = trained
    out = tmp_path / "tudui.pth"
    result = cli("export", summary["last_checkpoint"], "--format", "state-dict", "-o", str(out))
    assert result.returncode == 0, result.stderr
    model = get_registry().build_model("tudui", 10)
    model.load_state_dict(torch.load(out, weights_only=True), strict=True)


def test_runs_lists_the_run(trained):
    cli, _ = trained
    rows = json.loads(cli("runs", "runs", "--json").stdout)
    assert [(r["model"], r["optimizer"], r["dataset"], r["epochs_done"], r["status"]) for r in rows] == [
        ("tudui", "sgd", "fake", 2, "finished")
    ]


def test_check_marks_misfits_incompatible(zoo_fork):
    result = zoo_fork("check", "--models", "tudui", "--optimizers", "s*", "--json")
    assert result.returncode == 0, result.stderr
    rows = {r["optimizer"]: r for r in json.loads(result.stdout)}
    assert {"sgd", "sgd-momentum", "sparseadam"} <= set(rows)
    assert rows["sgd"]["status"] == "ok" and rows["sgd-momentum"]["status"] == "ok"
    assert rows["sparseadam"]["status"] == "incompatible" and "sparse" in rows["sparseadam"]["reason"]
    table = zoo_fork("check", "--models", "tudui", "--optimizers", "sgd*", "--budget-s", "30")
    assert table.returncode == 0, table.stderr
    assert table.stderr.startswith("zoo: checking 1 model(s) x 2 optimizer(s): 2 pairs, up to 30 s each\n")
    assert [line.split()[:3] for line in table.stdout.splitlines()] == [
        ["tudui", "sgd", "ok"],
        ["tudui", "sgd-momentum", "ok"],
    ]


@pytest.mark.slow
def test_vgg16_lbfgs_is_refused_up_front_with_its_memory_estimate(zoo_fork):
    result = zoo_fork("run", "vgg16", "lbfgs", "--data", "fake", "--out", "runs/never")
    assert_user_error(result, 2, "GiB", "history_size")
    assert not (zoo_fork.cwd / "runs").exists()


def test_missing_cifar10_names_the_directory_and_the_remedies(zoo_fork):
    result = zoo_fork("run", "tudui", "sgd", "--data-dir", "nowhere", "--epochs", "1")
    assert_user_error(result, 2, "nowhere", "--download", "--data-dir", "--data digits")
    assert not (zoo_fork.cwd / "runs").exists()


@pytest.mark.slow
def test_the_readme_main_job_reaches_95_percent_on_digits(zoo_cli):
    # The quick start's first command: Tudui + SGD on scikit-learn's real digits, offline.
    result = zoo_cli(
        "run", "tudui", "sgd", "--data", "digits", "--epochs", "10", "--batch-size", "16", "--json", "--quiet"
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["epochs"] == 10
    assert summary["best_val_accuracy"] >= 0.95 and summary["val_accuracy"] >= 0.95, summary
