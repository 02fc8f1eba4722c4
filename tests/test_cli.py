"""The command line through real subprocesses: JSON shapes, exit codes, one-line errors, and
no torch import for the registry commands."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import assert_user_error


def test_list_json_holds_the_registry(zoo_cli):
    result = zoo_cli("list", "--json")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert all({"kind", "name", "plugin", "summary", "qualified"} <= set(r) for r in rows)
    assert all(r["qualified"] == f"{r['plugin']}/{r['name']}" for r in rows)  # no clash among the built-ins
    by_kind = {}
    for r in rows:
        by_kind.setdefault(r["kind"], {})[r["name"]] = r["plugin"]
    models = by_kind["model"]
    assert {n: p for n, p in models.items() if p != "torchvision"} == {
        "tudui": "tudui",
        "resnet18-finetune": "registry.yaml",
        "vgg16-add-linear": "registry.yaml",
        "vgg16-classifier-add-linear": "registry.yaml",
        "vgg16-replace-classifier": "registry.yaml",
    }
    assert len([n for n, p in models.items() if p == "torchvision"]) == 80 and models["vgg16"] == "torchvision"
    assert all(isinstance(r["input_size"], list) and "params" in r for r in rows if r["kind"] == "model")
    torch_optim = {n for n, p in by_kind["optimizer"].items() if p == "torch-optim"}
    assert len(torch_optim) == 15 and {"sgd", "adam", "lbfgs", "muon", "sparseadam", "adafactor"} <= torch_optim
    assert by_kind["dataset"] == {
        "cifar10": "datasets",
        "digits": "datasets",
        "fake": "datasets",
        "imagefolder": "datasets",
    }
    assert {"cosine", "warmup-cosine", "onecycle"} <= {
        n for n, p in by_kind["scheduler"].items() if p == "registry.yaml"
    }
    assert {"steplr", "onecyclelr", "reducelronplateau", "warmupcosinelr"} <= set(by_kind["scheduler"])
    assert by_kind["augmentation"] == {"flip": "augment", "crop": "augment", "cutout": "augment"}


def test_list_kind_and_pattern(zoo_cli):
    rows = json.loads(zoo_cli("list", "models", "vgg16-*", "--json").stdout)
    assert [r["name"] for r in rows] == ["vgg16-add-linear", "vgg16-classifier-add-linear", "vgg16-replace-classifier"]
    rows = json.loads(zoo_cli("list", "*adam*", "--json").stdout)
    assert {r["kind"] for r in rows} == {"optimizer"} and "sparseadam" in {r["name"] for r in rows}
    text = zoo_cli("list", "datasets").stdout
    assert text.splitlines()[0].split() == ["KIND", "NAME", "PLUGIN", "SUMMARY"] and "digits" in text


@pytest.mark.parametrize(
    "singular, plural",
    [
        ("model", "models"),
        ("optimizer", "optimizers"),
        ("dataset", "datasets"),
        ("scheduler", "schedulers"),
        ("augmentation", "augmentations"),
    ],
)
def test_list_takes_a_kind_singular_or_plural(zoo_fork, singular, plural):
    rows = json.loads(zoo_fork("list", plural, "--json").stdout)
    assert rows and zoo_fork("list", singular, "--json").stdout == zoo_fork("list", plural, "--json").stdout
    pattern = rows[0]["name"][:2] + "*"
    with_pattern = zoo_fork("list", singular, pattern, "--json")
    assert with_pattern.returncode == 0, with_pattern.stderr
    assert json.loads(with_pattern.stdout) == json.loads(zoo_fork("list", plural, pattern, "--json").stdout)


def test_list_of_a_glob_that_matches_nothing_is_not_an_error(zoo_fork):
    result = zoo_fork("list", "models", "nosuch*")
    assert result.returncode == 0 and result.stderr.strip() == "nothing matches 'nosuch*'"


@pytest.mark.parametrize(
    "args, message",
    [
        (["show", "vgg-16"], "unknown model 'vgg-16'; did you mean 'vgg16'? (zoo list models)"),
        (["show", "adamm"], "unknown optimizer 'adamm'; did you mean 'adam'? (zoo list optimizers)"),
        (["show", "digts"], "unknown dataset 'digts'; did you mean 'digits'? (zoo list datasets)"),
        (["show", "cosin"], "unknown scheduler 'cosin'; did you mean 'cosine'? (zoo list schedulers)"),
        (["show", "cutuot"], "unknown augmentation 'cutuot'; did you mean 'cutout'? (zoo list augmentations)"),
        (
            ["show", "qqqqqq"],
            "unknown model, optimizer, dataset, scheduler, augmentation or recipe 'qqqqqq' (zoo list)",
        ),
        (["run", "vgg-16", "sgd"], "unknown model 'vgg-16'; did you mean 'vgg16'? (zoo list models)"),
        (["run", "tudui", "adamm"], "unknown optimizer 'adamm'; did you mean 'adam'? (zoo list optimizers)"),
        (["check", "--models", "vgg-16"], "unknown model 'vgg-16'; did you mean 'vgg16'? (zoo list models)"),
        (
            ["check", "--models", "tudui", "--optimizers", "adamm"],
            "unknown optimizer 'adamm'; did you mean 'adam'? (zoo list optimizers)",
        ),
        (["check", "--models", "nosuch*"], "no model matches 'nosuch*' (zoo list models)"),  # a glob
    ],
)
def test_an_unknown_name_is_reported_one_way_everywhere(zoo_fork, args, message):
    result = zoo_fork(*args)
    assert_user_error(result, 2)
    assert result.stderr.strip() == f"zoo: error: {message}"


@pytest.mark.parametrize(
    "command",
    [
        ["list", "--json"],
        ["plugins", "--all", "--json"],
        ["list", "optimizers"],
        ["list", "schedulers"],
        ["list", "augmentations", "--json"],
    ],
)
def test_registry_commands_do_not_import_torch(command):
    code = (
        "import sys, io, contextlib\n"
        "from zoo.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        f"    assert main({command!r}) == 0\n"
        "heavy = sorted(m for m in ('torch', 'torchvision', 'sklearn', 'numpy') if m in sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_show_optimizer_lists_parameters_and_defaults(zoo_fork):
    info = json.loads(zoo_fork("show", "adagrad", "--json").stdout)
    params = {p["name"]: p for p in info["parameters"]}
    assert params["lr"]["default"] == 0.01 and params["eps"]["default"] == 1e-10
    assert {"lr_decay", "weight_decay", "initial_accumulator_value"} <= set(params)
    text = zoo_fork("show", "sgd").stdout
    assert "lr" in text and "0.01" in text  # the zoo's default, from the seed


def test_show_model(zoo_fork):
    info = json.loads(zoo_fork("show", "tudui", "--json").stdout)
    assert info["parameters"] == 145578 and info["output_shape"] == ["batch", 10]
    assert "Conv2d(3, 32, kernel_size=(5, 5)" in info["architecture"]


@pytest.mark.slow  # builds a VGG16
def test_show_a_variant_names_its_base_and_edits(zoo_fork):
    info = json.loads(zoo_fork("show", "vgg16-replace-classifier", "--json").stdout)
    assert info["edits"][0]["text"] == "replace classifier.6 with Linear(4096, num_classes)"
    assert info["output_shape"] == ["batch", 10] and info["base"] == "vgg16"


@pytest.mark.slow
def test_naive_add_module_is_refused_on_the_command_line(zoo_fork, tmp_path):
    path = tmp_path / "naive.yaml"
    path.write_text(
        "models:\n  vgg16-naive:\n    base: vgg16\n    base_classes: 1000\n    edits:\n"
        "      - add_module: add_linear\n        layer: Linear\n        args: [1000, $num_classes]\n"
    )
    result = zoo_fork("show", "vgg16-naive", "--registry", str(path))
    assert_user_error(result, 2, f"{path}:3", "never called", "append: add_linear")


@pytest.mark.parametrize(
    "args, needles",
    [
        (["show", "vgg-16"], ["unknown model 'vgg-16'; did you mean 'vgg16'? (zoo list models)"]),
        (["list", "modles", "x"], ["unknown kind 'modles'"]),
        (["run", "tudui"], ["the following arguments are required: optimizer"]),
        (["run", "tudui", "sgd", "--epochs", "0"], ["argument --epochs: expected a positive integer, got 0"]),
        (["run", "tudui", "sgd", "--batch-size", "-4"], ["--batch-size: expected a positive integer, got -4"]),
        (["frobnicate"], ["unknown command 'frobnicate'"]),
        (["list", "--registry", "/nonexistent/zoo.yaml"], ["registry file /nonexistent/zoo.yaml does not exist"]),
    ],
)
def test_usage_errors_are_one_line_exit_2(zoo_cli, args, needles):
    assert_user_error(zoo_cli(*args), 2, *needles)


@pytest.mark.parametrize(
    "command", ["list", "show", "plugins", "install", "uninstall", "run", "validate", "predict", "export", "check"]
)
def test_every_command_explains_itself(zoo_cli, command):
    result = zoo_cli(command, "--help")
    assert result.returncode == 0 and f"usage: zoo {command}" in result.stdout


def test_console_script_and_version():
    import shutil

    script = shutil.which("zoo", path=str(__import__("pathlib").Path(sys.executable).parent))
    assert script, "the zoo console script is not installed beside this Python"
    result = subprocess.run([script, "--version"], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.startswith("zoo ")


@pytest.mark.slow
def test_a_non_editable_install_ships_the_registry_and_the_builtins(tmp_path):
    # Built and installed as a user would get it from an index: registry.yaml must be inside
    # the package and the built-in plugins must come through its entry points.
    from conftest import ROOT

    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    code = (
        "import json, sys, io, contextlib\n"
        "import zoo\n"
        f"assert zoo.__file__.startswith({str(target)!r}), zoo.__file__\n"
        "from zoo.cli import main\n"
        "out = io.StringIO()\n"
        "with contextlib.redirect_stdout(out):\n"
        "    assert main(['list', '--json']) == 0\n"
        "rows = json.loads(out.getvalue())\n"
        "print(json.dumps(sorted((r['plugin'], r['name']) for r in rows if r['kind'] == 'model')))\n"
    )
    env = {**__import__("os").environ, "PYTHONPATH": str(target)}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    models = json.loads(result.stdout)
    assert ["registry.yaml", "vgg16-replace-classifier"] in models and ["tudui", "tudui"] in models
    assert len([m for m in models if m[0] == "torchvision"]) == 80  # its catalogue.json ships with it


def test_install_runs_pip_in_the_zoos_own_python_and_reports_its_failure(zoo_cli, tmp_path):
    missing = tmp_path / "no-such-plugin"
    result = zoo_cli("install", str(missing))
    assert f"{sys.executable} -m pip install {missing}" in result.stderr  # the interpreter running zoo
    assert_user_error(result, 1, "pip install failed with exit code")
