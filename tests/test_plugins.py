"""The plugin manager: built-ins and third-party plugins through real entry points, each
failure isolated, strict mode, the allow-list, and the example distribution installed by pip."""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, assert_user_error
from zoo import hookspecs
from zoo.errors import PluginError, UsageError
from zoo.plugins import PluginHost, get_plugin_host
from zoo.registry import get_registry

GOOD = """
from zoo import hookimpl

@hookimpl
def register_models(register):
    register("good-net", f"{__name__}:build", summary="a good test model", input_size=(3, 8, 8))

def build(num_classes):
    import torch
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, num_classes))
"""

IMPORT_FAILS = """
raise ImportError("cannot import name 'missing_thing' from 'somewhere'")
"""

HOOK_RAISES = """
from zoo import hookimpl

@hookimpl
def register_models(register):
    register("half-net", "x:y")
    raise RuntimeError("boom inside register_models")
"""

MISSPELT = """
from zoo import hookimpl

@hookimpl
def register_model(register):
    register("never", "x:y")
"""

BAD_ARGS = """
from zoo import hookimpl

@hookimpl
def register_models(register, colour):
    pass
"""

DUPLICATE = """
from zoo import hookimpl

@hookimpl
def register_models(register):
    register("tudui", "x:y", summary="a second tudui")
"""


def host_with(monkeypatch, site: Path) -> PluginHost:
    monkeypatch.syspath_prepend(str(site))
    host = PluginHost()
    host.load_entry_points()
    return host


def test_builtins_load_through_entry_points():
    host = get_plugin_host()
    builtins = {i.name: i for i in host.plugin_infos(include_builtin=True) if i.builtin}
    assert set(builtins) == {"tudui", "torchvision", "torch-optim", "datasets", "tensorboard", "schedulers", "augment"}
    assert all(i.status == "ok" and i.distribution == "tudui-zoo" for i in builtins.values())
    assert builtins["torch-optim"].hooks == ["register_optimizers"]
    assert builtins["schedulers"].hooks == ["register_schedulers"]
    assert builtins["augment"].hooks == ["register_augmentations"]
    assert builtins["tensorboard"].hooks == ["on_epoch_end", "on_run_end", "on_run_start"]


def test_third_party_plugin_registers(monkeypatch, plugin_dist):
    site = plugin_dist("good", GOOD)
    monkeypatch.syspath_prepend(str(site))
    registry = get_registry()
    entry = registry.model("good-net")
    assert (entry.plugin, entry.input_size) == ("good", (3, 8, 8))
    info = registry.host.infos["good"]
    assert (info.status, info.version, info.builtin, info.hooks) == ("ok", "1.0", False, ["register_models"])
    model = registry.build_model("good-net", 4)
    assert model[1].out_features == 4


@pytest.mark.parametrize(
    "source, expected",
    [
        (IMPORT_FAILS, "ImportError: cannot import name 'missing_thing'"),
        (MISSPELT, "unknown hook 'register_model'; did you mean 'register_models'?"),
        (BAD_ARGS, "colour"),
    ],
    ids=["import-error", "misspelt-hook", "bad-hook-arguments"],
)
def test_broken_plugin_is_isolated(monkeypatch, plugin_dist, capsys, source, expected):
    site = plugin_dist("broken", source)
    plugin_dist("good", GOOD)
    host = host_with(monkeypatch, site)
    info = host.infos["broken"]
    assert info.status == "failed" and expected in info.error
    assert host.infos["good"].status == "ok"
    err = capsys.readouterr().err
    assert err.count("zoo: warning: plugin 'broken' failed to load:") == 1
    assert expected in err


def test_plugin_raising_in_hook_is_rolled_back(monkeypatch, plugin_dist, capsys):
    site = plugin_dist("raiser", HOOK_RAISES)
    monkeypatch.syspath_prepend(str(site))
    registry = get_registry()
    assert "half-net" not in registry.models  # nothing half-registered survives
    assert "tudui" in registry.models
    assert registry.host.infos["raiser"].status == "failed"
    assert "RuntimeError: boom inside register_models" in registry.host.infos["raiser"].error
    assert capsys.readouterr().err.count("plugin 'raiser' failed") == 1


def test_strict_mode_makes_failures_fatal(monkeypatch, plugin_dist):
    site = plugin_dist("broken", IMPORT_FAILS)
    monkeypatch.setenv("ZOO_STRICT_PLUGINS", "1")
    with pytest.raises(PluginError, match="plugin 'broken' failed to load: ImportError"):
        host_with(monkeypatch, site)


