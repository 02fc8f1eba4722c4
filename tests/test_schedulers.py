"""The built-in schedulers: every torch scheduler discovered, the right intervals, the four that
need Python objects refused with the reason, the presets, warmupcosinelr resuming exactly, and
the registry file's ``schedulers:`` section."""

from __future__ import annotations

import math
import textwrap

import pytest
import torch

from zoo.errors import UsageError
from zoo.recipe import build_scheduler
from zoo.registry import get_registry

TORCH_SCHEDULERS = sorted(
    name
    for name in torch.optim.lr_scheduler.__all__
    if isinstance(getattr(torch.optim.lr_scheduler, name), type)
    and issubclass(getattr(torch.optim.lr_scheduler, name), torch.optim.lr_scheduler.LRScheduler)
    and getattr(torch.optim.lr_scheduler, name) is not torch.optim.lr_scheduler.LRScheduler
)
REFUSED = {"lambdalr", "multiplicativelr", "sequentiallr", "chainedscheduler"}
# What a command line must give each torch scheduler that has required hyper-parameters the run
# cannot fill. A scheduler torch adds with a new required one fails test_every_scheduler_builds.
NEEDS = {
    "steplr": {"step_size": "2"},
    "multisteplr": {"milestones": "1,3"},
    "exponentiallr": {"gamma": "0.9"},
    "cycliclr": {"base_lr": "0.001"},
    "cosineannealingwarmrestarts": {"T_0": "2"},
}


@pytest.fixture
def registry(builtin_registry):
    return builtin_registry


def sgd(lr: float = 0.1, momentum: float = 0.9) -> torch.optim.SGD:
    weight = torch.nn.Parameter(torch.ones(3))
    weight.grad = torch.zeros(3)
    return torch.optim.SGD([weight], lr=lr, momentum=momentum)


def lrs(schedule, optimizer, steps: int) -> list[float]:
    """The learning rate after each of ``steps`` optimizer steps, each followed by a scheduler step."""
    out = []
    for _ in range(steps):
        optimizer.step()
        schedule.step(1.0) if schedule.needs_metric else schedule.step()
        out.append(optimizer.param_groups[0]["lr"])
    return out


def test_every_torch_scheduler_is_discovered(registry):
    # read from torch's source, so it follows the installed torch: this fails when torch adds
    # or removes a scheduler class and the discovery misses it
    plugin = sorted(e.summary.split()[0] for e in registry.entries("scheduler") if e.plugin == "schedulers")
    assert [s.removeprefix("torch.optim.lr_scheduler.") for s in plugin if s.startswith("torch.")] == TORCH_SCHEDULERS
    names = {e.name for e in registry.entries("scheduler") if e.plugin == "schedulers"}
    assert names == {n.lower() for n in TORCH_SCHEDULERS} | {"warmupcosinelr"}
    assert len(TORCH_SCHEDULERS) >= 15


def test_intervals(registry):
    per_step = {e.name for e in registry.entries("scheduler") if e.interval == "step"}
    assert per_step == {"onecyclelr", "cycliclr", "warmupcosinelr", "warmup-cosine", "onecycle"}
    assert registry.scheduler("reducelronplateau").interval == "epoch"


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_schedulers_needing_python_objects_are_refused_with_the_reason(registry, name):
    entry = registry.scheduler(name)
    assert "refused by zoo run" in entry.summary
    with pytest.raises(UsageError) as caught:
        build_scheduler(registry, name, sgd(), opts={}, interval=None, epochs=2, steps_per_epoch=3)
    message = str(caught.value)
    assert message.startswith(f"scheduler '{name}' cannot be built by zoo run: ")
    assert ("a Python function" if name in ("lambdalr", "multiplicativelr") else "other schedulers") in message
    assert "plugin" in message  # what to do instead


def test_every_scheduler_builds_and_steps(registry):
    failed = {}
    for entry in registry.entries("scheduler"):
        if entry.name in REFUSED:
            continue
        optimizer = sgd()
        try:
            schedule = build_scheduler(
                registry, entry.name, optimizer, opts=NEEDS.get(entry.name, {}), interval=None, epochs=4,
                steps_per_epoch=3,
            )  # fmt: skip
            steps = 12 if schedule.interval == "step" else 4
            rates = lrs(schedule, optimizer, steps)
            assert all(r >= 0 for r in rates), rates
        except Exception as exc:  # collected: one failure names every scheduler that failed
            failed[entry.name] = f"{type(exc).__name__}: {exc}"
    assert not failed, failed


def test_reducelronplateau_is_stepped_with_the_validation_loss(registry):
    optimizer = sgd(lr=1.0)
    schedule = build_scheduler(
        registry, "reducelronplateau", optimizer, opts={"patience": "1"}, interval=None, epochs=5, steps_per_epoch=2
    )
    assert schedule.needs_metric and schedule.interval == "epoch"
    for loss in (1.0, 1.0, 1.0):  # no improvement for 2 epochs > patience 1
        schedule.step(loss)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.1)
    with pytest.raises(ValueError, match="validation loss"):
        schedule.step()
    with pytest.raises(UsageError, match="interval is 'epoch', not 'step'"):
        build_scheduler(registry, "reducelronplateau", sgd(), opts={}, interval="step", epochs=5, steps_per_epoch=2)


