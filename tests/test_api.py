"""The Python API (zoo/api.py, CONTRACT.md "Python API"): the command line's registry, checks
and errors from a script, every user error a ZooError, and ``import zoo`` light."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys

import pytest
import torch

import zoo
from zoo.cli import main
from zoo.errors import UnknownNameError, UsageError

VARIANT = """\
models:
  tudui-frozen:
    base: tudui
    base_classes: 10
    summary: "Tudui, its first convolution frozen and a new head"
    edits:
      - freeze: 'model.0.*'
      - replace: model.8
        layer: Linear
        args: [64, $num_classes]
"""


def test_import_zoo_imports_neither_torch_nor_the_registry():
    code = (
        "import sys, zoo\n"
        "assert callable(zoo.list_models) and issubclass(zoo.ZooError, Exception)\n"
        "loaded = sorted(m for m in sys.modules if m in ('torch', 'zoo.registry', 'zoo.cli', 'zoo.plugins'))\n"
        "assert not loaded, loaded\n"
        "names = zoo.list_models()\n"
        "assert 'tudui' in names and 'torch' not in sys.modules, sorted(sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_an_unknown_attribute_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        zoo.nope  # noqa: B018
    assert {"create_model", "train", "ZooError", "hookimpl"} <= set(dir(zoo))


@pytest.mark.parametrize(
    "function, kind, pattern",
    [
        (zoo.list_models, "models", None),
        (zoo.list_optimizers, "optimizers", "adam*"),
        (zoo.list_datasets, "datasets", None),
    ],
)
def test_listing_is_what_zoo_list_lists(function, kind, pattern):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["list", kind, *([pattern] if pattern else []), "--json"]) == 0
    assert function(pattern) == [row["name"] for row in json.loads(out.getvalue())]
    assert function(pattern)  # something is listed


def test_create_model_applies_the_edits_and_loads_weights(tmp_path, monkeypatch):
    (tmp_path / "variant.yaml").write_text(VARIANT)
    monkeypatch.setenv("ZOO_REGISTRY", str(tmp_path / "variant.yaml"))
    model = zoo.create_model("tudui-frozen", num_classes=3)
    assert model.training and model(torch.zeros(2, 3, 32, 32)).shape == (2, 3)
    assert not model.model[0].weight.requires_grad and model.model[2].weight.requires_grad
    # weights: a state_dict file loaded into the base (tudui) before the edits, as zoo run --weights
    base = zoo.create_model("tudui")
    torch.save(base.state_dict(), tmp_path / "base.pt")
    loaded = zoo.create_model("tudui-frozen", num_classes=3, weights=tmp_path / "base.pt")
    assert torch.equal(loaded.model[4].weight, base.model[4].weight)
    with pytest.raises(UnknownNameError, match="did you mean 'tudui'"):
        zoo.create_model("tudu")
    with pytest.raises(UsageError, match="num_classes must be a positive integer"):
        zoo.create_model("tudui", num_classes=0)
    with pytest.raises(UsageError, match="no such file|not found|does not exist|cannot"):
        zoo.create_model("tudui", weights=tmp_path / "missing.pt")


@pytest.mark.slow  # the first optimizer built in a process imports torch._dynamo (torch's own doing): seconds
def test_create_optimizer_applies_preset_defaults_and_checks_like_opt():
    model = zoo.create_model("tudui")
    adam = zoo.create_optimizer("adam-lr3e-4", model, betas=(0.8, 0.9))
    assert isinstance(adam, torch.optim.Adam)
    assert adam.param_groups[0]["lr"] == 3e-4 and adam.param_groups[0]["betas"] == (0.8, 0.9)
    sgd = zoo.create_optimizer("sgd", model.parameters(), lr=0.1, nesterov=True, momentum=0.9)
    assert (sgd.param_groups[0]["lr"], sgd.param_groups[0]["nesterov"]) == (0.1, True)
    with pytest.raises(UsageError, match="no parameter 'momentm'; did you mean 'momentum'"):
        zoo.create_optimizer("sgd", model, momentm=0.9)
    with pytest.raises(UsageError, match="momentum must be a number"):
        zoo.create_optimizer("sgd", model, momentum="fast")
    with pytest.raises(UsageError, match="optimizer 'sgd': ValueError"):  # the factory's own check
        zoo.create_optimizer("sgd", model, momentum=-1)
    with pytest.raises(UnknownNameError, match="unknown optimizer 'sgdd'"):
        zoo.create_optimizer("sgdd", model)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"limit_trian": 128}, "unknown option 'limit_trian'; did you mean 'limit_train'"),
        ({"epochs": 0}, "argument --epochs: expected a positive integer, got 0"),
        ({"sched_interval": "hourly"}, "invalid choice: 'hourly'"),
        ({"amp": "yes"}, "amp is a switch: expected True or False"),
        ({"epochs": True}, "epochs takes a value"),
        ({"nproc": 2}, "nproc is for the command line only"),
        ({"data": "digitz"}, "unknown dataset 'digitz'; did you mean 'digits'"),
    ],
)
def test_train_errors_are_the_command_lines_as_zoo_errors(options, message, tmp_path):
    with pytest.raises(zoo.ZooError) as caught:
        zoo.train("tudui", "sgd", out=str(tmp_path / "run"), **options)
    assert isinstance(caught.value, UsageError) and message in str(caught.value), str(caught.value)
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_train_then_load_the_checkpoint_and_predict(tmp_path):
    out = tmp_path / "run"
    summary = zoo.train(
        "tudui", "sgd", data="digits", epochs=1, limit_train=128, limit_val=64, batch_size=32,
        out=str(out), quiet=True, opt={"momentum": 0.9}, augment=["flip"], device="cpu",
    )  # fmt: skip
    assert summary["epochs"] == 1 and summary["dataset"] == "digits" and summary["run_dir"] == str(out)
    assert summary["last_checkpoint"] == str(out / "last.pt")
    model, checkpoint = zoo.load_checkpoint(summary["best_checkpoint"])
    assert not model.training and checkpoint["spec"]["hparams"]["momentum"] == 0.9
    assert checkpoint["spec"]["model"] == "tudui/tudui" and checkpoint["epoch"] == 1
    with torch.no_grad():
        logits = model(torch.zeros(4, *checkpoint["spec"]["input_size"]))
    assert logits.shape == (4, 10)
    # the same directory again is the command line's refusal, raised
    with pytest.raises(UsageError, match="--resume"):
        zoo.train("tudui", "sgd", data="digits", epochs=1, limit_train=128, out=str(out), quiet=True)


def test_load_checkpoint_is_as_safe_as_zoo_validate(tmp_path):
    torch.save(zoo.create_model("tudui").state_dict(), tmp_path / "weights.pt")
    with pytest.raises(UsageError, match="not a zoo checkpoint: it is a plain state_dict"):
        zoo.load_checkpoint(tmp_path / "weights.pt")
    torch.save(torch.nn.Linear(2, 2), tmp_path / "pickled.pt")  # method 1: needs weights_only=False
    with pytest.raises(UsageError, match="--trust"):
        zoo.load_checkpoint(tmp_path / "pickled.pt")
    with pytest.raises(UsageError, match="not a zoo checkpoint: it is a whole pickled model"):
        zoo.load_checkpoint(tmp_path / "pickled.pt", trust=True)
