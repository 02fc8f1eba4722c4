"""zoo/devices.py: --device values, the current CUDA device for cuda:N, and which cards --amp
may train on. CUDA is simulated (torch.cuda's queries patched): these run on any machine."""

from __future__ import annotations

import pytest
import torch

from zoo.devices import available_devices, bf16_problem, resolve_device
from zoo.errors import UsageError
from zoo.runner import RunConfig, run


@pytest.fixture
def gpus(monkeypatch):
    """A simulated machine with CUDA GPUs: ``gpus(cards)`` makes ``cards`` (a list of ``(name,
    (major, minor))``) visible; returns the list of devices ``torch.cuda.set_device`` was given."""
    current: list[int] = [0]
    chosen: list[object] = []

    def make(cards: list[tuple[str, tuple[int, int]]]) -> list[object]:
        def index(device=None) -> int:
            if device is None:
                return current[0]
            device = torch.device("cuda", device) if isinstance(device, int) else torch.device(device)
            return device.index if device.index is not None else current[0]

        def set_device(device) -> None:
            chosen.append(device)
            current[0] = index(device)

        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: len(cards))
        monkeypatch.setattr(torch.cuda, "current_device", lambda: current[0])
        monkeypatch.setattr(torch.cuda, "set_device", set_device)
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: cards[index(device)][0])
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: cards[index(device)][1])
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)  # as torch says on a V100
        monkeypatch.setattr(torch.version, "hip", None)
        return chosen

    return make


H100, V100 = ("NVIDIA H100 80GB HBM3", (9, 0)), ("Tesla V100-SXM2-16GB", (7, 0))


def test_cuda_n_becomes_the_current_device(gpus):
    chosen = gpus([H100, H100])
    assert available_devices() == ["cpu", "cuda:0", "cuda:1"]
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    assert chosen == [1]  # what asks "the" GPU (torch.cuda.synchronize(), bf16 checks) now asks cuda:1
    assert resolve_device("cuda") == torch.device("cuda", 1)
    assert resolve_device("auto") == torch.device("cuda", 1)
    assert chosen == [1]  # cuda and auto take the current device, without choosing another


def test_an_absent_gpu_is_refused_before_any_device_is_chosen(gpus):
    chosen = gpus([H100])
    with pytest.raises(UsageError, match=r"cuda:1' is not available: this machine has 1 GPU\(s\)"):
        resolve_device("cuda:1")
    assert chosen == []


def test_bf16_is_asked_of_the_training_device_not_the_current_one(gpus):
    gpus([H100, V100])  # cuda:0, the current device, has bf16; cuda:1 emulates it
    assert bf16_problem(torch.device("cuda", 0)) is None
    problem = bf16_problem(torch.device("cuda", 1))
    assert problem is not None
    assert "cuda:1 (Tesla V100-SXM2-16GB, compute capability 7.0)" in problem
    assert "needs compute capability 8.0 or later" in problem and "drop --amp" in problem


@pytest.mark.parametrize("card", [("Tesla T4", (7, 5)), ("Tesla P100-PCIE-16GB", (6, 0))])
def test_pre_ampere_cards_are_refused_although_torch_says_bf16_is_supported(gpus, card):
    gpus([card])
    assert torch.cuda.is_bf16_supported()  # torch counts emulation
    assert f"{card[0]}, compute capability {card[1][0]}.{card[1][1]}" in bf16_problem(torch.device("cuda", 0))


def test_ampere_and_later_and_other_devices_have_no_bf16_problem(gpus):
    gpus([("NVIDIA A100-SXM4-40GB", (8, 0)), ("NVIDIA GeForce RTX 3090", (8, 6)), H100])
    assert [bf16_problem(torch.device("cuda", i)) for i in range(3)] == [None, None, None]
    assert bf16_problem(torch.device("cpu")) is None


def test_amp_on_a_pre_ampere_card_is_refused_before_training(gpus, tmp_path):
    """Through the runner: --amp on a V100 stops with the card and its capability named, before
    a model is built or a run directory written (the simulated GPU is never touched)."""
    chosen = gpus([H100, V100])
    config = RunConfig(model="tudui", optimizer="sgd", data="fake", device="cuda:1", amp=True, out=str(tmp_path / "r"))
    switches = [
        (torch.backends.cuda.matmul, "fp32_precision"),
        (torch.backends.cudnn.conv, "fp32_precision"),
        (torch.backends.cudnn, "benchmark"),
        (torch.backends.cudnn, "deterministic"),
    ]
    before = [getattr(module, name) for module, name in switches]
    try:
        with pytest.raises(UsageError, match=r"Tesla V100-SXM2-16GB, compute capability 7\.0"):
            run(config)
    finally:  # the runner sets CUDA's numerics switches first: keep this process's as they were
        for (module, name), value in zip(switches, before, strict=True):
            setattr(module, name, value)
    assert chosen == [1]
    assert not (tmp_path / "r").exists()
