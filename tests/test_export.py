"""zoo.export: method 2 (state-dict), method 1 (full) and safetensors, each loaded back."""

from __future__ import annotations

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
    assert meta["zoo.model"] == "tudui" and '"class0"' in meta["zoo.classes"]


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
