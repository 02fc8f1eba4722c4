"""Edges of the model catalogues: sizes a constructor rejects, GoogLeNet's input transform under
ImageNet weights, what --weights says when it does not fit or cannot be fetched, qualified names
in its messages, and timm's fixed-size models at the run's size."""

from __future__ import annotations

import json
import urllib.error

import pytest
import torch
from torchvision.models import resnet18

from test_catalogue import _resnet18
from test_timm_plugin import cache_module, child_zoo, timm_cache  # noqa: F401 (fixtures)
from zoo.cli import main
from zoo.errors import RunError, UsageError
from zoo.registry import get_registry, model_from_checkpoint
from zoo.runner import run
from zoo.weights import base_weights, imagenet_state_dict

# -- a size the model's constructor rejects --------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "size", "needles"),
    [
        ("vit_b_16", "230", ("input size 230x230", "multiple of its patch size", "224 or 240")),
        ("maxvit_t", "256", ("input size 256x256", "7x7 partitions", "224 or 445")),
    ],
)
def test_a_size_the_constructor_rejects_is_refused_naming_sizes_that_work(tmp_path, capsys, model, size, needles):
    # Refused before any data is read: the CIFAR-10 directory named here does not exist.
    out = tmp_path / "runs" / "r"
    args = ["--data", "cifar10", "--data-dir", str(tmp_path / "nowhere"), "--input-size", size, "--out", str(out)]
    assert main(["run", model, "sgd", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"zoo: error: model '{model}' cannot be built for input size"), err
    assert all(n in err for n in needles) and "internal error" not in err, err
    assert not (tmp_path / "runs").exists()


PICKY = """
from zoo import hookimpl


def build(num_classes, input_size=None):
    import torch

    if input_size is not None and input_size[-1] != 8:
        raise ValueError(f"picky builds only at 8, not {input_size[-1]}")
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, num_classes))


@hookimpl
def register_models(register):
    register("picky", build, input_size=(3, 8, 8))
"""


def test_a_builder_failing_at_the_runs_size_is_a_usage_error_naming_model_and_size(monkeypatch, plugin_dist):
    monkeypatch.syspath_prepend(str(plugin_dist("acme", PICKY)))
    registry = get_registry()
    assert registry.build_model("picky", 3)(torch.zeros(2, 3, 8, 8)).shape == (2, 3)
    with pytest.raises(UsageError) as caught:
        registry.build_model("picky", 3, input_size=(3, 16, 16))
    message = str(caught.value)
    assert message.startswith("model 'picky' cannot be built for input size 16x16: ValueError: picky builds only")
    assert "leave it out to train at its own 8x8" in message
    assert isinstance(caught.value.__cause__, ValueError)  # ZOO_DEBUG=1's traceback shows the builder's


def test_a_builder_failing_at_its_own_size_stays_a_bug(monkeypatch, plugin_dist):
    monkeypatch.syspath_prepend(str(plugin_dist("acme", PICKY.replace("(3, 8, 8)", "(3, 16, 16)"))))
    with pytest.raises(ValueError, match="picky builds only at 8"):  # the CLI: internal error, exit 1
        get_registry().build_model("picky", 3)


# -- GoogLeNet and Inception: transform_input under ImageNet weights -------------------------------


def test_googlenet_under_imagenet_weights_transforms_its_input_in_runs_and_rebuilds(monkeypatch):
    registry = get_registry()
    plain = registry.build_model("googlenet", 1000, check=False)
    assert plain.transform_input is False
    state = plain.state_dict()
    monkeypatch.setattr("zoo.weights.imagenet_state_dict", lambda entry, download: (state, "ImageNet weights"))
    load = base_weights("imagenet", registry.model("googlenet"))
    pretrained = registry.build_model("googlenet", 1000, before_edits=load, check=False)
    assert pretrained.transform_input is True  # as torchvision builds it for those weights
    # zoo validate / predict / export rebuild it from the checkpoint's spec the same way
    spec = {"model": "torchvision/googlenet", "num_classes": 1000, "plugin": "torchvision", "weights": "imagenet"}
    assert model_from_checkpoint({"spec": spec, "model": state}).transform_input is True
    rebuilt = model_from_checkpoint({"spec": {**spec, "weights": None}, "model": state})
    assert rebuilt.transform_input is False


# -- --weights: a head of another width, a failed download, qualified names ------------------------


def test_weights_for_another_number_of_classes_say_how_to_fine_tune(tmp_path):
    weights = tmp_path / "r18-1000.pth"
    torch.save(resnet18(num_classes=1000).state_dict(), weights)
    with pytest.raises(UsageError) as caught:
        run(_resnet18(tmp_path / "r", epochs=1, input_size=32, weights=str(weights)))
    message = str(caught.value)
    assert "fc.weight: file (1000, 512) vs model (10, 512)" in message
    assert "The weights are for 1000 classes, the run for 10: to fine-tune" in message
    assert "base: resnet18, base_classes: 1000" in message and "replaces its head ('fc')" in message
    assert "resnet18-finetune" in message and "Fine-tuning" in message
    assert not (tmp_path / "r").exists()


def test_a_failed_download_is_a_run_time_failure_naming_the_url_and_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))

    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(RunError) as caught:
        imagenet_state_dict(get_registry().model("resnet18"), download=True)
    message = str(caught.value)
    expected = tmp_path / "torch-home" / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    assert caught.value.exit_code == 1 and "\n" not in message
    assert "could not download https://download.pytorch.org/models/resnet18-f37072fd.pth: URLError:" in message
    assert f"place it at {expected} (the torch hub cache)" in message


