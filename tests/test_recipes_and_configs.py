"""Recipes (registry.yaml's ``recipes:``, ``zoo run --recipe NAME``) and config files (``zoo run
--config FILE.yaml``): parsed with file:line errors, layered under the flags typed, recorded in
config.yaml, and a run's config.yaml repeats the run bitwise (issue 13)."""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path

import pytest
import torch
import yaml

from conftest import assert_user_error
from zoo.config import RunConfig, merge_options, option_value
from zoo.errors import UsageError
from zoo.registry import Registry, get_registry
from zoo.registry_file import read_run_file
from zoo.testhooks import KILL_WORKER_ENV

TINY = ("--data", "fake", "--limit-train", "64", "--limit-val", "32", "--epochs", "1", "--device", "cpu", "--quiet")
DIGITS_SGD = {
    "opts": {"momentum": "0.9", "nesterov": "true", "weight_decay": "5e-4"},
    "sched": "onecycle",
    "sched_opts": {"max_lr": "0.02", "pct_start": "0.15"},
    "label_smoothing": 0.1,
    "augment": ("crop:padding=3",),
    "epochs": 10,
    "batch_size": 16,
}


def config_of(run_dir: Path) -> dict:
    return yaml.safe_load((run_dir / "config.yaml").read_text())


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "last.pt", weights_only=True)["model"]


def registry_with(tmp_path: Path, text: str) -> Registry:
    path = tmp_path / "mine.yaml"
    path.write_text(text)
    return get_registry([str(path)])


# -- the shipped recipe --------------------------------------------------------------------------


def test_digits_sgd_ships_the_issues_measurement(builtin_registry):
    entry = builtin_registry.recipe("digits-sgd")
    assert entry.kind == "recipe" and entry.plugin == "registry.yaml" and entry.source.startswith("registry.yaml:")
    assert entry.options == DIGITS_SGD
    assert builtin_registry.recipe_options("digits-sgd") == DIGITS_SGD  # its names resolve


def test_list_and_show_recipes(zoo_fork):
    rows = json.loads(zoo_fork("list", "recipes", "--json").stdout)
    assert {"kind": "recipe", "name": "digits-sgd", "plugin": "registry.yaml"}.items() <= rows[0].items()
    assert json.loads(zoo_fork("list", "recipe", "--json").stdout) == rows
    assert "digits-sgd" in {r["name"] for r in json.loads(zoo_fork("list", "--json").stdout) if r["kind"] == "recipe"}
    info = json.loads(zoo_fork("show", "digits-sgd", "--json").stdout)
    assert info["kind"] == "recipe" and info["options"]["augment"] == ["crop:padding=3"]
    assert info["same_as"].startswith("zoo run MODEL OPTIMIZER --opt momentum=0.9 --opt nesterov=true")
    text = zoo_fork("show", "digits-sgd").stdout
    assert "sched_opts" in text and "max_lr=0.02, pct_start=0.15" in text
    assert "zoo run MODEL OPTIMIZER --recipe digits-sgd" in text


# -- recipes in a registry file --------------------------------------------------------------------


def test_a_users_recipe_with_every_key(tmp_path):
    registry = registry_with(
        tmp_path,
        "recipes:\n"
        "  everything:\n"
        "    summary: all of it\n"
        "    optimizer: sgd-momentum\n"
        "    opts: {dampening: 0, betas: [0.9, 0.99]}\n"
        "    lr: 0.05\n"
        "    epochs: 3\n"
        "    batch_size: 8\n"
        "    sched: cosine\n"
        "    sched_opts: {eta_min: 1e-5}\n"
        "    sched_interval: step\n"
        "    augment: flip\n"
        "    ema: 0.99\n"
        "    label_smoothing: 0.05\n"
        "    clip_grad_norm: 1\n"
        "    accumulate: 2\n"
        "    patience: 3\n",
    )
    entry = registry.recipe("everything")
    assert entry.summary == "all of it" and entry.source == f"{tmp_path / 'mine.yaml'}:2"
    assert entry.options["opts"] == {"dampening": "0", "betas": "0.9,0.99"}
    assert entry.options["augment"] == ("flip",) and entry.options["clip_grad_norm"] == 1.0
    assert registry.recipe_options("everything")["optimizer"] == "sgd-momentum"


