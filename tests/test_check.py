"""zoo check: one step per model x optimizer pair, each in a forked child under a time budget.

No test here passes or fails by how long something took: a step that must time out never ends
(so waiting for it would hang, and pytest-timeout would fail the test), times are checked from
below only, and the budget of every step that must finish is far above what a loaded machine
needs, so that only a real failure gives "timeout".
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
from pathlib import Path

import pytest
import torch
from torch import nn

from zoo import preflight as pf
from zoo.check import run_check
from zoo.entries import ModelEntry, OptimizerEntry
from zoo.errors import UnknownNameError, UsageError
from zoo.registry import Registry

BUDGET_S = 60.0  # for steps that must finish: milliseconds of work, whatever the load


class Sleepy(torch.optim.SGD):
    """A step that never ends."""

    def step(self, closure=None):
        threading.Event().wait()


class Marking(torch.optim.SGD):
    """A step that leaves a file behind (the child is forked: the file is the only trace)."""

    mark: Path | None = None

    def step(self, closure=None):
        assert self.mark is not None
        self.mark.touch()
        return super().step(closure)


class Boom(torch.optim.SGD):
    """A step that fails, naming the weights it started from."""

    def step(self, closure=None):
        total = sum(float(p.detach().double().sum()) for group in self.param_groups for p in group["params"])
        raise RuntimeError(f"boom at {total:.12f}")


class Vanish(torch.optim.SGD):
    """A step whose process dies without a word, as under the OOM killer."""

    def step(self, closure=None):
        os.kill(os.getpid(), signal.SIGKILL)


def tiny(num_classes: int) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 8), nn.ReLU(), nn.Linear(8, num_classes))


def broken(num_classes: int) -> nn.Module:
    raise ValueError("weights file is missing")


def make_registry(*optimizers: tuple[str, object]) -> Registry:
    registry = Registry()
    registry.add(ModelEntry("tiny", "tests", tiny, input_size=(3, 4, 4)))
    for name, factory in optimizers:
        registry.add(OptimizerEntry(name, "tests", factory, defaults={"lr": 0.1}))
    return registry


def test_tudui_with_builtin_optimizers():
    seen = []
    rows = run_check(models="tudui", optimizers="[alms]*", budget_s=BUDGET_S, on_row=seen.append)
    assert seen == rows
    status = {row["optimizer"]: row["status"] for row in rows}
    assert status == {
        "adadelta": "ok",
        "adafactor": "ok",
        "adagrad": "ok",
        "adam": "ok",
        "adam-lr3e-4": "ok",
        "adamax": "ok",
        "adamw": "ok",
        "asgd": "ok",
        "lbfgs": "ok",
        "muon": "incompatible",
        "sgd": "ok",
        "sgd-momentum": "ok",
        "sparseadam": "incompatible",
    }
    for row in rows:
        assert set(row) == {"model", "optimizer", "status", "reason", "seconds"}
        assert row["model"] == "tudui" and isinstance(row["seconds"], float) and row["seconds"] >= 0
        assert (row["reason"] is None) == (row["status"] == "ok")
    reasons = {row["optimizer"]: row["reason"] for row in rows}
    assert "only takes 2-D parameters" in reasons["muon"] and "model.0.weight is 4-D" in reasons["muon"]
    assert "sparse gradients" in reasons["sparseadam"]


def test_every_optimizer_starts_from_the_same_weights():
    built = []

    def keep(num_classes):
        model = tiny(num_classes)
        built.append((model, {k: v.clone() for k, v in model.state_dict().items()}))
        return model

    registry = make_registry(("a-boom", Boom), ("b-sgd", torch.optim.SGD), ("c-boom", Boom))
    registry.models["tiny"] = ModelEntry("tiny", "tests", keep, input_size=(3, 4, 4))
    rows = run_check(registry=registry, budget_s=BUDGET_S)
    assert [row["status"] for row in rows] == ["error", "ok", "error"]
    ((model, initial),) = built  # built once
    # Boom names the weights it was given: both saw the initial ones, sgd's step in between
    # notwithstanding, and the parent's model is untouched.
    start = sum(float(v.double().sum()) for v in initial.values())
    assert rows[0]["reason"] == rows[2]["reason"] == f"RuntimeError: boom at {start:.12f}"
    assert all(torch.equal(v, initial[k]) for k, v in model.state_dict().items())


def test_slow_step_times_out_and_is_not_waited_for():
    # Sleepy's step never ends: that run_check returns at all shows it was not waited for.
    registry = make_registry(("sleepy", Sleepy), ("sgd", torch.optim.SGD))
    rows = run_check(registry=registry, budget_s=1.0)
    sgd, sleepy = rows  # in name order
    assert sleepy["status"] == "timeout" and "1 s budget" in sleepy["reason"]
    assert sleepy["seconds"] >= 1.0  # stopped after the budget, not before
    assert sgd["status"] == "ok" and sgd["reason"] is None
    assert multiprocessing.active_children() == []  # the sleeping child was killed and reaped


def test_a_child_that_dies_is_an_error():
    rows = run_check(registry=make_registry(("vanish", Vanish)), budget_s=BUDGET_S)
    assert rows[0]["status"] == "error" and "killed" in rows[0]["reason"]


def test_a_model_that_fails_to_build_gives_one_error_per_optimizer():
    registry = make_registry(("sgd", torch.optim.SGD), ("adam", torch.optim.Adam))
    registry.models["tiny"] = ModelEntry("tiny", "tests", broken, input_size=(3, 4, 4))
    rows = run_check(registry=registry, budget_s=BUDGET_S)
    assert [(row["optimizer"], row["status"]) for row in rows] == [("adam", "error"), ("sgd", "error")]
    assert all("failed to build" in row["reason"] and "weights file is missing" in row["reason"] for row in rows)


def test_a_pair_that_cannot_fit_is_not_run(monkeypatch, tmp_path):
    monkeypatch.setattr(Marking, "mark", tmp_path / "stepped")
    registry = make_registry(("marking", Marking))
    assert run_check(registry=registry, budget_s=BUDGET_S)[0]["status"] == "ok"  # it fits: stepped
    assert Marking.mark.exists()
    Marking.mark.unlink()
    monkeypatch.setattr(pf, "available_memory", lambda device: 1024)
    rows = run_check(registry=registry, budget_s=BUDGET_S)
    assert rows[0]["status"] == "incompatible" and "memory" in rows[0]["reason"]
    assert not Marking.mark.exists()  # refused up front, never stepped


def test_children_work_after_multithreaded_use():
    # GNU OpenMP is not fork-safe once this process has run a parallel region: the check must
    # notice and give its children one thread rather than deadlock in them.
    threads = torch.get_num_threads()
    torch.ones(1 << 20).add_(1)
    rows = run_check(registry=make_registry(("sgd", torch.optim.SGD)), budget_s=BUDGET_S)
    assert rows[0]["status"] == "ok"
    assert torch.get_num_threads() == threads  # the parent's setting is restored


def test_globs_that_match_nothing_are_usage_errors():
    registry = make_registry(("sgd", torch.optim.SGD))
    with pytest.raises(UsageError, match=r"no model matches 'vgg\*' \(zoo list models\)"):
        run_check(models="vgg*", registry=registry)
    with pytest.raises(UsageError, match=r"no optimizer matches 'x\*'"):
        run_check(optimizers="x*", registry=registry)


def test_an_unknown_name_is_the_registrys_error():
    # a name without glob characters is a name: the registry's message, its suggestion of the
    # same kind (never an optimizer for a model), as zoo show and zoo run report it
    registry = make_registry(("sgd", torch.optim.SGD))
    with pytest.raises(UnknownNameError) as caught:
        run_check(models="tinyy", registry=registry)
    assert str(caught.value) == "unknown model 'tinyy'; did you mean 'tiny'? (zoo list models)"
    with pytest.raises(UnknownNameError) as caught:
        run_check(models="tiny", optimizers="tiny", registry=registry)
    assert str(caught.value) == "unknown optimizer 'tiny' (zoo list optimizers)"