def test_a_builtins_name_taken_by_a_plugin_is_no_error_even_when_strict(monkeypatch, plugin_dist, capsys):
    # the built-in keeps the bare name, the plugin's entry is reached qualified (tests/test_names.py)
    site = plugin_dist("copycat", DUPLICATE)
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("ZOO_STRICT_PLUGINS", "1")
    registry = get_registry()
    assert registry.model("tudui").plugin == "tudui" and registry.model("copycat/tudui").plugin == "copycat"
    assert not warnings_of(capsys.readouterr().err)


# Each of two third-party plugins takes two built-in names (a plugin's, and registry.yaml's
# preset), an optimizer's name, and one name the other takes too.
CLASHING = """
from zoo import hookimpl

@hookimpl
def register_models(register):
    register("tudui", "x:y", summary="a second tudui")
    register("vgg16-add-linear", "x:y", summary="a name registry.yaml declares")
    register("shared-net", "{plugin}_net:build", summary="{plugin}'s shared-net")
    register("{plugin}-net", "x:y")

@hookimpl
def register_optimizers(register):
    register("adam", "torch.optim:SGD", summary="not adam")
"""


def clashing_plugins(plugin_dist) -> Path:
    plugin_dist("alpha", CLASHING.format(plugin="alpha"))
    return plugin_dist("beta", CLASHING.format(plugin="beta"))


def warnings_of(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("zoo: warning:")]


def test_clashing_names_keep_the_builtin_and_reach_the_others_qualified(monkeypatch, plugin_dist, capsys):
    monkeypatch.syspath_prepend(str(clashing_plugins(plugin_dist)))
    registry = get_registry()
    assert registry.models["tudui"].plugin == "tudui"  # the built-in's entry keeps the bare name
    assert registry.models["vgg16-add-linear"].plugin == "registry.yaml"
    assert registry.optimizers["adam"].plugin == "torch-optim"
    for other in ("alpha", "beta"):  # each plugin's own entry, by its qualified name
        assert registry.model(f"{other}/tudui").plugin == other
        assert registry.model(f"{other}/vgg16-add-linear").plugin == other
        assert registry.optimizer(f"{other}/adam").plugin == other
        assert registry.model(f"{other}/shared-net").summary == f"{other}'s shared-net"
    assert "shared-net" not in registry.models  # two third-party plugins: the bare name is neither's
    with pytest.raises(UsageError, match="alpha/shared-net or beta/shared-net"):
        registry.model("shared-net")
    assert {"alpha-net", "beta-net"} <= set(registry.models)  # the rest of each plugin is there
    assert registry.host.infos["alpha"].status == registry.host.infos["beta"].status == "ok"
    assert not warnings_of(capsys.readouterr().err)  # the designed behaviour: nothing to warn about


def test_clashing_plugins_leave_every_command_working(zoo_cli, plugin_dist):
    zoo_cli.paths.append(str(clashing_plugins(plugin_dist)))
    listed = zoo_cli("list", "--json")
    assert listed.returncode == 0, listed.stderr
    plugin_of = {(r["kind"], r["name"]): r["plugin"] for r in json.loads(listed.stdout)}
    assert plugin_of[("model", "tudui")] == "tudui" and plugin_of[("model", "beta/tudui")] == "beta"
    assert plugin_of[("model", "alpha/shared-net")] == "alpha" and ("model", "shared-net") not in plugin_of
    assert not warnings_of(listed.stderr) and "zoo: error" not in listed.stderr
    plugins = zoo_cli("plugins", "--json")
    assert plugins.returncode == 0, plugins.stderr
    assert {p["name"]: p["status"] for p in json.loads(plugins.stdout)} == {"alpha": "ok", "beta": "ok"}
    shown = zoo_cli("show", "tudui", "--json")
    assert shown.returncode == 0 and json.loads(shown.stdout)["parameters"] == 145578
    strict = zoo_cli("list", env={"ZOO_STRICT_PLUGINS": "1"})  # shared-net is ambiguous
    assert_user_error(strict, 2, "is registered twice", "ZOO_STRICT_PLUGINS", "alpha/shared-net or beta/shared-net")


def test_a_plugin_named_like_a_builtin_leaves_the_builtin_working(monkeypatch, plugin_dist, capsys):
    # an entry point named 'tudui' used to knock the built-in Tudui out of the registry
    site = plugin_dist("tudui", GOOD)
    monkeypatch.syspath_prepend(str(site))
    registry = get_registry()
    assert registry.models["tudui"].plugin == "tudui" and "good-net" not in registry.models
    info = registry.host.infos["tudui"]
    assert (info.builtin, info.status, info.distribution) == (True, "ok", "tudui-zoo")
    (line,) = warnings_of(capsys.readouterr().err)
    assert "plugin name 'tudui'" in line and "tudui-zoo" in line and "zoo_test_dist_tudui" in line
    monkeypatch.setenv("ZOO_STRICT_PLUGINS", "1")
    with pytest.raises(PluginError, match="plugin name 'tudui'"):
        host_with(monkeypatch, site)