@pytest.mark.parametrize(
    "body, line, message",
    [
        ("    sched: cosine\n    shed_opts: {}\n", 4, "unknown key 'shed_opts' in recipe 'r' (expected one of "),
        ("    epochs: ten\n", 3, "recipe 'r': 'epochs' must be an integer, got 'ten'"),
        ("    augment: [1, 2]\n", 3, "'augment' must be a list of texts"),
        ("    opts: [momentum]\n", 3, "'opts' must be a mapping of KEY: VALUE"),
        ("    opts: {momentum: {a: 1}}\n", 3, "'opts' must be a mapping of KEY: VALUE"),
        ("    sched_interval: hourly\n", 3, "interval must be 'epoch' or 'step', got 'hourly'"),
        ("    ema: 1.5\n", 2, "recipe 'r': --ema must be a number between 0 and 1"),
        ("    accumulate: 0\n", 2, "--accumulate must be an integer of at least 1"),
        ("    summary: [a]\n", 3, "summary must be text"),
    ],
)
def test_a_bad_recipe_is_refused_with_file_and_line(tmp_path, body, line, message):
    with pytest.raises(UsageError) as caught:
        registry_with(tmp_path, "recipes:\n  r:\n" + body)
    assert str(caught.value).startswith(f"{tmp_path / 'mine.yaml'}:{line}: "), str(caught.value)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    "text, message",
    [
        ("recipes: [a]\n", ":1: 'recipes' must be a mapping of name -> recipe"),
        ("recipes:\n  Bad_Name: {}\n", ":2: invalid recipe name 'Bad_Name'"),
        ("recipes:\n  r: cosine\n", ":2: recipe 'r' must be a mapping of run options"),
        ("recipes:\n  digits-sgd: {epochs: 1}\n", "recipe 'digits-sgd' is registered twice"),
    ],
)
def test_a_bad_recipes_section_is_refused(tmp_path, text, message):
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)")):
        registry_with(tmp_path, text)


@pytest.mark.parametrize(
    "body, message",
    [
        ("sched: cosin", "unknown scheduler 'cosin'; did you mean 'cosine'? (zoo list schedulers)"),
        ("augment: ['crop:padding=2', 'flp']", "unknown augmentation 'flp'; did you mean 'flip'?"),
        ("optimizer: sgdd", "unknown optimizer 'sgdd'; did you mean 'sgd'?"),
    ],
)
def test_names_in_a_recipe_are_checked_when_used(tmp_path, body, message):
    registry = registry_with(tmp_path, f"recipes:\n  r:\n    {body}\n")  # loading it is fine
    with pytest.raises(UsageError) as caught:
        registry.recipe_options("r")
    assert str(caught.value).startswith(f"recipe 'r' ({tmp_path / 'mine.yaml'}:2): {message}")


def test_an_unknown_recipe_suggests_the_closest(builtin_registry):
    with pytest.raises(
        UsageError, match=r"unknown recipe 'digit-sgd'; did you mean 'digits-sgd'\? \(zoo list recipes\)"
    ):
        builtin_registry.recipe("digit-sgd")


# -- layering: RunConfig defaults < recipe < config file < flags typed ---------------------------------


def test_a_higher_layer_wins_and_opts_merge_key_by_key():
    merged = merge_options(
        [
            {"opts": {"momentum": "0.9", "nesterov": "true"}, "epochs": 10, "ema": None},
            {"opts": {"momentum": "0.5"}, "epochs": 2, "batch_size": 8},
            {"epochs": None, "batch_size": 4},  # None: not given
        ]
    )
    assert merged == {"opts": {"momentum": "0.5", "nesterov": "true"}, "epochs": 2, "batch_size": 4}


def test_another_scheduler_or_optimizer_drops_what_belonged_to_the_old_one():
    recipe = {"optimizer": "sgd", "opts": {"nesterov": "true"}, "lr": 0.1, "sched": "onecycle",
              "sched_opts": {"max_lr": "0.02"}, "sched_interval": "step"}  # fmt: skip
    assert merge_options([recipe, {"sched": "cosine"}]) == {
        "optimizer": "sgd", "opts": {"nesterov": "true"}, "lr": 0.1, "sched": "cosine"
    }  # fmt: skip
    assert merge_options([recipe, {"optimizer": "adam"}]) == {
        "optimizer": "adam", "sched": "onecycle", "sched_opts": {"max_lr": "0.02"}, "sched_interval": "step"
    }  # fmt: skip
    same = merge_options([recipe, {"optimizer": "sgd", "sched": "onecycle"}])
    assert same == recipe