# -- the presets ---------------------------------------------------------------------------------


def test_cosine_spans_the_whole_run(registry):
    optimizer = sgd(lr=0.1)
    schedule = build_scheduler(registry, "cosine", optimizer, opts={}, interval=None, epochs=4, steps_per_epoch=10)
    assert (schedule.interval, schedule.hparams["T_max"], schedule.filled) == ("epoch", 4, ("T_max",))
    expected = [0.05 * (1 + math.cos(math.pi * t / 4)) for t in (1, 2, 3, 4)]
    assert lrs(schedule, optimizer, 4) == pytest.approx(expected, abs=1e-12)


def test_warmup_cosine_warms_up_for_one_epoch_then_anneals_to_the_end(registry):
    optimizer = sgd(lr=0.1)
    schedule = build_scheduler(
        registry, "warmup-cosine", optimizer, opts={}, interval=None, epochs=3, steps_per_epoch=4
    )
    assert schedule.interval == "step"
    assert schedule.hparams == {"warmup_epochs": 1, "total_steps": 12, "epochs": 3}
    first = optimizer.param_groups[0]["lr"]
    rates = lrs(schedule, optimizer, 12)
    assert first == pytest.approx(0.01)  # start_factor 0.1
    warmup, cosine = rates[:4], rates[4:]
    assert warmup == pytest.approx([0.0325, 0.055, 0.0775, 0.1])  # linear to lr after one epoch's 4 steps
    assert all(a > b for a, b in zip(cosine, cosine[1:])) and rates[-1] == pytest.approx(0.0, abs=1e-12)


def test_warmup_cosine_per_epoch_warms_up_over_epochs(registry):
    optimizer = sgd(lr=0.1)
    schedule = build_scheduler(
        registry,
        "warmup-cosine",
        optimizer,
        opts={"warmup_epochs": "2"},
        interval="epoch",
        epochs=4,
        steps_per_epoch=50,
    )
    assert schedule.hparams["total_steps"] == 4 and schedule.scheduler.warmup_steps == 2
    assert lrs(schedule, optimizer, 4) == pytest.approx([0.055, 0.1, 0.05, 0.0], abs=1e-12)


def test_onecycle_peaks_at_the_optimizers_lr(registry):
    optimizer = sgd(lr=0.02)
    schedule = build_scheduler(registry, "onecycle", optimizer, opts={}, interval=None, epochs=2, steps_per_epoch=10)
    assert schedule.hparams["max_lr"] == 0.02 and "max_lr" in schedule.filled
    assert schedule.hparams["total_steps"] == 20 and schedule.interval == "step"
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.02 / 25)
    rates = lrs(schedule, optimizer, 19)
    assert max(rates) == pytest.approx(0.02) and optimizer.param_groups[0]["momentum"] == 0.9  # momentum untouched
    given = build_scheduler(
        registry, "onecycle", sgd(), opts={"max_lr": "0.5", "pct_start": "0.15"}, interval=None, epochs=2,
        steps_per_epoch=10,
    )  # fmt: skip
    assert given.hparams["max_lr"] == 0.5 and "max_lr" not in given.filled


# -- resuming exactly ------------------------------------------------------------------------------


def resumed_lrs(registry, name: str, k: int, total: int, **build) -> list[float]:
    """Stop after ``k`` steps, save optimizer and scheduler state, build both again and load them
    (as --resume does), then continue to ``total``."""
    optimizer = sgd()
    schedule = build_scheduler(registry, name, optimizer, opts={}, interval=None, **build)
    before = lrs(schedule, optimizer, k)
    saved = {"optimizer": optimizer.state_dict(), "scheduler": schedule.state_dict()}
    optimizer = sgd()
    schedule = build_scheduler(registry, name, optimizer, opts={}, interval=None, **build)
    optimizer.load_state_dict(saved["optimizer"])
    schedule.load_state_dict(saved["scheduler"])
    return before + lrs(schedule, optimizer, total - k)


@pytest.mark.parametrize("name", ["warmup-cosine", "cosine", "onecycle"])
@pytest.mark.parametrize("k", [1, 3, 5, 9])
def test_presets_resume_exactly(registry, name, k):
    build = {"epochs": 3, "steps_per_epoch": 4}
    optimizer = sgd()
    uninterrupted = lrs(build_scheduler(registry, name, optimizer, opts={}, interval=None, **build), optimizer, 12)
    assert resumed_lrs(registry, name, k, 12, **build) == uninterrupted  # bitwise, not approx