SHADOWED = """
from zoo import hookimpl


@hookimpl
def register_models(register):
    register("resnet18", "torch.nn:Identity")
"""


def test_weights_messages_name_a_shadowed_model_by_its_qualified_name(monkeypatch, plugin_dist, capsys):
    monkeypatch.syspath_prepend(str(plugin_dist("acme", SHADOWED)))
    assert main(["run", "acme/resnet18", "sgd", "--data", "digits", "--weights", "imagenet"]) == 2
    err = capsys.readouterr().err
    assert "no pretrained weights for model 'acme/resnet18' (zoo show acme/resnet18)" in err, err


# -- timm: fixed-size models built for the run's size ----------------------------------------------


def test_timm_passes_img_size_to_fixed_size_models_only(cache_module, monkeypatch):  # noqa: F811
    import zoo_timm.models as models

    catalogue = {"vit": {"input_size": [3, 224, 224], "fixed_input_size": True}, "cnn": {"input_size": [3, 224, 224]}}
    monkeypatch.setattr(models, "catalogue", lambda: catalogue)
    assert models.size_arguments("vit", (3, 256, 256)) == {"img_size": 256}
    assert models.size_arguments("vit", (3, 32, 48)) == {"img_size": (32, 48)}
    assert models.size_arguments("vit", (3, 224, 224)) == models.size_arguments("vit", None) == {}
    assert models.size_arguments("cnn", (3, 32, 32)) == {}


@pytest.mark.slow
def test_a_timm_vit_trains_above_and_below_its_native_size(child_zoo):  # noqa: F811
    name = "timm/vit_tiny_patch16_224"
    shown = json.loads(child_zoo("show", name, "--json").stdout)
    assert shown["min_input_size"] in (None, [1, 1]), shown  # built for the run's size: no fixed minimum
    child_zoo.run_python(
        "import torch\n"
        "from zoo.registry import get_registry\n"
        "registry = get_registry()\n"
        f"for size in (256, 32):\n"
        f"    model = registry.build_model({name!r}, 3, input_size=(3, size, size)).eval()\n"
        "    assert model(torch.zeros(1, 3, size, size)).shape == (1, 3)\n"
    )
    run = ["run", name, "sgd", "--data", "digits", "--input-size", "32", "--epochs", "1", "--limit-train", "32"]
    result = child_zoo(*run, "--limit-val", "16", "--out", "vit", "--quiet", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["epochs"] == 1
