"""zoo.checkpoint: the contract's keys, weights_only loading, atomic writes, refusing unsafe or
wrong files, rebuilding the model from the registry, and interop with plain torchvision."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch
from torch import nn

import datafiles
from zoo.checkpoint import capture_rng, load_checkpoint, load_state_dict_strict, restore_rng, safe_load
from zoo.errors import RunError, UsageError
from zoo.files import atomic_save, atomic_write
from zoo.registry import get_registry, model_from_checkpoint
from zoo.runner import RunConfig, run, validate
from zoo_tudui.model import Tudui


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """The run directory of one tiny Tudui run (2 epochs of 32 fake images)."""
    out = tmp_path_factory.mktemp("checkpoint") / "run"
    run(
        RunConfig(
            "tudui",
            "sgd-momentum",
            data="fake",
            epochs=2,
            batch_size=16,
            limit_train=32,
            limit_val=16,
            out=str(out),
            quiet=True,
            device="cpu",
        )
    )
    return out


def test_the_checkpoint_holds_the_contract_keys_and_opens_with_weights_only(trained):
    ckpt = torch.load(trained / "last.pt", weights_only=True)
    assert ckpt["format"] == "zoo.checkpoint" and ckpt["version"] == 1 and ckpt["epoch"] == 2
    assert {"model", "optimizer", "epoch", "spec", "metrics", "rng", "provenance"} <= set(ckpt)
    spec = ckpt["spec"]
    assert {"model", "optimizer", "hparams", "dataset", "num_classes", "classes", "input_size"} <= set(spec)
    # qualified names (PLUGIN/NAME): the same entries whatever plugins are installed later
    assert spec["model"] == "tudui/tudui" and spec["optimizer"] == "registry.yaml/sgd-momentum"
    assert spec["dataset"] == "fake"
    assert spec["hparams"] == {"lr": 0.01, "momentum": 0.9, "nesterov": True}
    assert spec["num_classes"] == 10 and len(spec["classes"]) == 10 and list(spec["input_size"]) == [3, 32, 32]
    assert len(spec["mean"]) == 3 and len(spec["std"]) == 3
    assert set(ckpt["model"]) == set(Tudui(10).state_dict())  # the bare module's keys
    assert all(t.device.type == "cpu" for t in ckpt["model"].values())
    assert ckpt["optimizer"]["param_groups"][0]["momentum"] == 0.9
    assert [line["epoch"] for line in ckpt["metrics"]["history"]] == [1, 2]
    assert isinstance(ckpt["rng"]["torch"], torch.Tensor) and isinstance(ckpt["rng"]["shuffle"], torch.Tensor)
    prov = ckpt["provenance"]
    assert prov["torch"] == str(torch.__version__) and prov["zoo"]
    assert any(p["name"] == "tudui" and p["builtin"] for p in prov["plugins"])


def test_best_is_the_best_epoch(trained):
    best = torch.load(trained / "best.pt", weights_only=True)
    history = best["metrics"]["history"]
    assert best["metrics"]["val_accuracy"] == max(line["val_accuracy"] for line in history)


def test_rng_states_round_trip():
    import random

    import numpy as np

    generator = torch.Generator().manual_seed(7)
    state = capture_rng(generator)
    expected = (torch.rand(3), random.random(), np.random.rand(), torch.rand(2, generator=generator))
    torch.rand(5), random.random(), np.random.rand(), torch.rand(4, generator=generator)
    restore_rng(state, generator)
    again = (torch.rand(3), random.random(), np.random.rand(), torch.rand(2, generator=generator))
    assert torch.equal(expected[0], again[0]) and expected[1:3] == again[1:3] and torch.equal(expected[3], again[3])


class SimulatedGPUs:
    """torch.cuda's generator states for ``count`` simulated GPUs, one small tensor each (the
    index, then a draw counter); ``draw(i)`` advances GPU i's stream, as dropout on it would."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, count: int, current: int = 0):
        self.count, self.current = count, current
        self.states = {i: torch.tensor([i, 0], dtype=torch.uint8) for i in range(count)}
        for name in ("is_available", "is_initialized"):
            monkeypatch.setattr(torch.cuda, name, lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: self.count)
        monkeypatch.setattr(torch.cuda, "current_device", lambda: self.current)
        monkeypatch.setattr(torch.cuda, "get_rng_state", lambda device="cuda": self.states[self.index(device)].clone())
        monkeypatch.setattr(torch.cuda, "set_rng_state", self.set_rng_state)
        # What the checkpoints of earlier zoo versions used: every visible GPU's state.
        monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: [self.states[i].clone() for i in range(count)])
        monkeypatch.setattr(
            torch.cuda, "set_rng_state_all", lambda states: [self.set_rng_state(s, i) for i, s in enumerate(states)]
        )

    def index(self, device: object) -> int:
        device = torch.device("cuda", device) if isinstance(device, int) else torch.device(device)
        assert device.type == "cuda"
        return self.current if device.index is None else device.index

    def set_rng_state(self, state: torch.Tensor, device: object = "cuda") -> None:
        self.states[self.index(device)] = state.clone()

    def draw(self, index: int) -> None:
        self.states[index][1] += 1


