"""Issue 17's items that show on a CPU: optimizer state layouts after a resume, the CUDA numerics
switches, the validation batch sized from memory, and --compile validating with the eager module."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from torch import nn

from zoo import hookimpl
from zoo.plugins import get_plugin_host
from zoo.preflight import activation_bytes_per_sample, validation_batch_size
from zoo.registry import reset_registry
from zoo.runner import RunConfig, cuda_numerics, run


class LayoutSpy:
    """Records, at each run's start, whether every optimizer state tensor shaped like its
    parameter has the parameter's strides and device (a resumed run's state is restored by then)."""

    def __init__(self) -> None:
        self.seen: list[list[tuple[bool, bool]]] = []

    @hookimpl
    def on_run_start(self, run):
        pairs = []
        for group in run.optimizer.param_groups:
            for param in group["params"]:
                for value in run.optimizer.state.get(param, {}).values():
                    if torch.is_tensor(value) and value.shape == param.shape:
                        pairs.append((value.stride() == param.stride(), value.device == param.device))
        self.seen.append(pairs)


@pytest.mark.parametrize("optimizer", ["adam", "sgd-momentum"])
def test_resumed_optimizer_state_keeps_its_parameters_layout(tmp_path, optimizer):
    spy = LayoutSpy()
    assert get_plugin_host().register(spy, "layout-spy")
    reset_registry()
    config = RunConfig("tudui", optimizer, data="fake", limit_train=32, limit_val=16, batch_size=16, epochs=1,
                       out=str(tmp_path / "r"), quiet=True)  # fmt: skip
    run(config)
    run(replace(config, epochs=2, resume=True))
    fresh, resumed = spy.seen
    assert fresh == []  # no state before the first step
    # Tudui's convolution weights are channels_last: their state must be too, after the resume.
    assert len(resumed) >= 4 and all(same_strides and same_device for same_strides, same_device in resumed), resumed


def test_cuda_numerics_switch_tf32_and_autotuning_and_deterministic_turns_them_off():
    saved = (torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision,
             torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic)  # fmt: skip
    try:
        cuda_numerics(torch.device("cpu"), deterministic=False)  # the CPU: nothing changes
        assert torch.backends.cudnn.benchmark == saved[2]
        cuda_numerics(torch.device("cuda", 0), deterministic=False)
        assert torch.backends.cuda.matmul.fp32_precision == "tf32" and torch.backends.cudnn.benchmark
        assert torch.backends.cudnn.conv.fp32_precision == "tf32" and not torch.backends.cudnn.deterministic
        cuda_numerics(torch.device("cuda", 0), deterministic=True)
        assert torch.backends.cuda.matmul.fp32_precision == "ieee" and not torch.backends.cudnn.benchmark
        assert torch.backends.cudnn.conv.fp32_precision == "ieee" and torch.backends.cudnn.deterministic
    finally:
        torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision = saved[:2]
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = saved[2:]


def test_activations_per_sample_are_counted_from_a_real_forward():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 16 * 16, 10))
    model.train()
    per_sample = activation_bytes_per_sample(model, (3, 16, 16), torch.device("cpu"))
    # conv out + relu out + flatten out (8 x 16 x 16 floats each) + 10 logits
    assert per_sample == 4 * (3 * 8 * 16 * 16 + 10)
    assert model.training  # left as it was


def test_the_validation_batch_shrinks_to_what_memory_holds():
    mib = 2**20
    assert validation_batch_size(10 * mib, None, 256) == 256  # memory unknown (the CPU)
    assert validation_batch_size(10 * mib, 100 * 1024 * mib, 256) == 256  # plenty
    assert validation_batch_size(10 * mib, 1000 * mib, 256) == 50  # half of 1000 MiB at 10 MiB a sample
    assert validation_batch_size(10 * mib, 5 * mib, 256) == 1  # never zero


def test_compiled_runs_validate_with_the_eager_module(tmp_path, monkeypatch):
    import zoo.runner as runner

    seen = []
    real = runner.evaluate

    def spy(module, *args, **kwargs):
        seen.append(type(module).__name__)
        return real(module, *args, **kwargs)

    monkeypatch.setattr(runner, "evaluate", spy)
    monkeypatch.setattr(torch, "compile", lambda module, **kw: CompiledStandIn(module))
    run(RunConfig("tudui", "sgd", data="fake", limit_train=16, limit_val=8, batch_size=16, epochs=1,
                  out=str(tmp_path / "r"), quiet=True, compile=True))  # fmt: skip
    assert seen == ["Tudui"]


class CompiledStandIn(nn.Module):
    """What torch.compile returns, as far as the runner can tell: a wrapper module."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, x):
        return self.module(x)


def test_lbfgs_trains_a_convolutional_model(tmp_path):
    # L-BFGS flattens gradients with view(-1), which channels_last gradients refuse: the runner
    # keeps such a model NCHW (zoo check, which never used channels_last, passed all along).
    summary = run(RunConfig("tudui", "lbfgs", data="fake", limit_train=32, limit_val=16, batch_size=16, epochs=1,
                            out=str(tmp_path / "r"), quiet=True))  # fmt: skip
    assert summary["epochs"] == 1