def test_a_learning_rate_given_once_replaces_the_other_spelling():
    assert merge_options([{"lr": 0.1}, {"opts": {"lr": "0.2"}}]) == {"opts": {"lr": "0.2"}}
    assert merge_options([{"opts": {"lr": "0.2", "momentum": "0.9"}}, {"lr": 0.3}]) == {
        "opts": {"momentum": "0.9"},
        "lr": 0.3,
    }
    assert merge_options([{"lr": 0.1, "opts": {"lr": "0.1"}}]) == {"lr": 0.1, "opts": {"lr": "0.1"}}


@pytest.mark.parametrize(
    "name, value, expected",
    [
        ("opts", {"momentum": 0.9, "nesterov": True, "weight_decay": "5e-4"},
         {"momentum": "0.9", "nesterov": "true", "weight_decay": "5e-4"}),
        ("opts", {"betas": [0.9, 0.99], "foreach": None}, {"betas": "0.9,0.99", "foreach": "none"}),
        ("augment", "flip", ("flip",)),
        ("augment", ["flip", "crop:padding=2"], ("flip", "crop:padding=2")),
        ("epochs", 3.0, 3),
        ("ema", 1, 1.0),
        ("ema", None, None),
        ("registry_files", [], ()),
    ],
)  # fmt: skip
def test_option_values_from_files_take_the_flags_types(name, value, expected):
    assert option_value(name, value, "f.yaml:1") == expected


@pytest.mark.parametrize(
    "name, value",
    [("epochs", 1.5), ("epochs", True), ("quiet", "yes"), ("lr", "fast"), ("ema", float("nan")), ("model", None)],
)
def test_option_values_of_another_type_are_refused(name, value):
    with pytest.raises(UsageError, match=f"f.yaml:1: '{name}' must be "):
        option_value(name, value, "f.yaml:1")


# -- the command line's own layer ----------------------------------------------------------------------


def parsed(*argv: str):
    from zoo.cli import build_parser, run_config

    return run_config(build_parser().parse_args(["run", *argv]))


def test_a_command_line_without_flags_gives_runconfigs_defaults():
    config = parsed("tudui", "sgd")
    assert config == RunConfig("tudui", "sgd", given=())


def test_every_run_option_can_be_typed():
    config = parsed(
        "tudui", "sgd", "--data", "fake", "--data-dir", "d", "--download", "--epochs", "3", "--batch-size", "8",
        "--lr", "0.5", "--opt", "momentum=0.9", "--device", "cpu", "--seed", "4", "--out", "o", "--resume",
        "--weights", "w.pth", "--limit-train", "5", "--limit-val", "6", "--workers", "2", "--amp", "--compile",
        "--tensorboard", "--quiet", "--registry", "r.yaml", "--trust", "--nproc", "2", "--skip-bad-images",
        "--deterministic", "--sched", "steplr", "--sched-opt", "step_size=2", "--sched-interval", "step",
        "--augment", "flip", "--ema", "0.9", "--label-smoothing", "0.1", "--clip-grad-norm", "1",
        "--accumulate", "2", "--patience", "3", "--input-size", "48",
    )  # fmt: skip
    defaults = RunConfig("tudui", "sgd")
    unchanged = [f.name for f in fields(RunConfig) if getattr(config, f.name) == getattr(defaults, f.name)]
    assert unchanged == ["model", "optimizer", "recipe"]  # every other option was typed, and taken
    assert set(config.given) == {f.name for f in fields(RunConfig)} - {"model", "optimizer", "recipe", "given"}


# -- config files, read directly ---------------------------------------------------------------------


def test_a_run_directorys_config_yaml_is_a_config_file(tmp_path):
    recorded = {
        "model": "tudui", "optimizer": "sgd", "data": None, "epochs": 2, "lr": 0.01, "opts": {"momentum": "0.9"},
        "augment": ["flip"], "out": "/elsewhere", "resume": True, "trust": True, "dataset": "digits",
        "hparams": {"lr": 0.01, "momentum": 0.9}, "num_classes": 10, "base": None, "edits": [],
        "resolved_device": "cpu", "world_size": 1, "recipe": "digits-sgd",
    }  # fmt: skip
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(recorded))
    options = read_run_file(path, "config.yaml")
    assert options == {
        "model": "tudui",
        "optimizer": "sgd",
        "data": "digits",
        "epochs": 2,
        "lr": 0.01,
        "opts": {"momentum": "0.9"},
        "augment": ("flip",),
        "recipe": "digits-sgd",
    }  # fmt: skip  (out, resume and trust never come from a file; the records are ignored)


