"""The runner's fast paths (issue 5), checked on its real code path: what it does per step and
what each forward runs under, not how long it takes (timings live in bench/)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from probes import HostReads, per_step
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


def probed_run(out: Path, steps: int, monkeypatch: pytest.MonkeyPatch) -> tuple[int, int, int]:
    """One epoch of Tudui on in-memory data, ``steps`` steps asked for: (host reads,
    TensorImageDataset.__getitem__ calls, training steps taken, counted by their forwards)."""
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
    return reads.count, items[0], len(_Probe.train_grads_none)


def test_a_training_step_reads_nothing_back_and_touches_no_item(tmp_path, monkeypatch):
    # Twice the steps, and the difference is the per-step cost: one read per NaN-check window.
    # The steps are counted, not assumed: a data set smaller than the longer run asks for would
    # give both runs the same steps and a difference of 0 whatever a step reads.
    short = probed_run(tmp_path / "short", CHECK_EVERY, monkeypatch)
    long = probed_run(tmp_path / "long", 2 * CHECK_EVERY, monkeypatch)
    assert (short[2], long[2]) == (CHECK_EVERY, 2 * CHECK_EVERY)
    assert per_step((short[0], short[2]), (long[0], long[2])) <= 1 / CHECK_EVERY, (short, long)
    assert short[1] == long[1] == 0  # batches are index_select slices of one tensor, never items


def test_training_forwards_start_with_no_grads_and_validation_runs_in_inference_mode(tmp_path, monkeypatch):
    steps = 12
    probed_run(tmp_path / "r", steps, monkeypatch)
    # zero_grad(set_to_none=True): from the second step on, every .grad is None again at the
    # forward (set_to_none=False would leave tensors of zeros to add into).
    assert len(_Probe.train_grads_none) == steps and all(_Probe.train_grads_none)
    assert _Probe.eval_modes and all(inference and not grad for inference, grad in _Probe.eval_modes)


def test_a_per_step_difference_refuses_runs_that_took_the_same_steps():
    # The bench's old GPU sync check: 12,800 and 25,600 images asked of a 10,000-image set.
    with pytest.raises(ValueError, match="157 and 157 steps"):
        per_step((3, 157), (3, 157))
    assert per_step((3, 100), (5, 200)) == 0.02


def _bench_module() -> Any:
    bench_dir = Path(__file__).resolve().parents[1] / "bench"
    sys.path.insert(0, str(bench_dir))  # its raw_loop
    try:
        if "zoo_bench_run" not in sys.modules:  # loaded once: its dataclasses need it in sys.modules
            spec = importlib.util.spec_from_file_location("zoo_bench_run", bench_dir / "run.py")
            module = importlib.util.module_from_spec(spec)
            sys.modules["zoo_bench_run"] = module
            spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(bench_dir))
    return sys.modules["zoo_bench_run"]


def test_the_bench_sync_check_runs_take_different_steps_within_each_profiles_training_set():
    bench = _bench_module()
    for profile in (bench.DEFAULT, bench.FULL):
        n_train = profile.seed_data[0]  # the GPU section's training set on CUDA
        steps = bench.sync_check_steps(n_train, 64)
        assert steps >= CHECK_EVERY and steps % CHECK_EVERY == 0 and 2 * steps * 64 <= n_train, (profile, steps)
    with pytest.raises(ValueError, match="needs at least"):
        bench.sync_check_steps(1_000, 64)
