"""Names across plugins (CONTRACT.md "Names"): qualified names PLUGIN/NAME, a built-in keeping
its bare name, two third-party plugins making a bare name ambiguous, patterns over qualified
names, and checkpoints recording the qualified name. Every plugin here is a real installed
distribution (conftest's ``plugin_dist``), every command a real ``zoo`` process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import assert_user_error
from zoo.errors import AmbiguousNameError, DuplicateNameError, UnknownNameError
from zoo.plugins import reset_plugin_host
from zoo.registry import get_registry, model_from_checkpoint, reset_registry
from zoo.rundir import default_run_dir

# A plugin taking a built-in model's name, a built-in optimizer's name, a name the other test
# plugin takes too, and a name of its own. {width} tells the two plugins' shared-net apart: their
# weights do not load into each other's model.
SHARING = """
from zoo import hookimpl

@hookimpl
def register_models(register):
    register("tudui", f"{{__name__}}:build", summary="{plugin}'s tudui")
    register("shared-net", f"{{__name__}}:build", summary="{plugin}'s shared-net")
    register("{plugin}-net", f"{{__name__}}:build")

@hookimpl
def register_optimizers(register):
    register("sgd", "torch.optim:Adam", summary="{plugin}'s sgd is Adam", defaults={{"lr": 0.01}})

def build(num_classes):
    from torch import nn
    return nn.Sequential(nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(12, {width}), nn.ReLU(),
                         nn.Linear({width}, num_classes))