@pytest.mark.parametrize(
    "text, message",
    [
        ("model: tudui\nepochs: 2\nepoch: 3\n", "c.yaml:3: unknown key 'epoch' (expected one of accumulate, amp,"),
        ("model: tudui\nopts: {a: 1\n", "c.yaml:3: invalid YAML: "),
        ("model: tudui\nmodel: vgg16\n", "c.yaml:2: invalid YAML: duplicate key 'model'"),
        ("- model\n- tudui\n", "c.yaml:1: a config file must be a mapping of run options"),
        ("just text\n", "c.yaml:1: a config file must be a mapping of run options"),
        ("", "c.yaml:1: a config file must be a mapping of run options"),
        ("model: tudui\nbatch_size: big\n", "c.yaml:2: 'batch_size' must be an integer, got 'big'"),
        ("model: tudui\nema: 2\n", "c.yaml: --ema must be a number between 0 and 1"),
    ],
)
def test_a_bad_config_file_is_refused_with_file_and_line(tmp_path, text, message):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(UsageError) as caught:
        read_run_file(path, "c.yaml")
    assert str(caught.value).startswith(message), str(caught.value)


# -- zoo run --recipe ------------------------------------------------------------------------------


def test_a_recipe_run_takes_its_options_and_flags_win(zoo_fork):
    result = zoo_fork("run", "tudui", "sgd", "--recipe", "digits-sgd", *TINY, "--batch-size", "32",
                      "--opt", "momentum=0.8", "--out", "r", "--json")  # fmt: skip
    assert result.returncode == 0, result.stderr
    config = config_of(zoo_fork.cwd / "r")
    assert config["recipe"] == "digits-sgd" and config["optimizer"] == "sgd"
    assert (config["epochs"], config["batch_size"]) == (1, 32)  # typed: they win over the recipe's 10 and 16
    assert config["opts"] == {"momentum": "0.8", "nesterov": "true", "weight_decay": "5e-4"}
    assert config["sched"] == "onecycle" and config["sched_opts"] == {"max_lr": "0.02", "pct_start": "0.15"}
    assert config["augment"] == ["crop:padding=3"] and config["label_smoothing"] == 0.1
    spec = torch.load(zoo_fork.cwd / "r" / "last.pt", weights_only=True)["spec"]
    assert spec["hparams"] == {"lr": 0.01, "momentum": 0.8, "nesterov": True, "weight_decay": 0.0005}
    assert spec["sched"] == "onecycle" and spec["augment"] == ["crop:padding=3"] and spec["label_smoothing"] == 0.1


def test_the_recipe_equals_its_flags(zoo_fork):
    flags = json.loads(zoo_fork("show", "digits-sgd", "--json").stdout)["same_as"].split()[4:]
    assert zoo_fork("run", "tudui", "sgd", "--recipe", "digits-sgd", *TINY, "--out", "a").returncode == 0
    assert zoo_fork("run", "tudui", "sgd", *flags, *TINY, "--out", "b").returncode == 0
    a, b = weights(zoo_fork.cwd / "a"), weights(zoo_fork.cwd / "b")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_another_scheduler_on_the_command_line_drops_the_recipes_schedule_options(zoo_fork):
    result = zoo_fork("run", "tudui", "sgd", "--recipe", "digits-sgd", "--sched", "cosine", *TINY, "--out", "r")
    assert result.returncode == 0, result.stderr
    config = config_of(zoo_fork.cwd / "r")
    assert config["sched"] == "cosine" and config["sched_opts"] == {} and config["augment"] == ["crop:padding=3"]


def test_a_recipe_run_resumes_with_or_without_naming_the_recipe_again(zoo_fork):
    # Stopped twice by SIGINT (after process steps 2 and 4: epoch 1 step 2, then epoch 2 step 2)
    # and resumed: once naming the recipe again, once not (the run's own config.yaml).
    recipe, epochs = ("--recipe", "digits-sgd"), ("--epochs", "3")
    first = zoo_fork("run", "tudui", "sgd", *recipe, *TINY, *epochs, "--out", "r", env={KILL_WORKER_ENV: "0:2:SIGINT"})
    assert_user_error(first, 130, "stopped by SIGINT at epoch 1, step 2/4")
    again = zoo_fork("run", "tudui", "sgd", *recipe, *TINY, *epochs, "--out", "r", "--resume",
                     env={KILL_WORKER_ENV: "0:4:SIGINT"})  # fmt: skip
    assert_user_error(again, 130, "stopped by SIGINT at epoch 2, step 2/4")  # the same options: the same run
    plain = zoo_fork("run", "tudui", "sgd", *epochs, "--out", "r", "--resume", "--quiet")
    assert plain.returncode == 0, plain.stderr  # without it: the run's own config.yaml
    config = config_of(zoo_fork.cwd / "r")
    assert (config["recipe"], config["sched"], config["augment"], config["batch_size"], config["epochs"]) == (
        "digits-sgd", "onecycle", ["crop:padding=3"], 16, 3
    )  # fmt: skip
    assert [json.loads(line)["epoch"] for line in (zoo_fork.cwd / "r" / "metrics.jsonl").read_text().splitlines()] == [
        1, 2, 3
    ]  # fmt: skip


