"""``zoo sweep`` without training: VALUES, the grid, bad input, the report, claiming trials, and
Optuna staying optional. The sweeps that train are in test_sweep_runs.py."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from zoo.cli import build_parser, main
from zoo.errors import UsageError
from zoo.plot import expand_runs, plot_runs
from zoo.runs import list_runs
from zoo.sweep import SweepPlan, device_slots, plan_from_args, run_flags, threads_per_trial, trial_argv
from zoo.sweep_report import configurations, summary_table, sweep_object, trial_line
from zoo.sweep_space import Choices, Range, Space, parse_opt_values, parse_values
from zoo.sweep_study import Claimed, Study


def test_a_comma_list_is_grid_points_in_order_and_once():
    assert parse_values("0.1, 0.01,0.1", "--lr") == Choices((0.1, 0.01))
    assert parse_values("0,0.9", "--opt momentum=") == Choices((0, 0.9))
    assert parse_values("true,false", "--opt nesterov=") == Choices(("true", "false"))


@pytest.mark.parametrize(
    "text, expected",
    [
        ("1e-4..1e-1", Range(1e-4, 1e-1, log=True, integer=False)),  # positive, three decades: log
        ("0.1..0.5", Range(0.1, 0.5, log=False, integer=False)),  # less than a decade: uniform
        ("lin:1e-4..1e-1", Range(1e-4, 1e-1, log=False, integer=False)),
        ("log:0.1..0.5", Range(0.1, 0.5, log=True, integer=False)),
        ("0..0.9", Range(0.0, 0.9, log=False, integer=False)),
        ("1..100", Range(1, 100, log=True, integer=True)),
    ],
)
def test_a_range_is_sampled_log_uniform_when_it_spans_a_decade(text, expected):
    assert parse_values(text, "--opt x=") == expected


@pytest.mark.parametrize(
    "text, needle",
    [
        ("", "expected a comma list"),
        ("0.1,,0.2", "expected a comma list"),
        ("0.1..", "is not a number"),
        ("abc..1", "is not a number"),
        ("0.5..0.1", "from low to high"),
        ("log:0..1", "positive ends"),
        ("log:0.1,0.2", "prefix a range"),
    ],
)
def test_malformed_values_name_the_flag_and_the_expected_form(text, needle):
    with pytest.raises(UsageError, match=needle) as info:
        parse_values(text, "--opt x=")
    assert "--opt x=" in str(info.value)


def test_learning_rates_must_be_positive():
    with pytest.raises(UsageError, match="expected positive"):
        parse_values("0.1,0", "--lr", positive=True)
    with pytest.raises(UsageError, match="expected positive"):
        parse_values("lin:0..0.1", "--lr", positive=True)


def test_opt_values_refuse_what_the_sweep_sets_itself():
    assert parse_opt_values(["momentum=0,0.9", "weight_decay=1e-5..1e-3"])["momentum"] == Choices((0, 0.9))
    for spec, needle in (("lr=0.1", "--lr VALUES"), ("seed=1", "sweep's own"), ("momentum", "KEY=VALUES")):
        with pytest.raises(UsageError, match=needle):
            parse_opt_values([spec])
    with pytest.raises(UsageError, match="given twice"):
        parse_opt_values(["momentum=0", "momentum=0.9"])


def test_the_grid_is_the_product_with_the_first_dimension_slowest():
    space = Space({"optimizer": Choices(("sgd", "adam")), "lr": Choices((0.1, 0.01))})
    assert space.is_grid and space.size() == 4
    assert [tuple(c.values()) for c in space.grid()] == [("sgd", 0.1), ("sgd", 0.01), ("adam", 0.1), ("adam", 0.01)]
    assert not Space({"lr": Range(1e-4, 1e-1, True, False)}).is_grid


def test_each_slot_gets_its_own_gpus_and_a_share_of_the_cores():
    assert device_slots([], 3) == [None, None, None]
    assert device_slots(["0", "1"], 2) == ["0", "1"]
    assert device_slots(["0", "1", "2", "3"], 2, per_trial=2) == ["0,1", "2,3"]
    assert device_slots(["0"], 2) == ["0", "0"]  # more slots than GPUs: they share
    assert threads_per_trial(4, cores=16) == 4 and threads_per_trial(3, cores=2) == 1


def parse(*argv: str):
    return build_parser().parse_args(["sweep", *argv])


def test_every_zoo_run_option_goes_to_each_trial_and_the_sweep_options_do_not():
    args = parse("tudui", "sgd,adam", "--lr", "0.1,0.01", "--seeds", "2", "--data", "digits", "--epochs", "3",
                 "--augment", "flip", "--amp", "--sched-opt", "gamma=0.5", "--out", "s")  # fmt: skip
    flags = run_flags(args)
    assert flags[flags.index("--epochs") + 1] == "3" and flags[flags.index("--data") + 1] == "digits"
    assert "--amp" in flags and flags[flags.index("--augment") + 1] == "flip"
    assert flags[flags.index("--sched-opt") + 1] == "gamma=0.5"
    assert not {"--lr", "--seeds", "--out", "--json", "--quiet", "--resume", "--parallel"} & set(flags)


def test_a_trial_is_a_zoo_run_command_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    plan = plan_from_args(parse("tudui", "sgd", "--lr", "0.1", "--opt", "momentum=0.9", "--sched", "cosine,none",
                                "--data", "digits", "--epochs", "2"))  # fmt: skip
    assert plan.sampler == "grid" and plan.total == 2 and plan.study == plan.sweep_dir.name
    assert not plan.sweep_dir.exists()  # nothing is created before the sweep runs
    claimed = Claimed(3, 4, {"optimizer": "sgd", "lr": 0.1, "momentum": 0.9, "sched": "cosine"}, 1, resumed=False)
    argv = trial_argv(plan, claimed, Path("s/trial-0003"), resume=False)
    assert argv[:3] == ["run", "tudui", "sgd"]
    assert " ".join(argv[3:]).startswith("--lr 0.1 --opt momentum=0.9 --sched cosine --seed 1 --out s/trial-0003")
    assert "--resume" in trial_argv(plan, claimed, Path("s/trial-0003"), resume=True)


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["sgdd"], "unknown optimizer 'sgdd'"),
        (["zzz*"], "no optimizer matches 'zzz*'"),
        (["sgd", "--lr", "0.1.."], "is not a number"),
        (["sgd", "--lr", "0.1", "--trials", "3"], "--trials is for --sampler random or tpe"),
        (["sgd", "--lr", "1e-4..1e-1"], "--sampler tpe draws configurations"),
        (["sgd", "--lr", "1e-4..1e-1", "--sampler", "grid"], "lr is a range"),
        (["sgd", "--sched", "cosinee"], "unknown scheduler 'cosinee'"),
        (["sgd", "--storage", "sqlite:////nonexistent-dir/x.db"], "cannot open the Optuna storage"),
        (["sgd", "--storage", "study.txt"], "expected an Optuna RDB URL"),
        (["sgd", "--resume"], "--resume needs --out"),
        (["sgd", "--opt", "lr=0.1"], "--lr VALUES"),
    ],
)
def test_bad_sweep_input_is_one_line_exit_2_and_creates_nothing(argv, needle, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["sweep", "tudui", *argv, "--data", "digits"]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line]
    assert len(errors) == 1 and errors[0].startswith("zoo: error:") and needle in errors[0], errors
    assert list(tmp_path.iterdir()) == []


def test_an_existing_sweep_directory_needs_resume(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "s").mkdir()
    assert main(["sweep", "tudui", "sgd", "--out", "s"]) == 2
    assert "pass --resume to continue it" in capsys.readouterr().err


def test_without_optuna_zoo_sweep_says_how_to_install_it(monkeypatch, tmp_path, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(sys.modules, "optuna", None)  # import optuna -> ImportError
    assert main(["sweep", "tudui", "sgd", "--lr", "0.1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("zoo: error: zoo sweep needs Optuna") and "pip install 'tudui-zoo[sweep]'" in err


@pytest.mark.parametrize("command", [["list"], ["list", "optimizers"], ["plugins", "--all"], ["sweep", "--help"]])
def test_other_commands_never_import_optuna(command):
    code = (
        "import sys, io, contextlib\n"
        "from zoo.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    try:\n"
        f"        assert main({command!r}) == 0\n"
        "    except SystemExit as exc:\n"
        "        assert exc.code == 0\n"
        "heavy = sorted(m for m in ('optuna', 'torch', 'sqlalchemy') if m in sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def rows() -> list[dict]:
    def row(number, params, state, value, seed=0):
        return {"number": number, "state": state, "params": params, "seed": seed, "run_dir": f"s/trial-{number:04d}",
                "value": value, "epochs": 3 if state == "complete" else 1, "seconds": 10.0, "error": None}  # fmt: skip

    sgd, adam = {"optimizer": "sgd", "lr": 0.01}, {"optimizer": "adam", "lr": 0.001}
    return [row(0, sgd, "complete", 0.8), row(1, sgd, "complete", 0.6, seed=1), row(2, adam, "complete", 0.9),
            row(3, adam, "pruned", 0.2, seed=1), row(4, {"optimizer": "adam", "lr": 1.0}, "failed", None)]  # fmt: skip


def test_the_summary_has_one_row_per_configuration_best_first():
    groups = configurations(rows(), "best_val_accuracy")
    assert [g["params"]["optimizer"] for g in groups] == ["adam", "sgd", "adam"]
    assert groups[1]["mean"] == pytest.approx(0.7) and groups[1]["std"] == pytest.approx(0.1414, abs=1e-4)
    table = summary_table(rows(), "best_val_accuracy").splitlines()
    assert table[0] == "| optimizer | lr | seeds | best_val_accuracy (mean ± std) | epochs | time/trial | status |"
    assert table[2].startswith("| adam | 0.001 | 2 | 90.00% ± 0.00% | 1/3 |") and "1 complete, 1 pruned" in table[2]
    assert table[3].startswith("| sgd | 0.01 | 2 | 70.00% ± 14.14% | 3 |")
    assert table[4].startswith("| adam | 1 | 1 | - |") and table[4].endswith("1 failed |")
    losses = configurations(rows(), "val_loss")  # lower is better
    assert [g["mean"] for g in losses][:2] == [pytest.approx(0.7), 0.9]


def test_the_json_object_and_the_progress_line():
    result = sweep_object(Path("s"), "st", "best_val_accuracy", rows())
    assert (result["direction"], result["best"]["number"], len(result["trials"])) == ("maximize", 2, 5)
    assert "error" not in result["trials"][0]
    line = trial_line(rows()[1], "best_val_accuracy", result["best"], 2, 5)
    assert (
        line
        == "[2/5] trial 1  optimizer=sgd lr=0.01 seed=1  complete  best_val_accuracy 60.00% | best 90.00% (trial 2)"
    )


@pytest.mark.parametrize("storage", ["sqlite", "journal"])
def test_two_handles_on_one_study_claim_each_trial_once(tmp_path, storage):
    """Two processes' view of one study (two storage connections): the grid is enqueued once, by
    the creator, and each trial is claimed by exactly one of them."""
    url = f"sqlite:///{tmp_path / 'study.db'}" if storage == "sqlite" else f"journal:{tmp_path / 'study.log'}"
    space = Space({"optimizer": Choices(("sgd", "adam")), "lr": Choices((0.1, 0.01))})
    options = dict(direction="maximize", sampler="grid", prune="none", space=space, seeds=[0], target=None,
                   spec={"space": space.as_json()}, resume=False)  # fmt: skip
    first, second = Study.open(url, "st", **options), Study.open(url, "st", **options)
    claimed = []
    while True:
        got = [c for c in (first.claim(), second.claim()) if c is not None]
        if not got:
            break
        claimed += got
    assert len(claimed) == 4 and len({c.number for c in claimed}) == 4
    assert {(c.params["optimizer"], c.params["lr"], c.seed) for c in claimed} == {
        (o, lr, 0) for o in ("sgd", "adam") for lr in (0.1, 0.01)
    }
    with pytest.raises(UsageError, match="is another sweep"):
        Study.open(url, "st", **{**options, "spec": {"space": "other"}})


def test_a_drawn_configuration_is_repeated_over_the_seeds(tmp_path):
    space = Space({"optimizer": Choices(("sgd",)), "lr": Range(1e-4, 1e-1, log=True, integer=False)})
    study = Study.open(f"sqlite:///{tmp_path / 'study.db'}", "st", direction="maximize", sampler="random",
                       prune="none", space=space, seeds=[0, 1], target=4, spec={}, resume=False)  # fmt: skip
    claimed = [study.claim() for _ in range(5)]
    assert claimed[-1] is None
    assert [c.seed for c in claimed[:4]] == [0, 1, 0, 1]
    assert claimed[0].params == claimed[1].params != claimed[2].params == claimed[3].params
    assert 1e-4 <= claimed[0].params["lr"] <= 1e-1


def test_plan_counts_trials_as_configurations_times_seeds(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    plan: SweepPlan = plan_from_args(parse("tudui", "sgd,adam", "--lr", "0.01,0.001", "--seeds", "2"))
    assert (plan.total, plan.seeds, plan.sampler) == (8, [0, 1], "grid")
    drawn = plan_from_args(parse("tudui", "adam*", "--lr", "1e-4..1e-1", "--trials", "5", "--seed", "3"))
    assert (drawn.total, drawn.seeds, drawn.sampler) == (5, [3], "tpe")


def fake_sweep(root: Path) -> None:
    """A sweep directory as zoo sweep leaves it: trial run directories and sweep.json."""
    trials = []
    for number, (lr, seed, state) in enumerate([(0.1, 0, "complete"), (0.1, 1, "complete"), (0.01, 0, "pruned")]):
        run_dir = root / f"trial-{number:04d}"
        run_dir.mkdir(parents=True)
        (run_dir / "config.yaml").write_text(f"model: tudui\noptimizer: sgd\ndataset: digits\nepochs: 2\nlr: {lr}\n")
        epochs = 2 if state == "complete" else 1
        lines = [
            {"epoch": e, "train_loss": 1.0 / e, "val_loss": 1.0, "val_accuracy": 0.3 * e + lr}
            for e in range(1, epochs + 1)
        ]
        (run_dir / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
        trials.append({"number": number, "state": state, "params": {"optimizer": "sgd", "lr": lr}, "seed": seed,
                       "run_dir": str(run_dir), "value": 0.5, "epochs": epochs, "seconds": 1.0})  # fmt: skip
    (root / "logs").mkdir()
    (root / "sweep.json").write_text(json.dumps(sweep_object(root, "st", "best_val_accuracy", trials)))


def test_zoo_runs_on_a_sweep_directory_shows_each_trial(tmp_path, capsys):
    fake_sweep(tmp_path / "s")
    rows = list_runs(tmp_path / "s")
    assert [(Path(r["run_dir"]).name, r["sweep"]["state"], r["sweep"]["seed"]) for r in rows] == [
        ("trial-0000", "complete", 0), ("trial-0001", "complete", 1), ("trial-0002", "pruned", 0)
    ]  # fmt: skip
    assert main(["runs", str(tmp_path / "s")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[-1] == "TRIAL" and out[3].endswith("pruned: optimizer=sgd lr=0.01 seed=0")


def test_zoo_plot_on_a_sweep_directory_draws_its_trials_by_configuration(tmp_path):
    fake_sweep(tmp_path / "s")
    assert [(Path(d).name, c) for d, c in expand_runs([tmp_path / "s"])] == [
        ("trial-0000", "optimizer=sgd lr=0.1"), ("trial-0001", "optimizer=sgd lr=0.1"),
        ("trial-0002", "optimizer=sgd lr=0.01"),
    ]  # fmt: skip
    assert plot_runs([tmp_path / "s"]) == tmp_path / "s" / "curves.png"
    assert (tmp_path / "s" / "curves.png").stat().st_size > 0
