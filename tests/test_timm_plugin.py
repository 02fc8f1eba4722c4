"""The zoo-timm plugin (plugins/zoo-timm), pip-installed for real into a child virtual
environment layered on the test's own (it sees the zoo, torch and timm; it installs into its own
site-packages, so ``zoo uninstall`` removes it for real and nothing leaks into this one)."""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import site
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from conftest import ROOT

PLUGIN = ROOT / "plugins" / "zoo-timm"


class ChildZoo:
    """A virtual environment with zoo-timm installed; ``self(*args)`` runs its ``zoo``."""

    def __init__(self, root: Path, cache: Path):
        self.cwd = root / "work"
        self.cwd.mkdir(parents=True)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("ZOO_") or k.startswith("ZOO_TESTS_")}
        self.env.update(
            ZOO_CACHE=str(cache),
            ZOO_DATA=str(root / "zoo-data"),
            PIP_NO_INDEX="1",
            PIP_DISABLE_PIP_VERSION_CHECK="1",
        )
        venv.EnvBuilder(with_pip=False, symlinks=os.name != "nt").create(root / "venv")
        self.python = str(root / "venv" / ("Scripts/python.exe" if os.name == "nt" else "bin/python"))
        self.site = Path(self.run_python("import sysconfig; print(sysconfig.get_paths()['purelib'])").stdout.strip())
        parents = "; ".join(f"site.addsitedir({p!r})" for p in site.getsitepackages())
        (self.site / "_zoo_tests_parent.pth").write_text(f"import site; {parents}\n")
        # from a copy: a build in the source tree would leave build/ there, and reuse it next time
        source = shutil.copytree(PLUGIN, root / "zoo-timm", ignore=shutil.ignore_patterns("build", "*.egg-info"))
        pip = [self.python, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", str(source)]
        installed = subprocess.run(pip, cwd=self.cwd, env=self.env, capture_output=True, text=True, timeout=300)
        assert installed.returncode == 0, installed.stderr

    def run_python(self, code: str, timeout: float = 300) -> subprocess.CompletedProcess:
        result = subprocess.run(
            [self.python, "-c", code], cwd=self.cwd, env=self.env, capture_output=True, text=True, timeout=timeout
        )
        assert result.returncode == 0, result.stderr
        return result

    def __call__(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run(
            [self.python, "-m", "zoo", *args], cwd=self.cwd, env=self.env,
            capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
        )  # fmt: skip


@pytest.fixture(scope="module")
def timm_cache(tmp_path_factory) -> Path:
    """One cache for the module: timm is imported to fill it once, not in every test."""
    return tmp_path_factory.mktemp("zoo-cache")


@pytest.fixture
def child_zoo(tmp_path, timm_cache) -> ChildZoo:
    return ChildZoo(tmp_path / "child", timm_cache)


# -- the cache, in this process (timm_version and from_timm stand in for timm) -------------------


@pytest.fixture
def cache_module(monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(str(PLUGIN))
    import zoo_timm.cache as cache

    calls: list[str] = []
    version = ["1.0.0"]
    monkeypatch.setattr(cache, "timm_version", lambda: version[0])
    monkeypatch.setattr(cache, "from_timm", lambda: calls.append(version[0]) or {"m1": {"input_size": [3, 8, 8]}})
    monkeypatch.setenv("ZOO_CACHE", str(tmp_path / "cache"))
    yield cache, calls, version
    for name in [m for m in sys.modules if m == "zoo_timm" or m.startswith("zoo_timm.")]:
        del sys.modules[name]


def test_the_list_is_cached_per_timm_version(cache_module, tmp_path):
    cache, calls, version = cache_module
    assert cache.catalogue() == cache.catalogue() == {"m1": {"input_size": [3, 8, 8]}}
    assert calls == ["1.0.0"]  # timm asked once, then the file
    assert cache.cache_path() == tmp_path / "cache" / "zoo-timm-1.0.0.json"
    assert json.loads(cache.cache_path().read_text())["timm"] == "1.0.0"
    version[0] = "1.1.0"  # a new timm: a new file, timm asked again
    cache.catalogue()
    assert calls == ["1.0.0", "1.1.0"] and (tmp_path / "cache" / "zoo-timm-1.1.0.json").exists()
    cache.cache_path().write_text("{not json")  # a damaged file is rewritten
    assert cache.catalogue() == {"m1": {"input_size": [3, 8, 8]}} and len(calls) == 3
    assert json.loads(cache.cache_path().read_text())["models"] == {"m1": {"input_size": [3, 8, 8]}}


def test_an_unwritable_cache_still_lists(cache_module, tmp_path, monkeypatch, capsys):
    cache, calls, _ = cache_module
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("ZOO_CACHE", str(tmp_path / "file" / "cache"))  # under a file: no directory
    assert cache.catalogue() == {"m1": {"input_size": [3, 8, 8]}}
    assert "zoo-timm could not write its model list" in capsys.readouterr().err
    assert not list(tmp_path.glob("**/.zoo-timm-*"))  # no temporary file left


# -- installed for real ------------------------------------------------------------------------


@pytest.mark.slow
def test_listing_reads_the_cache_and_imports_neither_torch_nor_timm(child_zoo, timm_cache):
    result = child_zoo("list", "models", "timm/*", "--json")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert len(rows) > 1000 and {row["plugin"] for row in rows} == {"timm"}
    assert (timm_cache / f"zoo-timm-{importlib.metadata.version('timm')}.json").exists()
    shown = child_zoo.run_python(
        "import sys, io, contextlib, json\n"
        "from zoo.cli import main\n"
        "out = io.StringIO()\n"
        "with contextlib.redirect_stdout(out):\n"
        "    assert main(['list', 'models', 'timm/*', '--json']) == 0\n"
        "heavy = sorted(m for m in ('torch', 'timm', 'torchvision') if m in sys.modules)\n"
        "assert not heavy, heavy\n"
        "print(len(json.loads(out.getvalue())))\n"
    )
    assert int(shown.stdout) == len(rows)
    plugins = json.loads(child_zoo("plugins", "--json").stdout)
    assert [(p["name"], p["distribution"], p["status"]) for p in plugins] == [("timm", "zoo-timm", "ok")]


@pytest.mark.slow
def test_a_timm_model_trains_one_epoch_on_digits(child_zoo):
    # At 32 pixels rather than timm's 224: the same code path at 1/50 of the convolutions (the
    # 224-pixel path is test_catalogue's, for torchvision's resnet18).
    run = ["run", "timm/resnet18", "sgd", "--data", "digits", "--epochs", "1", "--limit-train", "128"]
    run += ["--input-size", "32"]
    result = child_zoo(*run, "--limit-val", "64", "--out", "run", "--quiet", "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["epochs"] == 1 and summary["dataset"] == "digits"
    # the Python API on a timm model: built by timm, weights from a file (--weights PATH)
    child_zoo.run_python(
        "import torch, zoo\n"
        "model = zoo.create_model('timm/resnet18', num_classes=3)\n"
        "assert type(model).__module__.startswith('timm.'), type(model)\n"
        "torch.save(model.state_dict(), 'w.pt')\n"
        "again = zoo.create_model('timm/resnet18', num_classes=3, weights='w.pt')\n"
        "assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))\n"
        "trained, checkpoint = zoo.load_checkpoint('run/last.pt')\n"
        "assert not trained.training and checkpoint['spec']['plugin'] == 'timm', checkpoint['spec']\n"
    )


@pytest.mark.slow
def test_zoo_uninstall_removes_it(child_zoo):
    assert child_zoo("list", "models", "timm/*").returncode == 0
    # plugin 'timm' is also the name of the timm distribution: zoo asks which one is meant
    result = child_zoo("uninstall", "timm")
    assert result.returncode == 2 and "zoo-timm" in result.stderr and "name the distribution" in result.stderr
    result = child_zoo("uninstall", "zoo-timm")
    assert result.returncode == 0, result.stderr
    assert not list(child_zoo.site.glob("zoo_timm*"))
    assert json.loads(child_zoo("plugins", "--json").stdout) == []
    listed = child_zoo("list", "--json")
    assert listed.returncode == 0 and "timm" not in {row["plugin"] for row in json.loads(listed.stdout)}
    assert "tudui" in {row["name"] for row in json.loads(listed.stdout)}