@pytest.mark.parametrize(
    "args, needles",
    [
        (["tudui", "sgd", "--recipe", "digits-sdg"], ["unknown recipe 'digits-sdg'; did you mean 'digits-sgd'?"]),
        (["tudui", "adam", "--recipe", "digits-sgd"], ["optimizer 'adam' has no parameter 'momentum'"]),
        (["tudui", "--recipe", "digits-sgd"], ["the following arguments are required: optimizer"]),
        (["tudui", "sgd", "--recipe", "mine", "--registry", "mine.yaml"], ["recipe 'mine' (mine.yaml:2): unknown "
                                                                           "scheduler 'cosin'; did you mean"]),
    ],
)  # fmt: skip
def test_a_bad_recipe_run_is_one_line_and_writes_nothing(zoo_fork, args, needles):
    (zoo_fork.cwd / "mine.yaml").write_text("recipes:\n  mine:\n    sched: cosin\n")
    result = zoo_fork("run", *args, *TINY, "--out", "r")
    assert_user_error(result, 2, *needles)
    assert not (zoo_fork.cwd / "r").exists()


def test_a_recipe_can_name_the_optimizer(zoo_fork):
    (zoo_fork.cwd / "mine.yaml").write_text("recipes:\n  mine:\n    optimizer: adam\n    opts: {amsgrad: true}\n")
    result = zoo_fork("run", "tudui", "--recipe", "mine", "--registry", "mine.yaml", *TINY, "--out", "r")
    assert result.returncode == 0, result.stderr
    config = config_of(zoo_fork.cwd / "r")
    assert config["optimizer"] == "adam" and config["hparams"]["amsgrad"] is True
    # OPTIMIZER typed wins, and the recipe's hyper-parameters for another optimizer stay out
    result = zoo_fork("run", "tudui", "sgd", "--recipe", "mine", "--registry", "mine.yaml", *TINY, "--out", "s")
    assert result.returncode == 0, result.stderr
    assert config_of(zoo_fork.cwd / "s")["opts"] == {}


# -- zoo run --config ------------------------------------------------------------------------------


def test_a_runs_config_yaml_repeats_it_bitwise(zoo_fork):
    first = zoo_fork("run", "tudui", "sgd", *TINY, "--opt", "momentum=0.9", "--augment", "flip", "--seed", "3",
                     "--out", "x")  # fmt: skip
    assert first.returncode == 0, first.stderr
    again = zoo_fork("run", "--config", "x/config.yaml", "--out", "y")
    assert again.returncode == 0, again.stderr
    x, y = config_of(zoo_fork.cwd / "x"), config_of(zoo_fork.cwd / "y")
    assert y["out"].endswith("y") and {k: v for k, v in x.items() if k != "out"} == {
        k: v for k, v in y.items() if k != "out"
    }
    a, b = weights(zoo_fork.cwd / "x"), weights(zoo_fork.cwd / "y")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_recipe_runs_config_yaml_repeats_it_bitwise(zoo_fork):
    assert zoo_fork("run", "tudui", "sgd", "--recipe", "digits-sgd", *TINY, "--out", "x").returncode == 0
    again = zoo_fork("run", "--config", "x/config.yaml", "--out", "y")
    assert again.returncode == 0, again.stderr
    assert config_of(zoo_fork.cwd / "y")["recipe"] == "digits-sgd"
    a, b = weights(zoo_fork.cwd / "x"), weights(zoo_fork.cwd / "y")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_flags_win_over_the_config_file(zoo_fork):
    (zoo_fork.cwd / "c.yaml").write_text(
        "model: tudui\noptimizer: adam\ndata: fake\nlimit_train: 32\nlimit_val: 16\nepochs: 3\nbatch_size: 8\n"
        "lr: 0.001\nopts: {amsgrad: true}\nsched: cosine\nsched_opts: {eta_min: 0.0001}\ndevice: cpu\nquiet: true\n"
        "out: somewhere-else\nresume: true\n"
    )
    result = zoo_fork("run", "--config", "c.yaml", "--epochs", "1", "--batch-size", "16", "--lr", "0.002", "--out", "r")
    assert result.returncode == 0, result.stderr
    config = config_of(zoo_fork.cwd / "r")
    assert (config["epochs"], config["batch_size"], config["lr"]) == (1, 16, 0.002)
    assert config["optimizer"] == "adam" and config["hparams"]["amsgrad"] is True and config["sched"] == "cosine"
    assert not (zoo_fork.cwd / "somewhere-else").exists()  # out and resume never come from a file
    # MODEL OPTIMIZER typed win too: another optimizer drops the file's hyper-parameters and lr
    result = zoo_fork("run", "--config", "c.yaml", "tudui", "sgd", "--epochs", "1", "--out", "s")
    assert result.returncode == 0, result.stderr
    config = config_of(zoo_fork.cwd / "s")
    assert config["optimizer"] == "sgd" and config["opts"] == {} and config["lr"] == 0.01