def test_allow_list_limits_third_party_plugins(monkeypatch, plugin_dist, capsys):
    plugin_dist("good", GOOD)
    site = plugin_dist("other", GOOD.replace("good-net", "other-net"))
    monkeypatch.setenv("ZOO_LOAD_PLUGINS", "other,nosuch")
    host = host_with(monkeypatch, site)
    assert "other" in host.infos and "good" not in host.infos
    assert "tudui" in host.infos  # built-ins always load
    assert "ZOO_LOAD_PLUGINS names 'nosuch'" in capsys.readouterr().err
    monkeypatch.setenv("ZOO_LOAD_PLUGINS", "")
    host = host_with(monkeypatch, site)
    assert not host.plugin_infos()  # empty: no third-party plugin at all


def test_every_hook_is_specified_and_documented():
    names = [n for n in dir(hookspecs) if n.startswith(("register_", "on_"))]
    assert sorted(names) == sorted(
        [
            "register_models",
            "register_optimizers",
            "register_datasets",
            "register_schedulers",
            "register_augmentations",
            "on_run_start",
            "on_epoch_end",
            "on_checkpoint",
            "on_run_end",
        ]
    )
    guide = (ROOT / "docs" / "plugins.md").read_text()
    for name in names:
        hook = getattr(hookspecs, name)
        assert hook.__doc__, f"hook {name} has no docstring"
        signature = f"{name}({', '.join(inspect.signature(hook).parameters)})"  # e.g. on_checkpoint(run, path)
        assert signature in guide, f"hook {name} is not documented in docs/plugins.md as {signature}"


@pytest.mark.slow  # runs the hook tests again, in a pytest of their own
def test_every_hook_has_a_test(tmp_path):
    # datasette's meta-test: a hook nobody tests is a hook nobody knows works. Each hook H needs
    # a passing test_hook_H during which a plugin of the test's own (not a built-in) received H
    # (tests/hookspy.py watches every hook call).
    hooks = sorted(n for n in dir(hookspecs) if n.startswith(("register_", "on_")))
    report = tmp_path / "hooks.json"
    # the files that name a test_hook_ test: collecting the other fifty would select nothing more
    files = [str(path) for path in sorted((ROOT / "tests").glob("test_*.py")) if "test_hook_" in path.read_text()]
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-p",
            "hookspy",
            "-k",
            "test_hook_",
            *files,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env={
            **os.environ,
            "ZOO_TESTS_HOOKSPY": str(report),
            "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")]).strip(os.pathsep),
        },
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    received = json.loads(report.read_text())
    missing = [h for h in hooks if f"test_hook_{h}" not in received]
    assert not missing, f"Plugin hook is missing tests: {', '.join(missing)}"
    untriggered = [h for h in hooks if h not in received[f"test_hook_{h}"]]
    assert not untriggered, f"these hooks' tests never call them on a plugin of their own: {untriggered}"


def test_hook_register_models(monkeypatch, plugin_dist):
    test_third_party_plugin_registers(monkeypatch, plugin_dist)


def test_hook_register_optimizers(monkeypatch, plugin_dist):
    site = plugin_dist(
        "optim",
        """
        from zoo import hookimpl
        @hookimpl
        def register_optimizers(register):
            register("plain-sgd", "torch.optim:SGD", summary="SGD again", defaults={"lr": 0.5})
    """,
    )
    monkeypatch.syspath_prepend(str(site))
    import torch

    registry = get_registry()
    optimizer = registry.make_optimizer("plain-sgd", [torch.nn.Parameter(torch.zeros(2))], {"momentum": 0.9})
    assert isinstance(optimizer, torch.optim.SGD)
    assert optimizer.defaults["lr"] == 0.5 and optimizer.defaults["momentum"] == 0.9


