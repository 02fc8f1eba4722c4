"""The bad-input catalogue: every way a command line can be wrong is one clear error and no harm.

Each case runs one ``zoo`` command (a fresh process, forkcli.py) in a working directory set up
for it, and asserts the contract's error format: the exit code (2 for bad input, 1 where
CONTRACT.md says run-time failure), exactly one ``zoo: error:`` line on stderr holding the
useful detail (the name, the suggestion, the file, the line), no traceback, and nothing on disk
changed: not a file created, deleted or rewritten (the working directory is hashed before and
after, ``$ZOO_DATA`` inside it). The broken plugins fail only under ``ZOO_STRICT_PLUGINS=1``;
without it the same plugins are a warning and the command works (the last tests), and so are
two plugins registering one name (the built-in keeps it: CONTRACT.md, "Names").
"""

from __future__ import annotations

import hashlib
import json
import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

import datafiles
from conftest import ZooCLI, assert_user_error
from zoo.runner import RunConfig, run

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
    "1",
    "--batch-size",
    "4",
    "--device",
    "cpu",
)


@dataclass(frozen=True)
class Case:
    args: tuple[str, ...]
    needles: tuple[str, ...]  # each must be in the one error line
    code: int = 2
    setup: Callable[[ZooCLI, Callable], None] | None = None  # (cli, plugin_dist) -> None, before the snapshot
    env: dict[str, str] = field(default_factory=dict)


# -- what the cases set up ------------------------------------------------------------------------


def registry_file(text: str) -> Callable[[ZooCLI, Callable], None]:
    def setup(cli: ZooCLI, plugin_dist: Callable) -> None:
        (cli.cwd / "mine.yaml").write_text(textwrap.dedent(text).lstrip())

    return setup


def variant(edit: str) -> Callable[[ZooCLI, Callable], None]:
    """mine.yaml declaring ``tudui-edited``: Tudui with one edit (YAML lines, indented 6)."""
    return registry_file(
        "models:\n  tudui-edited:\n    base: tudui\n    edits:\n"
        + textwrap.indent(textwrap.dedent(edit).strip(), " " * 6)
        + "\n"
    )