def test_a_recipe_on_the_command_line_wins_over_the_file(zoo_fork):
    (zoo_fork.cwd / "c.yaml").write_text(
        "model: tudui\noptimizer: sgd\ndata: fake\nlimit_train: 64\nlimit_val: 32\nepochs: 1\nbatch_size: 8\n"
        "sched: cosine\nlabel_smoothing: 0.2\ndevice: cpu\nquiet: true\n"
    )
    result = zoo_fork("run", "--config", "c.yaml", "--recipe", "digits-sgd", "--epochs", "1", "--out", "r")
    assert result.returncode == 0, result.stderr
    config = config_of(zoo_fork.cwd / "r")
    assert (config["batch_size"], config["sched"], config["label_smoothing"]) == (16, "onecycle", 0.1)
    assert config["epochs"] == 1 and config["recipe"] == "digits-sgd" and config["limit_train"] == 64


@pytest.mark.parametrize(
    "text, needles",
    [
        ("model: tudui\noptimizer: sgd\nepoch: 3\n", ["c.yaml:3: unknown key 'epoch' (expected one of "]),
        ("model: tudui\noptimizer: [sgd\n", ["c.yaml:3: invalid YAML"]),
        ("tudui sgd --epochs 1\n", ["c.yaml:1: a config file must be a mapping"]),
        ("model: tudui\noptimizer: sgd\nepochs: 0\n", ["c.yaml: --epochs must be an integer of at least 1"]),
        ("model: tudui\noptimizer: sgd\nrecipe: digits-sdg\n", ["unknown recipe 'digits-sdg'; did you mean"]),
        ("model: tudui\nepochs: 1\n", ["the following arguments are required: optimizer (c.yaml names none)"]),
        ("model: tudui\noptimizer: sgd\nsched: cosin\n", ["unknown scheduler 'cosin'"]),
    ],
)
def test_a_bad_config_file_is_one_line_and_writes_nothing(zoo_fork, text, needles):
    (zoo_fork.cwd / "c.yaml").write_text(text)
    result = zoo_fork("run", "--config", "c.yaml", *TINY, "--out", "r")
    assert_user_error(result, 2, *needles)
    assert not (zoo_fork.cwd / "r").exists()


def test_a_missing_config_file_is_one_line(zoo_fork):
    assert_user_error(zoo_fork("run", "--config", "nope.yaml", "--out", "r"), 2, "config file nope.yaml does not exist")
    assert_user_error(zoo_fork("run", "--config", ".", "--out", "r"), 2, "config file . is a directory")
    assert not (zoo_fork.cwd / "r").exists()


# -- the recipe's accuracy on the real digits ------------------------------------------------------------


@pytest.mark.slow
def test_the_digits_recipe_reaches_the_issues_accuracy(zoo_fork):
    pytest.importorskip("sklearn")
    accuracies = []
    for seed in (0, 1):
        result = zoo_fork("run", "tudui", "sgd", "--data", "digits", "--recipe", "digits-sgd", "--seed", str(seed),
                          "--device", "cpu", "--quiet", "--json", "--out", f"s{seed}", timeout=1200)  # fmt: skip
        assert result.returncode == 0, result.stderr
        accuracies.append(json.loads(result.stdout)["val_accuracy"])
    assert sum(accuracies) / 2 >= 0.985, accuracies