def test_warmupcosinelr_state_is_its_step_and_hyper_parameters(registry):
    optimizer = sgd()
    schedule = build_scheduler(
        registry, "warmup-cosine", optimizer, opts={}, interval=None, epochs=3, steps_per_epoch=4
    )
    state = schedule.state_dict()
    assert {"last_epoch", "base_lrs", "total_steps", "warmup_steps", "eta_min", "start_factor"} <= set(state)
    assert not any(callable(v) or isinstance(v, torch.optim.lr_scheduler.LRScheduler) for v in state.values())


@pytest.mark.parametrize(
    "opts, message",
    [
        ({"warmup_epochs": "5"}, "warmup_epochs must be between 0 and the run's 3 epochs"),
        ({"start_factor": "0"}, "start_factor must be in (0, 1]"),
    ],
)
def test_warmupcosinelr_checks_its_values(registry, opts, message):
    with pytest.raises(UsageError) as caught:
        build_scheduler(registry, "warmup-cosine", sgd(), opts=opts, interval=None, epochs=3, steps_per_epoch=4)
    assert str(caught.value).startswith("scheduler 'warmup-cosine' (registry.yaml:") and message in str(caught.value)


# -- registering, and the registry file ------------------------------------------------------------


BAD_PLUGIN = """
from zoo import hookimpl

@hookimpl
def register_schedulers(register):
    register("ok-sched", "torch.optim.lr_scheduler:StepLR")
    register("per-batch", "torch.optim.lr_scheduler:StepLR", interval="batch")
"""


def test_a_bad_interval_fails_the_plugin_and_registers_nothing_of_it(monkeypatch, plugin_dist, capsys):
    monkeypatch.syspath_prepend(str(plugin_dist("badsched", BAD_PLUGIN)))
    registry = get_registry()
    assert "ok-sched" not in registry.schedulers and "steplr" in registry.schedulers
    info = registry.host.infos["badsched"]
    assert info.status == "failed" and "interval must be 'epoch' or 'step', got 'batch'" in info.error
    assert "plugin 'badsched' failed" in capsys.readouterr().err


def write(tmp_path, text: str) -> str:
    path = tmp_path / "mine.yaml"
    path.write_text(textwrap.dedent(text))
    return str(path)


def test_user_presets_layer_over_the_plugins(tmp_path, registry):
    path = write(
        tmp_path,
        """\
        schedulers:
          halving:
            base: steplr
            hparams: {step_size: 1, gamma: 0.5}
            interval: step
        """,
    )
    mine = get_registry([path])
    entry = mine.scheduler("halving")
    assert (entry.base, entry.interval, entry.defaults, entry.source) == (
        "steplr",
        "step",
        {"step_size": 1, "gamma": 0.5},
        f"{path}:3",
    )
    optimizer = sgd(lr=1.0)
    schedule = build_scheduler(mine, "halving", optimizer, opts={}, interval=None, epochs=1, steps_per_epoch=3)
    assert lrs(schedule, optimizer, 3) == [0.5, 0.25, 0.125]


@pytest.mark.parametrize(
    "text, message",
    [
        ("schedulers:\n  fast:\n    base: stepl\n", ":3: scheduler 'fast': base must be a plugin's scheduler: "
         "unknown scheduler 'stepl'; did you mean 'steplr'?"),
        ("schedulers:\n  fast:\n    base: steplr\n    interval: batch\n",
         ":3: scheduler 'fast': interval must be 'epoch' or 'step', got 'batch'"),
        ("schedulers:\n  fast:\n    base: steplr\n    every: 2\n", ":3: unknown key(s) ['every'] in scheduler 'fast'"),
        ("schedulers:\n  fast:\n    base: steplr\n    hparams: [1, 2]\n",
         ":3: hparams of scheduler 'fast' must be a mapping"),
        ("schedulers:\n  Fast:\n    base: steplr\n", ":3: invalid scheduler name 'Fast'"),
        ("schedulers:\n  cosine:\n    base: cosineannealinglr\n", "scheduler 'cosine' is registered twice"),
        ("schedulers:\n  twice:\n    base: cosine\n", "base must be a plugin's scheduler"),
        ("schedulers: [cosine]\n", ":1: 'schedulers' must be a mapping of name -> preset"),
        ("schedules: {}\n", ":1: unknown section(s) ['schedules']; expected 'models', 'optimizers', "),
    ],
)  # fmt: skip
def test_bad_scheduler_presets_name_the_line(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(UsageError) as caught:
        get_registry([path])
    assert message in str(caught.value)


def test_a_preset_setting_a_parameter_its_base_does_not_take_is_refused_when_built(tmp_path):
    path = write(tmp_path, "schedulers:\n  odd:\n    base: cosineannealinglr\n    hparams: {eta_mn: 0.1}\n")
    with pytest.raises(UsageError) as caught:
        build_scheduler(get_registry([path]), "odd", sgd(), opts={}, interval=None, epochs=2, steps_per_epoch=2)
    assert str(caught.value).startswith(f"scheduler 'odd' ({path}:3) sets 'eta_mn', which its factory does not take")
