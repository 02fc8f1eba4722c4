"""The runner's fast paths (issue 5), checked on its real code path: what it does per step and
what each forward runs under, not how long it takes (timings live in bench/)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from probes import HostReads
from zoo import hookimpl
from zoo.data import TensorImageDataset
from zoo.plugins import get_plugin_host
from zoo.runner import CHECK_EVERY, RunConfig, run

BATCH = 4


class _Probe:
    """A plugin whose on_run_start hooks the run's model: what each forward runs under."""

    train_grads_none: list[bool] = []  # per training forward: every parameter's .grad is None
    eval_modes: list[tuple[bool, bool]] = []  # per eval forward: (inference mode, grad enabled)

    @staticmethod
    @hookimpl
    def on_run_start(run):
        run.model.register_forward_pre_hook(_Probe.hook)

    @staticmethod
    def hook(module: torch.nn.Module, args: Any) -> None:
        if module.training:
            _Probe.train_grads_none.append(all(p.grad is None for p in module.parameters()))
        else:
            _Probe.eval_modes.append((torch.is_inference_mode_enabled(), torch.is_grad_enabled()))


def probed_run(out: Path, steps: int, monkeypatch: pytest.MonkeyPatch) -> tuple[int, int]:
    """One epoch of Tudui on in-memory data: (host reads, TensorImageDataset.__getitem__ calls)."""
    _Probe.train_grads_none, _Probe.eval_modes = [], []
    get_plugin_host(extra=[("probe", _Probe)])
    items = [0]
    real_getitem = TensorImageDataset.__getitem__

    def counting_getitem(self: TensorImageDataset, index: int) -> Any:
        items[0] += 1
        return real_getitem(self, index)

    monkeypatch.setattr(TensorImageDataset, "__getitem__", counting_getitem)
    config = RunConfig(
        model="tudui",
        optimizer="sgd",
        data="fake",
        epochs=1,
        batch_size=BATCH,
        limit_train=steps * BATCH,
        limit_val=64,
        out=str(out),
        quiet=True,
        device="cpu",
    )
    with HostReads() as reads:
        run(config)
    return reads.count, items[0]


def test_a_training_step_reads_nothing_back_and_touches_no_item(tmp_path, monkeypatch):
    # Twice the steps, and the difference is the per-step cost: one read per NaN-check window.
    short = probed_run(tmp_path / "short", 2 * CHECK_EVERY, monkeypatch)
    long = probed_run(tmp_path / "long", 4 * CHECK_EVERY, monkeypatch)
    assert (long[0] - short[0]) / (2 * CHECK_EVERY) <= 1 / CHECK_EVERY, (short, long)
    assert short[1] == long[1] == 0  # batches are index_select slices of one tensor, never items


def test_training_forwards_start_with_no_grads_and_validation_runs_in_inference_mode(tmp_path, monkeypatch):
    steps = 12
    probed_run(tmp_path / "r", steps, monkeypatch)
    # zero_grad(set_to_none=True): from the second step on, every .grad is None again at the
    # forward (set_to_none=False would leave tensors of zeros to add into).
    assert len(_Probe.train_grads_none) == steps and all(_Probe.train_grads_none)
    assert _Probe.eval_modes and all(inference and not grad for inference, grad in _Probe.eval_modes)