def test_hook_register_datasets(monkeypatch, plugin_dist):
    site = plugin_dist(
        "data",
        """
        from zoo import hookimpl
        @hookimpl
        def register_datasets(register):
            register("ones", load, summary="all ones", num_classes=2, input_size=(1, 4, 4), classes=["a", "b"])
        def load(train, root, download):
            import torch
            from zoo.data import TensorImageDataset
            images = torch.full((6 if train else 2, 1, 4, 4), 255, dtype=torch.uint8)
            labels = torch.arange(images.shape[0]) % 2
            return TensorImageDataset(images, labels, mean=(0.5,), std=(0.5,), classes=["a", "b"])
    """,
    )
    monkeypatch.syspath_prepend(str(site))
    registry = get_registry()
    entry = registry.dataset("ones")
    assert (entry.num_classes, entry.input_size, entry.classes) == (2, (1, 4, 4), ("a", "b"))
    train = registry.load_dataset("ones", train=True, root=".")
    image, label = train[1]
    assert image.shape == (1, 4, 4) and float(image[0, 0, 0]) == pytest.approx(1.0) and label == 1


SCHEDULE_AND_AUGMENT = """
from zoo import hookimpl

@hookimpl
def register_schedulers(register):
    register("halving", halving, summary="halve the lr every epoch", defaults={"factor": 0.5})
    register("acme-steps", "torch.optim.lr_scheduler:StepLR", summary="StepLR per step", interval="step")

@hookimpl
def register_augmentations(register):
    register("negate", f"{__name__}:negate", summary="negate each image with probability p")

def halving(optimizer, factor, epochs):
    import torch
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: factor ** min(epoch, epochs))

def negate(p=0.5):
    import torch
    def apply(images, generator):
        flip = torch.rand(images.shape[0], device=images.device, generator=generator) < p
        return torch.where(flip[:, None, None, None], -images, images)
    return apply
"""


def test_hook_register_schedulers(monkeypatch, plugin_dist):
    monkeypatch.syspath_prepend(str(plugin_dist("sched", SCHEDULE_AND_AUGMENT)))
    import torch

    from zoo.recipe import build_scheduler

    registry = get_registry()
    entry = registry.scheduler("halving")
    assert (entry.plugin, entry.interval, entry.defaults) == ("sched", "epoch", {"factor": 0.5})
    assert registry.scheduler("acme-steps").interval == "step"
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=1.0)
    schedule = build_scheduler(registry, "halving", optimizer, opts={}, interval=None, epochs=2, steps_per_epoch=5)
    assert schedule.hparams == {"factor": 0.5, "epochs": 2} and schedule.filled == ("epochs",)
    lrs = []
    for _ in range(3):
        optimizer.step()
        schedule.step()
        lrs.append(optimizer.param_groups[0]["lr"])
    assert lrs == [0.5, 0.25, 0.25]  # capped at the run's 2 epochs, which the run filled in


def test_hook_register_augmentations(monkeypatch, plugin_dist):
    monkeypatch.syspath_prepend(str(plugin_dist("aug", SCHEDULE_AND_AUGMENT)))
    import torch

    from zoo.recipe import build_augmentation

    registry = get_registry()
    assert registry.augmentation("negate").plugin == "aug"
    augment = build_augmentation(registry, ["negate:p=1", "flip:p=0"])
    images = torch.randn(4, 3, 2, 2)
    assert torch.equal(augment(images, torch.Generator().manual_seed(0)), -images)
    assert augment.specs == [("negate", {"p": 1.0}), ("flip", {"p": 0.0})]


# -- through the command line ------------------------------------------------------------------


def test_broken_plugin_leaves_every_command_working(zoo_cli, plugin_dist):
    zoo_cli.paths.append(str(plugin_dist("broken", IMPORT_FAILS)))
    listed = zoo_cli("list", "--json")
    assert listed.returncode == 0
    assert "tudui" in {row["name"] for row in json.loads(listed.stdout)}
    assert listed.stderr.count("zoo: warning: plugin 'broken' failed to load: ImportError") == 1
    plugins = json.loads(zoo_cli("plugins", "--json").stdout)
    assert plugins == [
        {
            "name": "broken",
            "version": "1.0",
            "hooks": [],
            "status": "failed",
            "error": "ImportError: cannot import name 'missing_thing' from 'somewhere'",
            "builtin": False,
            "distribution": "zoo_test_dist_broken",
        }
    ]
    assert zoo_cli("show", "adagrad").returncode == 0
    strict = zoo_cli("list", env={"ZOO_STRICT_PLUGINS": "1"})
    assert_user_error(strict, 2, "plugin 'broken' failed to load", "ZOO_STRICT_PLUGINS")