"""


def sharing(plugin: str, width: int) -> str:
    return SHARING.format(plugin=plugin, width=width)


def warnings_of(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("zoo: warning:")]


# -- in process: the rules --------------------------------------------------------------------------


def test_a_builtin_keeps_its_name_and_the_other_is_reached_qualified(monkeypatch, plugin_dist, capsys):
    monkeypatch.syspath_prepend(str(plugin_dist("alpha", sharing("alpha", 8))))
    registry = get_registry()
    assert registry.model("tudui").plugin == "tudui" and registry.model("tudui/tudui").plugin == "tudui"
    assert registry.model("alpha/tudui").plugin == "alpha"
    assert registry.optimizer("sgd").plugin == "torch-optim" and registry.optimizer("alpha/sgd").plugin == "alpha"
    # a single third-party plugin holds its bare names, and they are reachable qualified too
    assert registry.model("shared-net") is registry.model("alpha/shared-net")
    # registry.yaml's entries are qualified by the file's name
    assert registry.optimizer("registry.yaml/sgd-momentum") is registry.optimizer("sgd-momentum")
    assert not warnings_of(capsys.readouterr().err)  # the designed behaviour: nothing to warn about
    assert registry.names("model", "tudui") == ["tudui", "alpha/tudui"]  # the holder first
    assert registry.names("model", "alpha/*") == ["alpha-net", "shared-net", "alpha/tudui"]
    assert registry.names("model", "*/tudui") == ["tudui", "alpha/tudui"]
    # a pattern without '/' is matched against names only, not plugin names
    assert registry.names("model", "alpha*") == ["alpha-net"]
    # ZOO_STRICT_PLUGINS: a built-in shadowing a plugin's name breaks nothing, so it is no error
    monkeypatch.setenv("ZOO_STRICT_PLUGINS", "1")
    reset_plugin_host()
    reset_registry()
    assert get_registry().model("alpha/tudui").plugin == "alpha"


def test_two_third_party_plugins_make_the_bare_name_ambiguous(monkeypatch, plugin_dist, capsys):
    plugin_dist("alpha", sharing("alpha", 8))
    monkeypatch.syspath_prepend(str(plugin_dist("beta", sharing("beta", 16))))
    registry = get_registry()
    with pytest.raises(AmbiguousNameError) as caught:
        registry.model("shared-net")
    message = str(caught.value)
    assert "'shared-net' is ambiguous" in message and "alpha/shared-net or beta/shared-net" in message
    with pytest.raises(AmbiguousNameError):
        registry.find("shared-net")  # zoo show
    assert registry.model("beta/shared-net").plugin == "beta"
    assert (registry.model("tudui").plugin, registry.optimizer("sgd").plugin) == ("tudui", "torch-optim")
    assert registry.names("model", "shared-net") == ["alpha/shared-net", "beta/shared-net"]
    assert not warnings_of(capsys.readouterr().err)
    # suggestions consider qualified names
    with pytest.raises(UnknownNameError, match="did you mean 'beta/shared-net'"):
        registry.model("beta/shared-nett")
    with pytest.raises(UnknownNameError, match="did you mean '(alpha|beta)/shared-net'"):
        registry.model("shared-nett")
    # ZOO_STRICT_PLUGINS: an ambiguous name is fatal, naming both
    monkeypatch.setenv("ZOO_STRICT_PLUGINS", "1")
    reset_plugin_host()
    reset_registry()
    with pytest.raises(DuplicateNameError, match="ZOO_STRICT_PLUGINS.*alpha/shared-net or beta/shared-net"):
        get_registry()


def test_a_user_registry_file_holds_a_name_a_third_party_plugin_registers(monkeypatch, plugin_dist, tmp_path):
    plugin_dist("alpha", sharing("alpha", 8))
    monkeypatch.syspath_prepend(str(plugin_dist("beta", sharing("beta", 16))))
    mine = tmp_path / "mine.yaml"
    mine.write_text("models:\n  shared-net:\n    base: beta/shared-net\n    edits: [{append: relu, layer: ReLU}]\n")
    registry = get_registry([str(mine)])
    variant = registry.model("shared-net")  # the file's: it resolves the ambiguity
    assert variant.source and variant.base == "beta/shared-net" and registry.model("mine.yaml/shared-net") is variant
    assert registry.model("alpha/shared-net").plugin == "alpha"
    model = registry.build_model("shared-net", 3)
    assert model[2].out_features == 16 and isinstance(model.relu, torch.nn.ReLU)  # beta's, appended to
    # a name a built-in holds stays an error in a registry file
    mine.write_text("models:\n  tudui:\n    base: alpha/tudui\n")
    reset_registry()
    with pytest.raises(DuplicateNameError, match="model 'tudui' is registered twice"):
        get_registry([str(mine)])


def test_a_bare_name_in_an_older_checkpoint_rebuilds_as_the_plugin_that_made_it(monkeypatch, plugin_dist):
    plugin_dist("alpha", sharing("alpha", 8))
    monkeypatch.syspath_prepend(str(plugin_dist("beta", sharing("beta", 16))))
    registry = get_registry()
    weights = registry.build_model("beta/shared-net", 10).state_dict()
    spec = {"model": "shared-net", "plugin": "beta", "num_classes": 10, "base": None, "edits": []}
    model = model_from_checkpoint({"spec": spec, "model": weights}, registry=registry)
    assert model[2].out_features == 16
    # and a bare name whose plugin is the one that holds it now
    spec = {**spec, "model": "tudui", "plugin": "tudui"}
    tudui = registry.build_model("tudui", 10).state_dict()
    assert type(model_from_checkpoint({"spec": spec, "model": tudui}, registry=registry)).__name__ == "Tudui"


# -- through the command line ----------------------------------------------------------------------


def test_zoo_list_shows_a_shadowed_entry_by_its_qualified_name(zoo_cli, plugin_dist):
    zoo_cli.paths.append(str(plugin_dist("alpha", sharing("alpha", 8))))
    listed = zoo_cli("list", "models", "--json")
    assert listed.returncode == 0 and not warnings_of(listed.stderr), listed.stderr
    rows = {(r["name"], r["plugin"]): r["qualified"] for r in json.loads(listed.stdout)}
    assert rows[("tudui", "tudui")] == "tudui/tudui" and rows[("alpha/tudui", "alpha")] == "alpha/tudui"
    assert rows[("shared-net", "alpha")] == "alpha/shared-net"
    mine = zoo_cli("list", "models", "alpha/*")
    assert mine.returncode == 0
    names = [line.split()[1] for line in mine.stdout.splitlines()[1:]]
    assert names == ["alpha-net", "shared-net", "alpha/tudui"]
    strict = zoo_cli("list", env={"ZOO_STRICT_PLUGINS": "1"})
    assert strict.returncode == 0, strict.stderr  # shadowed by a built-in: no error, even strict
    # listing by qualified names imports no torch
    code = "import sys; from zoo.cli import main; main(['list', '*/tudui']); assert 'torch' not in sys.modules"
    light = subprocess.run(
        [sys.executable, "-c", code], cwd=zoo_cli.cwd, env=zoo_cli.environment(), capture_output=True, text=True
    )
    assert light.returncode == 0 and "alpha/tudui" in light.stdout, light.stderr


@pytest.mark.slow  # one real run, on digits
def test_qualified_names_reach_each_of_two_plugins_and_checkpoints_record_them(zoo_fork, plugin_dist):
    plugin_dist("alpha", sharing("alpha", 8))
    site = plugin_dist("beta", sharing("beta", 16))
    zoo_fork.paths.append(str(site))
    listed = zoo_fork("list", "shared-net", "--json")
    assert [r["name"] for r in json.loads(listed.stdout)] == ["alpha/shared-net", "beta/shared-net"]
    data = ("--data", "digits", "--limit-train", "64", "--limit-val", "32", "--quiet")
    run = ("sgd", "--epochs", "1", *data)
    ambiguous = zoo_fork("run", "shared-net", *run, "--out", "bare")
    assert_user_error(ambiguous, 2, "'shared-net' is ambiguous", "alpha/shared-net", "beta/shared-net")
    assert_user_error(zoo_fork("show", "shared-net"), 2, "alpha/shared-net or beta/shared-net")
    trained = zoo_fork("run", "beta/shared-net", *run, "--out", "r", "--json")
    assert trained.returncode == 0, trained.stderr
    summary = json.loads(trained.stdout)
    assert summary["model"] == "beta/shared-net" and summary["optimizer"] == "sgd"
    ckpt = torch.load(zoo_fork.cwd / "r" / "last.pt", weights_only=True)
    spec = ckpt["spec"]
    assert (spec["model"], spec["optimizer"], spec["plugin"]) == ("beta/shared-net", "torch-optim/sgd", "beta")
    assert ckpt["model"]["2.weight"].shape == (16, 12)  # beta's, not alpha's
    validated = zoo_fork("validate", "r/last.pt", "--json")
    assert validated.returncode == 0, validated.stderr
    assert json.loads(validated.stdout)["samples"] > 0
    # --resume: the checkpoint's qualified name is the same model as the name given again
    resumed = zoo_fork("run", "beta/shared-net", "sgd", "--epochs", "2", *data, "--out", "r", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    other = zoo_fork("run", "alpha/shared-net", "sgd", "--epochs", "3", *data, "--out", "r", "--resume")
    assert_user_error(other, 2, "beta/shared-net", "alpha/shared-net")
    # a default run directory has no '/' from the qualified names
    first = next(default_run_dir("alpha/shared-net", "alpha/sgd"))
    assert first.parent == Path("runs") and first.name.startswith("alpha-shared-net-alpha-sgd-")