def half_written_cifar10(cli: ZooCLI, plugin_dist: Callable) -> None:
    base = datafiles.write_cifar10_dir(cli.cwd / "cifar")
    blob = (base / "data_batch_3").read_bytes()
    (base / "data_batch_3").write_bytes(blob[: len(blob) // 3])  # killed while copying


def files(**contents: bytes | str) -> Callable[[ZooCLI, Callable], None]:
    def setup(cli: ZooCLI, plugin_dist: Callable) -> None:
        for name, content in contents.items():
            path = cli.cwd / name.replace("__", "/")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content.encode() if isinstance(content, str) else content)

    return setup


def an_image(cli: ZooCLI, plugin_dist: Callable) -> None:
    datafiles.write_image(cli.cwd / "cat.png")


def a_finished_run(cli: ZooCLI, plugin_dist: Callable) -> None:
    run(
        RunConfig(
            "tudui",
            "sgd",
            data="fake",
            epochs=1,
            batch_size=4,
            limit_train=8,
            limit_val=8,
            out=str(cli.cwd / "done"),
            quiet=True,
            device="cpu",
        )
    )


def another_models_checkpoint(cli: ZooCLI, plugin_dist: Callable) -> None:
    """A zoo checkpoint of ``tudui-head`` (Tudui plus an appended layer), not of ``tudui``."""
    (cli.cwd / "head.yaml").write_text(
        "models:\n  tudui-head:\n    base: tudui\n    edits:\n      - append: head\n"
        "        layer: Linear\n        args: [$num_classes, $num_classes]\n"
    )
    run(
        RunConfig(
            "tudui-head",
            "sgd",
            data="fake",
            epochs=1,
            batch_size=4,
            limit_train=8,
            limit_val=8,
            out=str(cli.cwd / "head-run"),
            quiet=True,
            device="cpu",
            registry_files=(str(cli.cwd / "head.yaml"),),
        )
    )


def plugin(source: str) -> Callable[[ZooCLI, Callable], None]:
    def setup(cli: ZooCLI, plugin_dist: Callable) -> None:
        cli.paths.append(str(plugin_dist("acme", source)))

    return setup


PLUGINS = {
    "import-error": (
        "raise ImportError(\"cannot import name 'missing_thing' from 'somewhere'\")\n",
        "plugin 'acme' failed to load: ImportError: cannot import name 'missing_thing'",
    ),
    "raising-hook": (
        "from zoo import hookimpl\n\n@hookimpl\ndef register_models(register):\n"
        "    register('acme-net', 'x:y')\n    raise RuntimeError('boom inside register_models')\n",
        "plugin 'acme' failed",
        "RuntimeError: boom inside register_models",
    ),
    "misspelt-hook": (
        "from zoo import hookimpl\n\n@hookimpl\ndef register_model(register):\n    pass\n",
        "plugin 'acme' failed to load: unknown hook 'register_model'; did you mean 'register_models'?",
    ),
}
# a plugin registering one name twice (a built-in's name it may take: that is reached as acme/tudui)
DUPLICATE = (
    "from zoo import hookimpl\n\n@hookimpl\ndef register_models(register):\n"
    "    register('acme-net', 'x:y')\n    register('acme-net', 'x:z')\n"
)
STRICT = {"ZOO_STRICT_PLUGINS": "1"}
NOT_AN_IMAGE = b"GIF89a but nothing after the header"


CASES = [
    # names, with a suggestion
    pytest.param(
        Case(
            ("run", "tuduii", "sgd", "--data", "fake"),
            ("unknown model 'tuduii'; did you mean 'tudui'? (zoo list models)",),
        ),
        id="unknown-model",
    ),
    pytest.param(
        Case(("run", "tudui", "adamm", "--data", "fake"), ("unknown optimizer 'adamm'; did you mean 'adam'?",)),
        id="unknown-optimizer",
    ),
    pytest.param(
        Case(("run", "tudui", "sgd", "--data", "cifar100"), ("unknown dataset 'cifar100'; did you mean 'cifar10'?",)),
        id="unknown-dataset",
    ),
    pytest.param(
        Case(("show", "vgg-16"), ("unknown model 'vgg-16'; did you mean 'vgg16'? (zoo list models)",)),
        id="show-unknown-name",
    ),
    pytest.param(
        Case(
            ("list", "modles", "vgg*"),
            ("unknown kind 'modles': expected models, optimizers, datasets, schedulers, augmentations or recipes",),
        ),
        id="list-unknown-kind",
    ),
    pytest.param(
        Case(
            ("run", "tudui", "sgd", "--data", "fake", "--weights", "imagenet"),
            ("no pretrained weights for model 'tudui'",),
        ),
        id="weights-imagenet-for-tudui",
    ),
    # optimizer hyper-parameters: key, value, type, form
    pytest.param(
        Case(
            (*TRAIN, "--opt", "momentun=0.9"),
            ("optimizer 'sgd' has no parameter 'momentun'; did you mean 'momentum'?",),
        ),
        id="opt-unknown-key",
    ),
    pytest.param(
        Case((*TRAIN, "--opt", "momentum=fast"), ("optimizer 'sgd': momentum must be a number, got 'fast'",)),
        id="opt-wrong-type",
    ),
    pytest.param(
        Case((*TRAIN, "--opt", "nesterov=maybe"), ("nesterov must be a boolean (true/false), got 'maybe'",)),
        id="opt-wrong-type-bool",
    ),
    pytest.param(
        Case(
            (*TRAIN, "--opt", "momentum=-1"),
            ("'sgd' cannot be built with lr=0.01, momentum=-1.0", "Invalid momentum value: -1.0"),
        ),
        id="opt-value-out-of-range",
    ),
    pytest.param(
        Case(("run", "tudui", "adam", *TRAIN[3:], "--opt", "betas=0.9"), ("betas must be 2 comma-separated numbers",)),
        id="opt-wrong-arity",
    ),
    pytest.param(Case((*TRAIN, "--opt", "momentum"), ("--opt expects KEY=VALUE, got 'momentum'",)), id="opt-no-equals"),
    # numbers out of range
    pytest.param(
        Case((*TRAIN, "--epochs", "0"), ("argument --epochs: expected a positive integer, got 0",)), id="zero-epochs"
    ),
    pytest.param(
        Case((*TRAIN, "--epochs", "-3"), ("argument --epochs: expected a positive integer, got -3",)),
        id="negative-epochs",
    ),
    pytest.param(
        Case((*TRAIN, "--batch-size", "0"), ("argument --batch-size: expected a positive integer, got 0",)),
        id="zero-batch-size",
    ),
    pytest.param(
        Case(
            (*TRAIN, "--batch-size", "sixteen"), ("argument --batch-size: expected a positive integer, got 'sixteen'",)
        ),
        id="batch-size-not-a-number",
    ),
    pytest.param(Case((*TRAIN, "--lr", "nan"), ("argument --lr: expected a positive number, got nan",)), id="lr-nan"),
    pytest.param(
        Case((*TRAIN, "--workers", "-1"), ("argument --workers: expected an integer >= 0, got -1",)),
        id="negative-workers",
    ),
    # devices
    pytest.param(
        Case((*TRAIN[:-2], "--device", "cuda:7"), ("device 'cuda:7' is not available", "available: cpu")),
        id="device-cuda7",
        marks=pytest.mark.skipif(torch.cuda.device_count() > 7, reason="this machine has a cuda:7"),
    ),
    pytest.param(
        Case((*TRAIN[:-2], "--device", "tpu"), ("unknown device 'tpu': expected auto, cpu, cuda or cuda:N",)),
        id="device-unknown",
    ),
    # registry.yaml
    pytest.param(
        Case(
            ("list", "--registry", "mine.yaml"),
            ("mine.yaml:3: invalid YAML",),
            setup=registry_file("models:\n  tudui-x: {base: tudui, edits: [\n"),
        ),
        id="registry-syntax-error",
    ),
    pytest.param(
        Case(
            ("list",),
            ("mine.yaml:3: invalid YAML",),
            env={"ZOO_REGISTRY": "mine.yaml"},
            setup=registry_file("models:\n  tudui-x: {base: tudui, edits: [\n"),
        ),
        id="registry-from-environment",
    ),
    pytest.param(
        Case(("list", "--registry", "missing.yaml"), ("registry file missing.yaml does not exist",)),
        id="registry-missing",
    ),
    pytest.param(
        Case(
            ("list", "--registry", "mine.yaml"),
            ("mine.yaml:3: model 'tudui-x': base must be a plugin's model", "did you mean 'tudui'?"),
            setup=registry_file("models:\n  tudui-x:\n    base: tuduii\n    edits: []\n"),
        ),
        id="registry-unknown-base",
    ),
    pytest.param(
        Case(
            ("show", "tudui-edited", "--registry", "mine.yaml"),
            ("mine.yaml:5: unknown layer 'Linearr'", "did you mean 'Linear'?"),
            setup=variant("- replace: model.8\n  layer: Linearr\n  args: [64, $num_classes]"),
        ),
        id="edit-unknown-layer",
    ),
    pytest.param(
        Case(
            ("show", "tudui-edited", "--registry", "mine.yaml"),
            ("mine.yaml:5: no module 'model.99' in the model", "its children: 0, 1"),
            setup=variant("- replace: model.99\n  layer: Linear\n  args: [64, $num_classes]"),
        ),
        id="edit-path-missing",
    ),
    pytest.param(
        Case(
            ("show", "tudui-edited", "--registry", "mine.yaml"),
            ("mine.yaml:3: model 'tudui-edited' outputs shape (2, 7)", "expected (2, 10) for 10 classes"),
            setup=variant("- replace: model.8\n  layer: Linear\n  args: [64, 7]"),
        ),
        id="edit-wrong-output-shape",
    ),
    pytest.param(
        Case(
            ("run", "tudui-edited", *TRAIN[2:], "--out", "r", "--registry", "mine.yaml"),
            ("mine.yaml:5: cannot build Linear", "in_features must be an integer, got 'sixty-four'"),
            setup=variant("- replace: model.8\n  layer: Linear\n  args: [sixty-four, $num_classes]"),
        ),
        id="edit-argument-wrong-type",
    ),
    # data
    pytest.param(
        Case(
            (*TRAIN[:3], "--data", "cifar10", "--data-dir", "nowhere"),
            ("no CIFAR-10 in nowhere/cifar-10-batches-py", "--download"),
        ),
        id="dataset-missing",
    ),
    pytest.param(
        Case(
            (*TRAIN[:3], "--data", "cifar10", "--data-dir", "cifar", "--out", "r"),
            ("CIFAR-10 file cifar/cifar-10-batches-py/data_batch_3 is corrupt", "delete"),
            setup=half_written_cifar10,
        ),
        id="dataset-half-written",
    ),
    pytest.param(
        Case(
            (*TRAIN[:3], "--data", "imagefolder", "--data-dir", "pics", "--out", "r"),
            ("pics/train: Found no valid file for the classes cat",),
            setup=files(pics__train__cat__1=NOT_AN_IMAGE, pics__val__cat__1=NOT_AN_IMAGE),
        ),
        id="imagefolder-not-images",
    ),
    pytest.param(
        Case(
            ("predict", "done/last.pt", "notes.png", "--device", "cpu"),
            ("notes.png: not a readable image",),
            setup=lambda cli, pd: (a_finished_run(cli, pd), files(**{"notes.png": "shopping list"})(cli, pd)),
        ),
        id="predict-text-as-image",
    ),
    pytest.param(
        Case(
            ("predict", "done/last.pt", "half.gif", "--device", "cpu"),
            ("half.gif: not a readable image",),
            setup=lambda cli, pd: (a_finished_run(cli, pd), files(**{"half.gif": NOT_AN_IMAGE})(cli, pd)),
        ),
        id="predict-truncated-image",
    ),
    pytest.param(
        Case(
            ("predict", "done/last.pt", "nothing.png", "--device", "cpu"),
            ("nothing.png: no such file",),
            setup=a_finished_run,
        ),
        id="predict-missing-image",
    ),
    pytest.param(
        Case(
            ("validate", "done/last.pt", "--data", "imagefolder", "--data-dir", "pics", "--device", "cpu"),
            ("dataset 'imagefolder' has 2 classes but done/last.pt was trained for 10",),
            setup=lambda cli, pd: (
                a_finished_run(cli, pd),
                datafiles.write_image_folder(cli.cwd / "pics", ("cat", "dog"), 1),
            ),
        ),
        id="validate-on-data-with-other-classes",
    ),
    # run directories and checkpoints
    pytest.param(
        Case(
            (*TRAIN, "--out", "done"),
            ("run directory done already exists: pass --resume to continue it",),
            setup=a_finished_run,
        ),
        id="out-exists",
    ),
    pytest.param(
        Case((*TRAIN, "--out", "absent", "--resume"), ("nothing to resume: absent does not exist",)),
        id="resume-nothing",
    ),
    pytest.param(Case((*TRAIN, "--resume"), ("--resume needs --out DIR",)), id="resume-without-out"),
    pytest.param(
        Case(
            (*TRAIN, "--out", "done", "--resume", "--batch-size", "2"),
            ("cannot resume done/last.pt: it was trained with --batch-size 4, not 2",),
            setup=a_finished_run,
        ),
        id="resume-a-different-run",
    ),
    pytest.param(
        Case(
            (*TRAIN, "--out", "taken/run"),
            ("cannot create run directory taken/run: Not a directory",),
            setup=files(taken="a file"),
        ),
        id="out-parent-is-a-file",
    ),
    pytest.param(
        Case(
            (*TRAIN, "--out", "r", "--weights", "head-run/last.pt"),
            ("--weights head-run/last.pt does not fit base model 'tudui'", "unexpected keys head.weight"),
            setup=another_models_checkpoint,
        ),
        id="weights-of-another-model",
    ),
    pytest.param(
        Case(("validate", "nothing.pt"), ("checkpoint nothing.pt does not exist",)), id="validate-missing-checkpoint"
    ),
    pytest.param(
        Case(
            ("export", "done/last.pt", "--format", "full", "-o", "done/last.pt/x.pt"),
            ("-o done/last.pt/x.pt: done/last.pt is a file",),
            setup=a_finished_run,
        ),
        id="export-into-a-file",
    ),
    pytest.param(
        Case(
            ("export", "done/last.pt", "--format", "state-dict", "-o", "done/last.pt"),
            ("would overwrite the checkpoint it reads",),
            setup=a_finished_run,
        ),
        id="export-over-its-source",
    ),
    # plugins, strict
    *(
        pytest.param(Case(("list",), needles, env=STRICT, setup=plugin(source)), id=f"plugin-{kind}")
        for kind, (source, *needles) in PLUGINS.items()
    ),
    pytest.param(
        Case(
            ("list",),
            ("model 'acme-net' is registered twice by plugin 'acme'", "ZOO_STRICT_PLUGINS"),
            env=STRICT,
            setup=plugin(DUPLICATE),
        ),
        id="plugin-duplicate-name",
    ),
]


def snapshot(root: Path) -> dict[str, str]:
    """Every path under ``root`` with its mode and, for files, a hash of the contents."""
    out = {}
    for path in sorted(root.rglob("*")):
        stat = path.lstat()
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "-"
        out[str(path.relative_to(root))] = f"{stat.st_mode:o} {digest}"
    return out


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_one_error_line_and_changes_nothing(zoo_fork, plugin_dist, case):
    if case.setup:
        case.setup(zoo_fork, plugin_dist)
    before = snapshot(zoo_fork.cwd)
    result = zoo_fork(*case.args, env=case.env)
    assert_user_error(result, case.code, *case.needles)
    assert snapshot(zoo_fork.cwd) == before


def test_the_catalogue_covers_every_command_that_takes_input():
    commands = {case.values[0].args[0] for case in CASES}
    assert {"run", "show", "list", "validate", "predict", "export"} <= commands
    assert len(CASES) >= 25


@pytest.mark.parametrize("kind", PLUGINS)
def test_without_strict_mode_a_broken_plugin_is_one_warning_and_the_command_works(zoo_fork, plugin_dist, kind):
    plugin(PLUGINS[kind][0])(zoo_fork, plugin_dist)
    result = zoo_fork("list", "models", "--json")
    assert result.returncode == 0, result.stderr
    assert "tudui" in {row["name"] for row in json.loads(result.stdout)}
    warnings = [line for line in result.stderr.splitlines() if line.startswith("zoo: warning:")]
    assert len(warnings) == 1 and "plugin 'acme' failed" in warnings[0], result.stderr
    assert "zoo: error" not in result.stderr and "Traceback" not in result.stderr


def test_a_broken_plugin_does_not_stop_training(zoo_fork, plugin_dist):
    plugin(PLUGINS["raising-hook"][0])(zoo_fork, plugin_dist)
    result = zoo_fork(*TRAIN, "--out", "r", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["epochs"] == 1
    assert result.stderr.count("zoo: warning: plugin 'acme' failed") == 1