def test_a_plugin_registering_a_name_twice_is_exit_2_when_strict(zoo_cli, plugin_dist):
    twice = DUPLICATE.replace('"tudui", "x:y"', '"copy-net", "x:y")\n    register("copy-net", "x:z"')
    zoo_cli.paths.append(str(plugin_dist("copycat", twice)))
    strict = zoo_cli("list", env={"ZOO_STRICT_PLUGINS": "1"})
    assert_user_error(strict, 2, "model 'copy-net' is registered twice", "plugin 'copycat'", "ZOO_STRICT_PLUGINS")
    relaxed = zoo_cli("list")
    assert relaxed.returncode == 0 and warnings_of(relaxed.stderr) == [
        "zoo: warning: model 'copy-net' is registered twice by plugin 'copycat'; keeping the first"
    ]


# -- zoo uninstall: a plugin's name, as zoo plugins shows it ---------------------------------------


@pytest.fixture
def pip_calls(monkeypatch) -> list[list[str]]:
    """The pip command lines zoo would run (none is run: no test may uninstall for real)."""
    import subprocess as real

    calls: list[list[str]] = []

    def call(command, *args, **kwargs):
        calls.append(list(command))
        return 0

    monkeypatch.setattr(real, "call", call)
    return calls


def zoo_main(*args: str) -> int:
    from zoo.cli import main

    return main(list(args))


def test_uninstall_maps_a_plugin_name_to_its_distribution(monkeypatch, plugin_dist, pip_calls, capsys):
    monkeypatch.syspath_prepend(str(plugin_dist("good", GOOD)))
    assert zoo_main("uninstall", "good") == 0
    assert pip_calls == [[sys.executable, "-m", "pip", "uninstall", "-y", "zoo_test_dist_good"]]
    # a distribution's own name still works, and naming both ways uninstalls it once
    pip_calls.clear()
    assert zoo_main("uninstall", "zoo_test_dist_good", "good") == 0
    assert pip_calls == [[sys.executable, "-m", "pip", "uninstall", "-y", "zoo_test_dist_good"]]


def test_uninstall_of_nothing_installed_is_exit_2(monkeypatch, plugin_dist, pip_calls, capsys):
    monkeypatch.syspath_prepend(str(plugin_dist("good", GOOD)))
    assert zoo_main("uninstall", "mine") == 2
    (error,) = capsys.readouterr().err.splitlines()
    assert error.startswith("zoo: error: ") and "'mine'" in error
    assert "good (distribution zoo_test_dist_good)" in error  # what is installed
    assert pip_calls == []


def test_uninstall_refuses_a_builtin_plugin_name(pip_calls, capsys):
    assert zoo_main("uninstall", "tudui") == 2
    error = capsys.readouterr().err
    assert "built-in" in error and "tudui-zoo" in error and error.count("zoo: error:") == 1
    assert pip_calls == []


def test_plugins_shows_the_distribution(monkeypatch, plugin_dist, capsys):
    monkeypatch.syspath_prepend(str(plugin_dist("good", GOOD)))
    assert zoo_main("plugins", "--json") == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["distribution"] == "zoo_test_dist_good"
    assert zoo_main("plugins") == 0
    header, line = capsys.readouterr().out.splitlines()
    assert header.split() == ["NAME", "DISTRIBUTION", "VERSION", "STATUS", "HOOKS", "/", "ERROR"]
    assert line.split()[:4] == ["good", "zoo_test_dist_good", "1.0", "ok"]


@pytest.fixture(scope="module")
def example_site(tmp_path_factory) -> Path:
    """The example plugin, pip-installed into its own target directory (a real install)."""
    target = tmp_path_factory.mktemp("example-site")
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
            str(ROOT / "plugins" / "example-third-party"),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    return target


@pytest.mark.slow
def test_example_plugin_installs_and_lists(zoo_cli, example_site):
    zoo_cli.paths.append(str(example_site))
    rows = json.loads(zoo_cli("list", "--json").stdout)
    mine = {(r["kind"], r["name"]) for r in rows if r["plugin"] == "example"}
    assert mine == {("model", "example-mlp"), ("optimizer", "example-signsgd"), ("dataset", "example-stripes")}
    plugins = json.loads(zoo_cli("plugins", "--json").stdout)
    assert plugins == [
        {
            "name": "example",
            "version": "1.0.0",
            "status": "ok",
            "error": None,
            "builtin": False,
            "distribution": "zoo-example-plugin",
            "hooks": ["on_epoch_end", "register_datasets", "register_models", "register_optimizers"],
        }
    ]
    everything = json.loads(zoo_cli("plugins", "--all", "--json").stdout)
    assert {p["name"] for p in everything if p["builtin"]} == {
        "tudui",
        "torchvision",
        "torch-optim",
        "datasets",
        "tensorboard",
        "schedulers",
        "augment",
    }