def test_the_training_gpus_rng_is_restored_whatever_the_number_of_visible_gpus(monkeypatch, capsys):
    """Trained on cuda:1 of two GPUs, resumed where one is visible (a scheduler's other
    CUDA_VISIBLE_DEVICES): the resumed run's GPU continues the stream that trained."""
    before = SimulatedGPUs(monkeypatch, count=2, current=1)
    before.draw(1), before.draw(1)
    saved = capture_rng(device=torch.device("cuda", 1))
    trained_stream = before.states[1].clone()

    after = SimulatedGPUs(monkeypatch, count=1)
    assert restore_rng(saved, device=torch.device("cuda", 0)) is None
    assert torch.equal(after.states[0], trained_stream)
    assert capsys.readouterr().err == ""


def test_the_current_gpu_is_the_training_device_by_default(monkeypatch):
    gpus = SimulatedGPUs(monkeypatch, count=2, current=1)  # resolve_device("cuda:1") makes it current
    gpus.draw(1)
    saved = capture_rng()
    gpus.draw(1)
    restore_rng(saved)
    assert gpus.states[1].tolist() == [1, 1]


def test_a_cpu_run_saves_and_restores_no_cuda_state(monkeypatch, capsys):
    gpus = SimulatedGPUs(monkeypatch, count=2)
    saved = capture_rng(device=torch.device("cpu"))
    assert "cuda_device" not in saved and "cuda" not in saved
    gpus.draw(0)
    restore_rng({**saved, "cuda_device": torch.tensor([9, 9], dtype=torch.uint8)}, device=torch.device("cpu"))
    assert gpus.states[0].tolist() == [0, 1] and capsys.readouterr().err == ""


def test_an_older_checkpoints_cuda_states_are_restored_where_the_gpus_match(monkeypatch, capsys):
    older = {"torch": torch.get_rng_state(), "cuda": [torch.tensor([7, 1], dtype=torch.uint8)] * 2}
    gpus = SimulatedGPUs(monkeypatch, count=2)
    assert restore_rng(older, device=torch.device("cuda", 0)) is None
    assert [s.tolist() for s in gpus.states.values()] == [[7, 1], [7, 1]]
    assert capsys.readouterr().err == ""


def test_an_older_checkpoints_cuda_states_for_other_gpus_are_a_warning_line(monkeypatch, capsys):
    """Saved by an earlier zoo with two GPUs visible, resumed with one: which state trained is
    unknown, so none is restored, and one warning line says so (the CPU's state still is)."""
    older = {"torch": torch.get_rng_state(), "cuda": [torch.tensor([i, 5], dtype=torch.uint8) for i in range(2)]}
    torch.rand(3)
    gpus = SimulatedGPUs(monkeypatch, count=1)
    problem = restore_rng(older, device=torch.device("cuda", 0))
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("zoo: warning: ") and problem in err
    assert "one CUDA random state per GPU visible then, 2, and 1 is visible now" in problem
    assert "dropout and other random layers draw other numbers" in problem
    assert gpus.states[0].tolist() == [0, 0]
    assert torch.equal(torch.get_rng_state(), older["torch"])
    assert restore_rng(older, device=torch.device("cuda", 0), warn=False) == problem
    assert capsys.readouterr().err == ""  # a second restore of the same state need not say it again


def test_the_model_is_rebuilt_from_the_registry_and_loaded_strictly(trained):
    ckpt = load_checkpoint(trained / "last.pt")
    model = model_from_checkpoint(ckpt, source="last.pt")
    assert isinstance(model, Tudui)
    for k, v in model.state_dict().items():
        assert torch.equal(v, ckpt["model"][k])
    ckpt["model"].pop("model.0.bias")
    with pytest.raises(UsageError, match=r"last\.pt does not fit model 'tudui': missing keys model\.0\.bias"):
        model_from_checkpoint(ckpt, source="last.pt")


