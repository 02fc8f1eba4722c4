"""Preflight: memory estimates against hand-computed bytes, the fit check, and misfit pairs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from torch import nn

from zoo import preflight as pf
from zoo.errors import UsageError
from zoo.preflight import (
    GiB,
    IncompatibleError,
    WontFitError,
    available_memory,
    check_compatible,
    estimate_memory,
    preflight,
)

LINEAR = 10 * 5 * 4 + 5 * 4  # nn.Linear(10, 5) in float32: weight + bias = 220 bytes


@pytest.fixture(scope="module")
def registry(builtin_registry):
    return builtin_registry


def estimate(registry, model: nn.Module, name: str, **hparams) -> pf.MemoryEstimate:
    entry = registry.optimizer(name)
    return estimate_memory(model, name, registry.optimizer_factory(name), {**entry.defaults, **hparams})


@pytest.mark.parametrize(
    "name, hparams, copies",
    [
        ("sgd", {}, 0),  # momentum=0 keeps no buffer
        ("sgd", {"momentum": 0.9}, 1),
        ("sgd-momentum", {}, 1),  # the registry.yaml preset carries momentum 0.9
        ("adam", {}, 2),
        ("adam", {"amsgrad": True}, 3),
        ("adamw", {}, 2),
        ("adagrad", {}, 1),
        ("adadelta", {}, 2),
        ("rmsprop", {}, 1),
        ("rmsprop", {"momentum": 0.9, "centered": True}, 3),
        ("rprop", {}, 2),
        ("asgd", {}, 1),
        ("lbfgs", {}, 2 * 100 + 3),  # default history_size=100
        ("lbfgs", {"history_size": 5}, 2 * 5 + 3),
    ],
)
def test_linear_estimate_matches_hand_count(registry, name, hparams, copies):
    est = estimate(registry, nn.Linear(10, 5), name, **hparams)
    assert (est.parameters, est.buffers, est.gradients) == (LINEAR, 0, LINEAR)
    assert est.optimizer_state == copies * LINEAR
    assert est.total == 2 * LINEAR + copies * LINEAR
    assert est.trainable_numel == 55


def test_estimate_counts_dtype_frozen_and_buffers(registry):
    model = nn.Sequential(nn.Linear(10, 5).double(), nn.BatchNorm1d(5))
    model[0].bias.requires_grad_(False)
    est = estimate(registry, model, "adam")
    weight, bias, bn = 50 * 8, 5 * 8, 2 * 5 * 4  # float64 linear; BatchNorm weight and bias
    assert est.parameters == weight + bias + bn
    assert est.gradients == weight + bn  # frozen bias: no gradient, no state
    assert est.optimizer_state == 2 * (weight + bn)
    assert est.buffers == 2 * 5 * 4 + 8  # running_mean, running_var, num_batches_tracked
    assert "exp_avg, exp_avg_sq" in est.breakdown


def test_adafactor_state_is_factored(registry):
    est = estimate(registry, nn.Linear(10, 5), "adafactor")
    assert est.optimizer_state == (5 + 10) * 4 + 5 * 4  # row + column for the weight, full for the bias


def test_unknown_optimizer_assumes_two_copies():
    class Lion(torch.optim.Optimizer):  # a third-party optimizer the table does not know
        def __init__(self, params, lr=1e-4):
            super().__init__(params, {"lr": lr})

    est = estimate_memory(nn.Linear(10, 5), "lion", Lion, {})
    assert est.optimizer_state == 2 * LINEAR
    assert "assumed 2" in est.state_detail


def test_factory_function_is_resolved_to_its_class():
    def factory(params, **hparams):
        return torch.optim.SGD(params, momentum=0.9, **hparams)

    assert estimate_memory(nn.Linear(10, 5), "mine", factory, {"lr": 0.1}).optimizer_state == LINEAR


def test_constructor_that_reads_values_is_checked_on_the_real_parameters():
    class Scaled(torch.optim.SGD):  # reads a value: impossible on meta stand-ins
        def __init__(self, params, lr=0.1, momentum=0.5):
            params = list(params)
            super().__init__(params, lr=lr / max(1.0, float(params[0].detach().abs().sum())), momentum=momentum)

    model = nn.Linear(10, 5)
    assert check_compatible(model, "scaled", Scaled, {}) is None
    assert estimate_memory(model, "scaled", Scaled, {}).optimizer_state == LINEAR  # signature: momentum 0.5


@pytest.fixture(scope="module")
def meta_vgg16(registry):
    with torch.device("meta"):  # parameters without storage: the count, not 0.5 GiB
        return registry.build_model("vgg16", 10, check=False)


def test_lbfgs_on_vgg16_is_refused_with_numbers(registry, meta_vgg16, monkeypatch):
    monkeypatch.setattr(pf, "available_memory", lambda device: 22 * GiB)
    hparams = registry.optimizer("lbfgs").defaults
    est = estimate_memory(meta_vgg16, "lbfgs", registry.optimizer_factory("lbfgs"), hparams)
    assert est.trainable_numel == 134_301_514
    assert est.optimizer_state == 203 * 4 * 134_301_514  # ~100 GiB: 2 x history 100 + 3 flat copies
    with pytest.raises(WontFitError) as info:
        preflight(meta_vgg16, "lbfgs", registry.optimizer_factory("lbfgs"), hparams, "cpu")
    message = str(info.value)
    need = est.total + pf.ACTIVATION_ALLOWANCE + est.gradients
    assert f"needs about {need / GiB:.1f} GiB" in message and "102." in message
    assert "only 22.0 GiB is available" in message
    assert re.search(r"--opt history_size=10 \(at most 1\d fits\)", message)
    assert "adamw" in message and "smaller model" in message
    assert isinstance(info.value, UsageError) and info.value.exit_code == 2


def test_vgg16_fits_with_adamw_or_a_short_history(registry, meta_vgg16, monkeypatch):
    monkeypatch.setattr(pf, "available_memory", lambda device: 22 * GiB)
    est = preflight(meta_vgg16, "adamw", registry.optimizer_factory("adamw"), {}, "cpu")
    assert est.optimizer_state == 2 * est.gradients
    preflight(meta_vgg16, "lbfgs", registry.optimizer_factory("lbfgs"), {"history_size": 5}, "cpu")


def test_preflight_runs_no_forward_pass(registry, monkeypatch):
    model = registry.build_model("tudui", 10)

    def refuse(module, args):
        raise AssertionError("preflight ran the model")

    model.register_forward_pre_hook(refuse)
    est = preflight(model, "adam", registry.optimizer_factory("adam"), {}, "cpu")
    assert est.optimizer_state == 2 * est.gradients


def test_sparseadam_needs_sparse_gradients(registry):
    tudui = registry.build_model("tudui", 10)
    reason = check_compatible(tudui, "sparseadam", registry.optimizer_factory("sparseadam"), {})
    assert "sparse gradients" in reason and "nn.Embedding(sparse=True)" in reason
    assert "10 of the model's 10" in reason and "model.0.weight" in reason
    with pytest.raises(IncompatibleError, match="sparse gradients"):
        preflight(tudui, "sparseadam", registry.optimizer_factory("sparseadam"), {}, "cpu")
    embedding = nn.Embedding(100, 8, sparse=True)
    assert check_compatible(embedding, "sparseadam", registry.optimizer_factory("sparseadam"), {}) is None


def test_muon_takes_only_2d_parameters(registry):
    tudui = registry.build_model("tudui", 10)
    reason = check_compatible(tudui, "muon", registry.optimizer_factory("muon"), {})
    assert "only takes 2-D parameters" in reason and "8 that are not" in reason
    assert "model.0.weight is 4-D, model.0.bias is 1-D" in reason and "adamw" in reason
    mlp = nn.Sequential(nn.Linear(8, 8, bias=False), nn.ReLU(), nn.Linear(8, 10, bias=False))
    assert check_compatible(mlp, "muon", registry.optimizer_factory("muon"), {}) is None
    # Frozen parameters are not the optimizer's: a frozen conv under 2-D heads is fine.
    frozen = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4, 10, bias=False))
    frozen[0].requires_grad_(False)
    assert check_compatible(frozen, "muon", registry.optimizer_factory("muon"), {}) is None


def test_constructor_rejections_are_reported(registry):
    model = nn.Linear(4, 2)
    sgd = registry.optimizer_factory("sgd")
    assert "Invalid learning rate" in check_compatible(model, "sgd", sgd, {"lr": -1.0})
    assert "Nesterov" in check_compatible(model, "sgd", sgd, {"lr": 0.1, "nesterov": True})
    assert "no trainable parameters" in check_compatible(model.requires_grad_(False), "sgd", sgd, {})


def test_adagrad_compatibility_check_allocates_nothing(registry):
    # Adagrad builds its state in the constructor; the check builds it on meta stand-ins.
    model = nn.Linear(4, 2)
    assert check_compatible(model, "adagrad", registry.optimizer_factory("adagrad"), {}) is None
    assert all(p.device.type == "cpu" for p in model.parameters())


def test_available_memory_on_cpu():
    free = available_memory("cpu")
    total = int(Path("/proc/meminfo").read_text().split()[1]) * 1024
    assert free is not None and 0 < free <= total
    assert available_memory("meta") is None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_available_memory_on_cuda():
    free, total = torch.cuda.mem_get_info()
    assert 0 < available_memory("cuda") <= total


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_cgroup_v2_limit_takes_the_tightest_ancestor(tmp_path):
    proc = tmp_path / "cgroup"
    _write(proc, "0::/outer/inner\n")
    inner, outer = tmp_path / "fs/outer/inner", tmp_path / "fs/outer"
    _write(inner / "memory.max", "1000000\n")
    _write(inner / "memory.current", "400000\n")
    _write(inner / "memory.stat", "anon 300000\ninactive_file 100000\n")
    assert pf._cgroup_available(tmp_path / "fs", proc) == 1000000 - 400000 + 100000
    _write(outer / "memory.max", "500000\n")
    _write(outer / "memory.current", "450000\n")
    assert pf._cgroup_available(tmp_path / "fs", proc) == 50000
    _write(outer / "memory.max", "max\n")
    assert pf._cgroup_available(tmp_path / "fs", proc) == 700000


def test_cgroup_v1_limit_and_unlimited(tmp_path):
    proc = tmp_path / "cgroup"
    _write(proc, "5:cpu:/\n4:memory:/job\n")
    job = tmp_path / "fs/memory/job"
    _write(job / "memory.limit_in_bytes", "2000000\n")
    _write(job / "memory.usage_in_bytes", "500000\n")
    _write(job / "memory.stat", "inactive_file 1\ntotal_inactive_file 250000\n")
    assert pf._cgroup_available(tmp_path / "fs", proc) == 2000000 - 500000 + 250000
    _write(job / "memory.limit_in_bytes", "9223372036854771712\n")  # v1's "no limit"
    assert pf._cgroup_available(tmp_path / "fs", proc) is None
