"""zoo.export: method 2 (state-dict), method 1 (full) and safetensors, each loaded back."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from zoo.checkpoint import load_checkpoint, safe_load
from zoo.errors import UsageError
from zoo.export import export
from zoo.registry import get_registry
from zoo.runner import RunConfig, run
from zoo_tudui.model import Tudui


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("export") / "run"
    run(
        RunConfig(
            "tudui",
            "sgd",
            data="fake",
            epochs=1,
            batch_size=16,
            limit_train=32,
            limit_val=16,
            out=str(out),
            quiet=True,
            device="cpu",
        )
    )
    return out / "last.pt"


def trained_state(checkpoint: Path) -> dict[str, torch.Tensor]:
    return torch.load(checkpoint, weights_only=True)["model"]


def test_state_dict_loads_strictly_into_a_fresh_registry_model(tmp_path, checkpoint):
    (tmp_path / "sub").mkdir()  # export writes into an existing directory, never creates one
    path = export(checkpoint, "state-dict", tmp_path / "sub" / "tudui.pth")
    assert path == tmp_path / "sub" / "tudui.pth"
    model = get_registry().build_model("tudui", 10)
    model.load_state_dict(torch.load(path, weights_only=True), strict=True)  # the seed's method 2
    for k, v in trained_state(checkpoint).items():
        assert torch.equal(model.state_dict()[k], v)


def test_full_loads_only_with_trust(tmp_path, checkpoint, capsys):
    path = export(checkpoint, "full", tmp_path / "tudui-full.pt")
    with pytest.raises(Exception, match="Weights only load failed"):
        torch.load(path, weights_only=True)
    with pytest.raises(UsageError, match="--trust"):
        safe_load(path)
    model = torch.load(path, weights_only=False)  # the seed's method 1, by trusted code
    assert isinstance(model, Tudui) and not model.training
    fresh = Tudui(10)
    fresh.load_state_dict(trained_state(checkpoint))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), fresh.eval()(x))


def test_safetensors_round_trip_with_metadata(tmp_path, checkpoint):
    st = pytest.importorskip("safetensors.torch")
    from safetensors import safe_open

    path = export(checkpoint, "safetensors", tmp_path / "tudui.safetensors")
    loaded = st.load_file(str(path))
    for k, v in trained_state(checkpoint).items():
        assert torch.equal(loaded[k], v)
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    assert meta["zoo.model"] == "tudui/tudui" and '"class0"' in meta["zoo.classes"]


def test_safetensors_without_the_package_names_the_install(tmp_path, checkpoint, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "safetensors.torch", None)
    with pytest.raises(UsageError, match="pip install safetensors"):
        export(checkpoint, "safetensors", tmp_path / "x.safetensors")


def test_bad_exports_are_refused(tmp_path, checkpoint):
    with pytest.raises(UsageError, match="unknown export format 'onnx'"):
        export(checkpoint, "onnx", tmp_path / "x")
    before = checkpoint.read_bytes()
    with pytest.raises(UsageError, match="would overwrite the checkpoint"):
        export(checkpoint, "state-dict", checkpoint)
    assert checkpoint.read_bytes() == before
    with pytest.raises(UsageError, match="is a directory"):
        export(checkpoint, "state-dict", tmp_path)
    state = export(checkpoint, "state-dict", tmp_path / "plain.pth")
    with pytest.raises(UsageError, match="not a zoo checkpoint"):
        export(state, "full", tmp_path / "y.pt")
    assert load_checkpoint(checkpoint)["epoch"] == 1


def _formats() -> list[str]:
    try:
        import safetensors.torch  # noqa: F401
    except ImportError:
        return ["state-dict", "full"]
    return ["state-dict", "full", "safetensors"]


def _temporaries(directory: Path) -> list[Path]:
    return sorted(directory.glob(".*.tmp"))


@pytest.mark.parametrize("fmt", _formats())
def test_an_existing_output_is_refused_unless_force_and_then_replaced_atomically(
    tmp_path, checkpoint, fmt, monkeypatch
):
    out = tmp_path / "existing.txt"
    out.write_text("my notes\n")
    with pytest.raises(UsageError, match=rf"-o {re.escape(str(out))} exists.*--force"):
        export(checkpoint, fmt, out)
    assert out.read_text() == "my notes\n"
    # with --force the old file stays whole until the new one is complete: a failed write keeps it
    import zoo.files

    def no_space(src, dst):
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(zoo.files.os, "replace", no_space)
        with pytest.raises(Exception, match="No space left"):
            export(checkpoint, fmt, out, force=True)
    assert out.read_text() == "my notes\n" and _temporaries(tmp_path) == []
    assert export(checkpoint, fmt, out, force=True) == out
    assert out.read_bytes() != b"my notes\n" and _temporaries(tmp_path) == []


@pytest.mark.parametrize("fmt", _formats())
def test_a_missing_output_directory_is_refused_not_created(tmp_path, checkpoint, fmt):
    out = tmp_path / "nowhere" / "deeper" / "model.pth"
    with pytest.raises(UsageError, match=rf"{re.escape(str(tmp_path / 'nowhere' / 'deeper'))} does not exist"):
        export(checkpoint, fmt, out, force=True)
    assert list(tmp_path.iterdir()) == []


def test_the_command_line_refuses_overwrites_and_missing_directories_and_changes_nothing(zoo_fork, checkpoint):
    import shutil

    cwd = zoo_fork.cwd
    shutil.copy(checkpoint, cwd / "last.pt")
    (cwd / "existing.txt").write_text("my notes\n")
    before = sorted(p.name for p in cwd.iterdir())

    from conftest import assert_user_error

    result = zoo_fork("export", "last.pt", "--format", "state-dict", "-o", "existing.txt")
    assert_user_error(result, 2, "existing.txt exists", "--force")
    result = zoo_fork("export", "last.pt", "--format", "full", "-o", "nonexistent_dir/x.pth")
    assert_user_error(result, 2, "nonexistent_dir does not exist")
    assert sorted(p.name for p in cwd.iterdir()) == before and (cwd / "existing.txt").read_text() == "my notes\n"

    result = zoo_fork("export", "last.pt", "--format", "state-dict", "-o", "existing.txt", "--force")
    assert result.returncode == 0, result.stderr
    assert set(torch.load(cwd / "existing.txt", weights_only=True)) == set(trained_state(checkpoint))