def test_strict_loading_names_the_first_mismatched_keys():
    state = Tudui(10).state_dict()
    state["extra.weight"] = torch.zeros(1)
    state["model.8.weight"] = torch.zeros(5, 64)
    with pytest.raises(UsageError) as info:
        load_state_dict_strict(Tudui(10), state, source="f.pt", target="model 'tudui'")
    assert "unexpected keys extra.weight" in str(info.value)
    assert "shape mismatch model.8.weight: file (5, 64) vs model (10, 64)" in str(info.value)


# -- atomic writes ------------------------------------------------------------------------------


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "last.pt"
    atomic_save({"a": torch.ones(2)}, path)
    before = path.read_bytes()

    def half_then_fail(f):
        f.write(b"PK\x03\x04 half")
        raise OSError(28, "No space left on device")

    with pytest.raises(
        RunError, match=r"cannot write .*last\.pt: No space left on device \(the previous file is intact\)"
    ):
        atomic_write(path, half_then_fail)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]

    def interrupted(f):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, interrupted)
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_an_unwritable_directory_is_a_run_error(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(RunError, match=r"cannot write .*file/x\.pt: Not a directory"):
        atomic_save({}, tmp_path / "file" / "x.pt")


# -- refusing what is unsafe or not a checkpoint ------------------------------------------------


class _Marker:
    """Unpickling this creates a file: proof that loading ran code."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_a_file_whose_loading_would_run_code_is_refused_everywhere(tmp_path):
    from zoo.predict import predict

    marker = tmp_path / "PWNED"
    crafted = tmp_path / "crafted.pt"
    torch.save({"format": "zoo.checkpoint", "x": _Marker(str(marker))}, crafted)
    raw2, raw5 = tmp_path / "raw2.pkl", tmp_path / "raw5.pkl"
    raw2.write_bytes(pickle.dumps(_Marker(str(marker)), protocol=2))
    raw5.write_bytes(pickle.dumps(_Marker(str(marker)), protocol=5))
    refused = r"refused: it pickles Python objects \((io|builtins)\.open\).*--trust"
    for path, needle in ((crafted, refused), (raw2, refused), (raw5, "a plain pickle")):
        with pytest.raises(UsageError, match=needle):
            load_checkpoint(path)
        with pytest.raises(UsageError, match=needle):
            validate(path)
        with pytest.raises(UsageError, match=needle):
            predict(path, [])
        with pytest.raises(UsageError, match=needle):
            run(
                RunConfig(
                    "tudui",
                    "sgd",
                    data="fake",
                    limit_train=4,
                    limit_val=4,
                    out=str(tmp_path / "r"),
                    weights=str(path),
                    quiet=True,
                )
            )
    out = tmp_path / "resume"
    out.mkdir()
    (out / "last.pt").write_bytes(crafted.read_bytes())
    with pytest.raises(UsageError, match=refused):
        run(RunConfig("tudui", "sgd", data="fake", limit_train=4, limit_val=4, out=str(out), resume=True, quiet=True))
    assert not marker.exists() and not (tmp_path / "r").exists()


def test_a_method_1_file_loads_only_with_trust_and_says_what_it_risks(tmp_path, capsys):
    path = tmp_path / "full.pt"
    torch.save(Tudui(10), path)
    with pytest.raises(UsageError) as info:
        safe_load(path)
    message = str(info.value)
    assert (
        str(path) in message and "method 1" in message and "--trust" in message and "zoo_tudui.model.Tudui" in message
    )
    model = safe_load(path, trust=True)
    assert isinstance(model, Tudui)
    err = capsys.readouterr().err
    assert "weights_only=False" in err and "arbitrary code" in err
    with pytest.raises(UsageError, match=r"whole pickled model .*--weights .* --trust"):
        load_checkpoint(path, trust=True)


def _png(path: Path) -> Path:
    datafiles.write_image(tmp := path.with_suffix(".png"))
    tmp.rename(path)
    return path


@pytest.mark.parametrize(
    "make, needle",
    [
        (lambda p: p.write_bytes(b""), "is empty (0 bytes)"),
        (lambda p: p.write_bytes(Path(p.parent / "good.pt").read_bytes()[:300]), "truncated or corrupt"),
        (lambda p: _png(p), "not a torch file: it looks like a PNG image"),
        (lambda p: p.write_text("model: tudui\n"), "not a torch file: it looks like a text file"),
        (lambda p: p.mkdir(), "is a directory"),
        (lambda p: None, "does not exist"),
    ],
    ids=["empty", "truncated", "png", "text", "directory", "missing"],
)
def test_broken_files_are_usage_errors_naming_the_file(tmp_path, make, needle):
    torch.save({"a": torch.ones(1000)}, tmp_path / "good.pt")
    path = tmp_path / "bad.pt"
    make(path)
    with pytest.raises(UsageError) as info:
        load_checkpoint(path)
    assert str(path) in str(info.value) and needle in str(info.value)


def test_a_state_dict_or_safetensors_file_is_not_a_checkpoint(tmp_path):
    state = tmp_path / "state.pt"
    torch.save(nn.Linear(2, 2).state_dict(), state)
    with pytest.raises(UsageError, match=r"not a zoo checkpoint: it is a plain state_dict .*--weights"):
        load_checkpoint(state)
    safetensors = pytest.importorskip("safetensors.torch")
    st = tmp_path / "model.safetensors"
    safetensors.save_file(Tudui(10).state_dict(), str(st))
    with pytest.raises(UsageError, match=r"model\.safetensors is not a zoo checkpoint"):
        load_checkpoint(st)
    assert set(safe_load(st)) == set(Tudui(10).state_dict())  # but fine as --weights


def test_a_newer_checkpoint_version_is_refused(tmp_path, trained):
    ckpt = torch.load(trained / "last.pt", weights_only=True)
    ckpt["version"] = 2
    torch.save(ckpt, tmp_path / "v2.pt")
    with pytest.raises(UsageError, match="format version 2.*upgrade"):
        load_checkpoint(tmp_path / "v2.pt")


def test_a_variant_is_rebuilt_from_its_recorded_edits_when_the_registry_lacks_it(trained):
    # A checkpoint of a variant defined in a user registry file that is no longer passed: the
    # base model plus the recorded edits still rebuild it.
    ckpt = load_checkpoint(trained / "last.pt")
    ckpt["spec"] = {
        **ckpt["spec"],
        "model": "tudui-relu-head",
        "base": "tudui",
        "base_classes": None,
        "edits": [{"op": "append", "name": "head", "layer": "ReLU", "args": [], "kwargs": {}}],
    }
    model = model_from_checkpoint(ckpt, source="x.pt", registry=get_registry())
    assert isinstance(model.head, nn.ReLU)
    assert (model(torch.randn(2, 3, 32, 32)) >= 0).all()  # the appended module runs on the output
    ckpt["spec"]["base"] = "not-installed"
    with pytest.raises(UsageError, match="needs model 'not-installed'.*plugin 'tudui'"):
        model_from_checkpoint(ckpt, source="x.pt", registry=get_registry())


# -- devices and interop -------------------------------------------------------------------------


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (this machine has none)")
def test_a_checkpoint_written_on_cuda_loads_on_cpu(tmp_path):
    out = tmp_path / "r"
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
            device="cuda",
        )
    )
    ckpt = load_checkpoint(out / "last.pt", map_location="cpu")
    model = model_from_checkpoint(ckpt)
    assert next(model.parameters()).device.type == "cpu"
    assert validate(out / "last.pt", device="cpu", limit_val=16)["samples"] == 16


@pytest.mark.slow
def test_plain_torchvision_vgg16_with_the_seeds_edit_loads_a_zoo_checkpoint(tmp_path):
    from torchvision.models import vgg16

    out = tmp_path / "vgg"
    summary = run(
        RunConfig(
            "vgg16-replace-classifier",
            "sgd",
            data="fake",
            epochs=1,
            batch_size=2,
            limit_train=4,
            limit_val=2,
            out=str(out),
            quiet=True,
            device="cpu",
        )
    )
    assert summary["epochs"] == 1
    with torch.device("meta"):  # names and shapes are what a strict load checks: 138M weights not initialised
        plain = vgg16()
        plain.classifier[6] = nn.Linear(4096, 10)  # the seed's edit
    plain.load_state_dict(torch.load(out / "last.pt", weights_only=True)["model"], strict=True, assign=True)
    assert {p.device.type for p in plain.parameters()} == {"cpu"}  # every weight came from the file


def test_a_truncated_checkpoint_says_torchs_first_sentence_never_a_word_cut_in_half(tmp_path):
    torch.save({"a": torch.ones(1000)}, tmp_path / "good.pt")
    data = (tmp_path / "good.pt").read_bytes()
    path = tmp_path / "cut.pt"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(Exception) as raw:
        torch.load(path, weights_only=True)
    torch_text = " ".join(str(raw.value).split())
    with pytest.raises(UsageError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert str(path) in message and "truncated or corrupt (" in message and message.endswith(")")
    detail = message.split("truncated or corrupt (", 1)[1][:-1]
    said = detail.split(": ", 1)[1]  # after the exception's type name
    assert torch_text.startswith(said)
    # the whole text, or whole sentences of it: never cut mid-word
    assert said == torch_text or (said.endswith(".") and torch_text[len(said)] == " ")
