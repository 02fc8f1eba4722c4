"""torchvision's classifiers as built-in models (issue 14): the generated catalogue against the
installed torchvision, listing without torch, --input-size and its minimum, hash-checked
ImageNet weights, and the fine-tuning pattern of registry.yaml."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml
from torch import nn

from zoo.cli import main
from zoo.config import RunConfig
from zoo.errors import UsageError
from zoo.registry import get_registry
from zoo.runner import run
from zoo.weights import base_weights, imagenet_state_dict, name_hash, verify_hash
from zoo_torchvision import load_catalogue
from zoo_torchvision.generate import catalogue

# -- the catalogue ---------------------------------------------------------------------------------


def test_the_catalogue_is_the_installed_torchvisions():
    ours, theirs = load_catalogue(), catalogue()
    added, gone = sorted(set(theirs) - set(ours)), sorted(set(ours) - set(theirs))
    changed = sorted(n for n in set(ours) & set(theirs) if ours[n] != theirs[n])
    assert not (added or gone or changed), (
        f"torchvision's classifiers changed (new {added}, gone {gone}, changed {changed}): "
        f"run python -m zoo_torchvision.generate and review the diff"
    )
    assert len(ours) == 80


def test_zoo_list_json_holds_every_classifier_with_its_size_and_parameters_without_torch():
    code = (
        "import sys, io, json, contextlib\n"
        "from zoo.cli import main\n"
        "out = io.StringIO()\n"
        "with contextlib.redirect_stdout(out):\n"
        "    assert main(['list', 'models', '--json']) == 0\n"
        "heavy = sorted(m for m in ('torch', 'torchvision') if m in sys.modules)\n"
        "assert not heavy, heavy\n"
        "print(out.getvalue())\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    rows = {r["name"]: r for r in json.loads(result.stdout) if r["plugin"] == "torchvision"}
    assert set(rows) == set(load_catalogue())
    sizes = {name: (r["input_size"], r["params"]) for name, r in rows.items()}
    assert sizes["resnet18"] == ([3, 224, 224], 11_689_512)
    assert sizes["inception_v3"][0] == [3, 299, 299] and sizes["vit_h_14"][0] == [3, 518, 518]
    assert all(isinstance(params, int) and params > 0 for _, params in sizes.values())


def test_show_gives_sizes_parameters_and_weights_from_the_table(capsys):
    with contextlib.redirect_stdout(io.StringIO()) as out:
        assert main(["show", "resnet18", "--json"]) == 0
    info = json.loads(out.getvalue())
    assert info["input_size"] == [3, 224, 224] and info["min_input_size"] == [1, 1]
    assert info["params"] == 11_689_512 and info["parameters"] == 11_181_642  # 1000 classes, then 10
    assert info["weights"][0]["file"] == "resnet18-f37072fd.pth" and info["weights"][0]["name"] == "IMAGENET1K_V1"
    assert main(["show", "vit_b_16"]) == 0
    text = capsys.readouterr().out
    assert "at least 224x224" in text and "86,567,656 at 1000 classes" in text and "vit_b_16-c867db91.pth" in text


def test_builders_follow_the_input_size_and_train_to_a_tensor():
    registry = get_registry()
    with torch.device("meta"):
        # ViTs are built for the run's size (vit_h_14 for its 518), as torchvision builds them
        # for their weights; googlenet and inception_v3 without the auxiliary heads.
        registry.build_model("vit_b_32", 10, input_size=(3, 256, 256))  # a dry forward at 256
        for name, size in (("googlenet", 224), ("inception_v3", 299)):
            model = registry.build_model(name, 10).train()
            out = model(torch.zeros(2, 3, size, size))
            assert isinstance(out, torch.Tensor) and out.shape == (2, 10), name


@pytest.mark.slow
def test_every_torchvision_model_builds_for_its_size_with_batch_by_classes_output():
    # On the meta device: shapes without memory or initialisation. torchvision's RegNets compute
    # their widths with tensors while constructing, which the meta device cannot: two on the CPU.
    registry = get_registry()
    names = [e.name for e in registry.entries("model") if e.plugin == "torchvision"]
    failed = {}
    for name in names:
        entry = registry.model(name)
        try:
            if name.startswith("regnet"):
                if name in ("regnet_x_400mf", "regnet_y_400mf"):
                    registry.build_model(name, 7, input_size=(3, 64, 64))
                continue
            with torch.device("meta"):  # build_model's dry forward pass checks the output is (2, 7)
                registry.build_model(name, 7, input_size=entry.input_size)
        except Exception as exc:  # collected, and reported below
            failed[name] = f"{type(exc).__name__}: {exc}"
    assert not failed, failed


# -- --input-size ------------------------------------------------------------------------------------


def test_a_size_below_the_models_minimum_is_refused_before_anything_is_written(tmp_path, capsys):
    out = tmp_path / "runs" / "vit"
    assert main(["run", "vit_b_16", "sgd", "--data", "digits", "--input-size", "32", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("zoo: error: --input-size 32: model 'vit_b_16' takes inputs of at least 224 pixels"), err
    assert not (tmp_path / "runs").exists()


def test_a_registry_variant_below_its_bases_minimum_names_its_line(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("models:\n  tiny-vit:\n    base: vit_b_16\n    input_size: [3, 32, 32]\n")
    with pytest.raises(UsageError, match=r"mine.yaml:3: .*'tiny-vit'.*at least 224 pixels, not 32"):
        get_registry([str(path)])


def _resnet18(out: Path, **options) -> RunConfig:
    return RunConfig("resnet18", "sgd", data="digits", limit_train=32, limit_val=8, batch_size=32, out=str(out),
                     quiet=True, device="cpu", **options)  # fmt: skip


@pytest.mark.slow
def test_resnet18_trains_at_32_pixels_and_its_checkpoint_remembers(tmp_path):
    from zoo.runner import validate

    run_dir = tmp_path / "r"
    assert run(_resnet18(run_dir, epochs=1, input_size=32))["epochs"] == 1
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["input_size"] == 32
    assert torch.load(run_dir / "last.pt", weights_only=True)["spec"]["input_size"] == [3, 32, 32]
    # --resume takes the size from config.yaml (given=(): nothing named again); validate from the checkpoint
    assert run(_resnet18(run_dir, epochs=2, resume=True, given=("epochs",)))["epochs"] == 2
    assert torch.load(run_dir / "last.pt", weights_only=True)["spec"]["input_size"] == [3, 32, 32]
    assert validate(run_dir / "last.pt", device="cpu", limit_val=8)["samples"] == 8
    with pytest.raises(UsageError, match="trained at 32x32 pixels, not --input-size 64"):
        run(_resnet18(run_dir, epochs=3, resume=True, input_size=64))


@pytest.mark.slow
def test_resnet18_trains_at_its_own_224_pixels(tmp_path):
    # zoo run resnet18 sgd --data digits --epochs 1, in one step of 2: the 224-pixel path (the
    # batches resized for the model, the checkpoint's size), which more images would not add to
    summary = run(RunConfig("resnet18", "sgd", data="digits", epochs=1, limit_train=2, limit_val=2, batch_size=2,
                            out=str(tmp_path / "r"), quiet=True, device="cpu"))  # fmt: skip
    assert summary["epochs"] == 1
    assert torch.load(tmp_path / "r" / "last.pt", weights_only=True)["spec"]["input_size"] == [3, 224, 224]


@pytest.mark.slow
def test_check_is_ok_for_four_torchvision_models_at_their_own_size():
    from zoo.check import run_check

    for model in ("resnet18", "mobilenet_v3_small", "efficientnet_b0", "convnext_tiny"):
        rows = run_check(models=model, optimizers="sgd", budget_s=120)
        assert [(r["model"], r["status"]) for r in rows] == [(model, "ok")], rows


# -- ImageNet weights: verified before they are loaded -------------------------------------------


def test_a_cached_weights_file_with_a_wrong_hash_is_refused_and_never_loaded(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    cache = tmp_path / "torch-home" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    crafted = cache / "resnet18-f37072fd.pth"
    torch.save({"fc.weight": torch.zeros(1)}, crafted)  # loadable, but not the published file
    loads = []
    monkeypatch.setattr(torch, "load", lambda *a, **k: loads.append(a) or {})
    with pytest.raises(UsageError) as info:
        run(RunConfig("resnet18", "sgd", data="digits", weights="imagenet", out=str(tmp_path / "r"), quiet=True))
    actual = hashlib.sha256(crafted.read_bytes()).hexdigest()[:8]
    message = str(info.value)
    assert str(crafted) in message and "starts f37072fd" in message and f"it starts {actual}" in message
    assert "Delete it and download it again" in message
    assert loads == [] and not (tmp_path / "r").exists()


def test_the_verifier_takes_a_file_named_by_its_own_hash_and_loads_it(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    cache = tmp_path / "torch-home" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    state = nn.Linear(3, 2).state_dict()
    torch.save(state, cache / "tmp.pth")
    prefix = hashlib.sha256((cache / "tmp.pth").read_bytes()).hexdigest()[:10]
    named = cache / f"tiny_v1-{prefix}.pth"
    (cache / "tmp.pth").rename(named)
    verify_hash(named)  # no error
    url = f"https://example.invalid/{named.name}"
    entry = SimpleNamespace(name="tiny", base=None, weights=({"name": "V1", "url": url, "file": named.name},))
    loaded, source = imagenet_state_dict(entry, download=False)
    assert source == "ImageNet weights V1 of tiny" and all(torch.equal(loaded[k], state[k]) for k in state)
    assert name_hash("mnasnet0.5_top1_67.823-3ffadce67e.pth") == "3ffadce67e"  # torch.hub's reading
    assert name_hash("tudui.pth") is None and name_hash("resnet18-f37072fd.pth") == "f37072fd"


def test_imagenet_weights_leave_out_the_auxiliary_heads_torchvision_switches_off(tmp_path, monkeypatch):
    registry = get_registry()
    googlenet = registry.build_model("googlenet", 1000, check=False)
    full = {**googlenet.state_dict(), "aux1.fc2.weight": torch.zeros(1000, 1024)}  # the published file's
    monkeypatch.setattr("zoo.weights.imagenet_state_dict", lambda entry, download: (full, "ImageNet weights"))
    load = base_weights("imagenet", registry.model("googlenet"))
    load(googlenet)  # strict, without aux1's keys


@pytest.mark.slow
def test_the_fine_tune_variant_trains_its_new_head_alone(tmp_path):
    from torchvision.models import resnet18

    weights = tmp_path / "resnet18-imagenet-like.pth"
    torch.save(resnet18(num_classes=1000).state_dict(), weights)
    out = tmp_path / "ft"
    run(RunConfig("resnet18-finetune", "sgd", data="digits", epochs=1, limit_train=64, limit_val=16,
                  input_size=32, weights=str(weights), out=str(out), quiet=True, device="cpu"))  # fmt: skip
    before = torch.load(weights, weights_only=True)
    after = torch.load(out / "last.pt", weights_only=True)["model"]
    assert torch.equal(after["layer4.1.conv2.weight"], before["layer4.1.conv2.weight"])  # frozen
    assert after["fc.weight"].shape == (10, 512)
    entry = get_registry().model("resnet18-finetune")
    assert entry.weights[0]["file"] == "resnet18-f37072fd.pth"  # --weights imagenet: its base's


def test_the_catalogue_file_ships_with_the_plugin():
    pyproject = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    assert 'zoo_torchvision = ["catalogue.json"]' in pyproject


def test_tudui_registers_its_parameters_at_1000_classes_as_torchvision_counts():
    from zoo_tudui.model import Tudui

    assert get_registry().model("tudui").params == sum(p.numel() for p in Tudui(1000).parameters())
