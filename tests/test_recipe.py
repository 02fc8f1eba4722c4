"""zoo/recipe.py: the --augment spec syntax, a scheduler's hyper-parameters (given, converted,
filled in by the run), the errors a user can act on, and zoo show / zoo list for both kinds."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import assert_user_error
from zoo.errors import UnknownNameError, UsageError
from zoo.recipe import Schedule, build_scheduler, parse_spec, run_filled, scheduler_params


@pytest.fixture
def registry(builtin_registry):
    return builtin_registry


def sgd(lr: float = 0.1, **kwargs) -> torch.optim.SGD:
    return torch.optim.SGD([torch.nn.Parameter(torch.ones(2))], lr=lr, **kwargs)


def build(
    registry, name: str, *, opts=None, interval=None, epochs: int = 3, steps_per_epoch: int = 4, **kw
) -> Schedule:
    optimizer = kw.pop("optimizer", None) or sgd()
    return build_scheduler(
        registry, name, optimizer, opts=opts or {}, interval=interval, epochs=epochs, steps_per_epoch=steps_per_epoch
    )


# -- NAME[:KEY=VALUE,...] ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("flip", ("flip", {})),
        ("crop:padding=4", ("crop", {"padding": "4"})),
        (" cutout : size = 8 , p=0.5 ", ("cutout", {"size": "8", "p": "0.5"})),
        ("multi:milestones=30,60,gamma=0.1", ("multi", {"milestones": "30,60", "gamma": "0.1"})),  # commas in values
        ("x:warmup-epochs=2", ("x", {"warmup_epochs": "2"})),
    ],
)
def test_parse_spec(text, expected):
    assert parse_spec(text) == expected


@pytest.mark.parametrize(
    "text, why",
    [
        ("", "empty"),
        (":padding=4", "no name before ':'"),
        ("crop:", "nothing after ':'"),
        ("crop:padding", "'padding' is not KEY=VALUE"),
        ("crop:=4", "'=4' is not KEY=VALUE"),
        ("crop:padding=", "'padding=' is not KEY=VALUE"),
        ("crop:padding=4,", "a ',' with no KEY=VALUE after it"),
        ("crop:padding=4,padding=2", "'padding' is given twice"),
        ("crop padding=4", "'crop padding=4' is not a name"),
        ("crop:2 pad=4", "'2 pad=4' is not KEY=VALUE"),
    ],
)
def test_bad_spec_syntax_names_the_text(text, why):
    with pytest.raises(UsageError) as caught:
        parse_spec(text)
    assert str(caught.value) == (
        f"--augment '{text}': {why}; expected NAME[:KEY=VALUE,...] (e.g. --augment crop:padding=4)"
    )


# -- a scheduler's hyper-parameters ---------------------------------------------------------------------


def test_opts_are_converted_to_the_signature_types(registry):
    schedule = build(registry, "multisteplr", opts={"milestones": "1,2", "gamma": "0.5"})
    assert schedule.hparams == {"milestones": [1, 2], "gamma": 0.5}
    schedule = build(registry, "reducelronplateau", opts={"mode": "max", "min_lr": "1e-5", "patience": "2"})
    assert schedule.hparams == {"mode": "max", "min_lr": 1e-5, "patience": 2} and schedule.needs_metric
    schedule = build(registry, "cosine", opts={"eta_min": "0.001"})
    assert schedule.hparams == {"eta_min": 0.001, "T_max": 3}  # the user's value over the preset's


@pytest.mark.parametrize(
    "name, interval, filled",
    [
        ("cosine", None, {"T_max": 3}),
        ("cosine", "step", {"T_max": 12}),  # in optimizer steps
        ("linearlr", None, {"total_iters": 3}),
        ("polynomiallr", "step", {"total_iters": 12}),
        ("onecyclelr", None, {"max_lr": 0.1, "total_steps": 12, "epochs": 3, "steps_per_epoch": 4}),
        ("onecyclelr", "epoch", {"max_lr": 0.1, "total_steps": 3, "epochs": 3, "steps_per_epoch": 4}),
        ("warmupcosinelr", None, {"total_steps": 12, "epochs": 3}),
        ("steplr", None, {}),
    ],
)
def test_run_known_hyper_parameters_are_filled_in_the_intervals_unit(registry, name, interval, filled):
    opts = {"step_size": "2"} if name == "steplr" else {}
    schedule = build(registry, name, opts=opts, interval=interval)
    assert {k: schedule.hparams[k] for k in schedule.filled} == filled
    assert schedule.interval == (interval or registry.scheduler(name).interval)


def test_what_the_user_gives_is_never_overwritten(registry):
    schedule = build(registry, "cosine", opts={"T_max": "10"})
    assert schedule.hparams["T_max"] == 10 and schedule.filled == ()
    # a given epochs sets the length of the run-known ones: OneCycleLR over 2 epochs of 4 steps
    schedule = build(registry, "onecyclelr", opts={"epochs": "2"})
    assert (schedule.hparams["total_steps"], schedule.hparams["epochs"]) == (8, 2)
    assert schedule.scheduler.total_steps == 8


def test_max_lr_follows_each_param_group(registry):
    weights = [torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.ones(2))]
    optimizer = torch.optim.SGD([{"params": [weights[0]], "lr": 0.1}, {"params": [weights[1]], "lr": 0.01}])
    schedule = build(registry, "onecycle", optimizer=optimizer)
    assert schedule.hparams["max_lr"] == [0.1, 0.01]


def test_hparams_are_plain_values(registry):
    schedule = build(registry, "multisteplr", opts={"milestones": "1,2"})
    assert json.loads(json.dumps(schedule.as_json())) == {
        "name": "multisteplr",
        "interval": "epoch",
        "hparams": {"milestones": [1, 2]},
    }


def test_run_filled_describes_what_show_prints(registry):
    params, _ = scheduler_params(registry.scheduler_factory("onecyclelr"))
    assert "last_epoch" not in {p.name for p in params}
    filled = run_filled(params, "step")
    assert set(filled) == {"max_lr", "total_steps", "epochs", "steps_per_epoch"}
    assert filled["total_steps"] == "the run's length in optimizer steps (epochs x steps per epoch)"
    assert run_filled(params, "epoch")["total_steps"] == "the run's length in epochs"
    params, _ = scheduler_params(registry.scheduler_factory("cycliclr"))
    assert "max_lr" in run_filled(params, "step")  # required there too


# -- bad input -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, opts, interval, message",
    [
        ("cosine", {"eta_mn": "0"}, None,
         "scheduler 'cosine' has no parameter 'eta_mn'; did you mean 'eta_min'? "
         "valid: T_max, eta_min (zoo show cosine)"),
        ("cosine", {"eta_min": "low"}, None, "scheduler 'cosine': eta_min must be a number, got 'low'"),
        ("cosine", {}, "batch", "--sched-interval: interval must be 'epoch' or 'step', got 'batch'"),
        ("cosine", {"last_epoch": "3"}, None, "scheduler 'cosine': last_epoch is the run's"),
        ("steplr", {}, None, "scheduler 'steplr' needs step_size: pass --sched-opt step_size=VALUE"),
        ("multisteplr", {"milestones": "1.5,3"}, None,
         "scheduler 'multisteplr': milestones must be comma-separated integers (e.g. 30,60,90), got '1.5,3'"),
        ("reducelronplateau", {"mode": "up"}, None, "scheduler 'reducelronplateau': mode must be one of min, max"),
        ("cycliclr", {"base_lr": "0.01", "scale_fn": "x"}, None, "scale_fn takes a Python callable"),
        ("exponentiallr", {"gamma": "-1"}, None, None),  # torch accepts it: no error of ours
        ("onecycle", {"pct_start": "1.5"}, None,
         "scheduler 'onecycle' (registry.yaml:"),  # torch's own check, named with the preset
    ],
)  # fmt: skip
def test_bad_input_is_one_usage_error_naming_the_scheduler(registry, name, opts, interval, message):
    if message is None:
        build(registry, name, opts=opts, interval=interval)
        return
    with pytest.raises(UsageError) as caught:
        build(registry, name, opts=opts, interval=interval)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_torchs_own_error_is_wrapped_with_what_to_do(registry):
    with pytest.raises(UsageError) as caught:
        build(registry, "onecycle", opts={"pct_start": "1.5"})
    text = str(caught.value)
    assert "cannot be built with" in text and "pct_start=1.5" in text and "ValueError" in text
    assert text.endswith("(zoo show onecycle; change them with --sched-opt KEY=VALUE)")


def test_unknown_scheduler_suggests_the_closest(registry):
    with pytest.raises(UnknownNameError) as caught:
        build(registry, "warmup-cosin")
    assert str(caught.value) == "unknown scheduler 'warmup-cosin'; did you mean 'warmup-cosine'? (zoo list schedulers)"


def test_a_factory_returning_no_scheduler_is_refused(monkeypatch, plugin_dist):
    source = """
    from zoo import hookimpl

    @hookimpl
    def register_schedulers(register):
        register("nothing", lambda optimizer: None)
    """
    monkeypatch.syspath_prepend(str(plugin_dist("nothing", source)))
    from zoo.registry import get_registry

    with pytest.raises(UsageError, match="its factory returned NoneType, not a torch.optim.lr_scheduler.LRScheduler"):
        build(get_registry(), "nothing")


# -- the command line ------------------------------------------------------------------------------------


def test_show_a_scheduler(zoo_fork):
    result = zoo_fork("show", "warmup-cosine", "--json")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert (info["kind"], info["base"], info["interval"], info["defaults"]) == (
        "scheduler",
        "warmupcosinelr",
        "step",
        {"warmup_epochs": 1},
    )
    assert set(info["filled_by_run"]) == {"total_steps", "epochs"}
    params = {p["name"]: p for p in info["parameters"]}
    assert params["warmup_epochs"]["zoo_default"] == 1 and "filled_by_run" not in params["warmup_epochs"]
    assert params["total_steps"]["required"] and "optimizer steps" in params["total_steps"]["filled_by_run"]
    text = zoo_fork("show", "cosine").stdout
    assert "interval: epoch" in text and "FILLED BY THE RUN" in text and "the run's length in epochs" in text
    assert "--sched cosine" in text


def test_show_an_augmentation(zoo_fork):
    info = json.loads(zoo_fork("show", "cutout", "--json").stdout)
    assert info["kind"] == "augmentation" and info["plugin"] == "augment"
    assert info["parameters"] == [{"name": "size", "type": "int", "default": 8, "required": False}]
    text = zoo_fork("show", "flip").stdout
    assert "p" in text and "0.5" in text and "--augment flip" in text


def test_list_both_kinds(zoo_fork):
    rows = json.loads(zoo_fork("list", "schedulers", "--json").stdout)
    assert {r["kind"] for r in rows} == {"scheduler"} and "warmup-cosine" in {r["name"] for r in rows}
    rows = json.loads(zoo_fork("list", "augmentations", "--json").stdout)
    assert [r["name"] for r in rows] == ["crop", "cutout", "flip"]
    rows = json.loads(zoo_fork("list", "*cos*", "--json").stdout)
    assert {(r["kind"], r["name"]) for r in rows} >= {("scheduler", "cosine"), ("scheduler", "cosineannealinglr")}


def test_unknown_kind_lists_every_kind(zoo_fork):
    result = zoo_fork("list", "schedulerz", "x")
    assert_user_error(result, 2, "expected models, optimizers, datasets, schedulers, augmentations or recipes")
