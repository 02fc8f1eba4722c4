"""zoo.runner: real training steps on tiny data, through the Python API (RunConfig, run, validate).

Everything trains Tudui on the synthetic ``fake`` dataset cut to a few batches, so a run takes
well under a second after the first.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

import datafiles
import zoo.runner as runner
from zoo import hookimpl
from zoo.data import TensorImageDataset
from zoo.devices import resolve_device
from zoo.errors import RunError, UsageError
from zoo.plugins import get_plugin_host
from zoo.runner import Interrupted, RunConfig, run, train_step, validate
from zoo_tudui.model import Tudui

SUMMARY_KEYS = {
    "run_dir",
    "model",
    "optimizer",
    "dataset",
    "device",
    "epochs",
    "train_loss",
    "val_loss",
    "val_accuracy",
    "best_val_accuracy",
    "last_checkpoint",
    "best_checkpoint",
    "images_per_second",
}
METRIC_KEYS = {"epoch", "train_loss", "val_loss", "val_accuracy", "seconds", "lr"}


def tiny(out: Path, **overrides) -> RunConfig:
    """Tudui + Adam on 64 fake images in batches of 16 (4 steps an epoch), 32 to validate."""
    fields = dict(
        model="tudui",
        optimizer="adam",
        data="fake",
        epochs=1,
        batch_size=16,
        limit_train=64,
        limit_val=32,
        out=str(out),
        quiet=True,
        device="cpu",
    )
    fields.update(overrides)
    return RunConfig(**fields)


def weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["model"]


def assert_bitwise_equal(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"tensors differ: {different}"


def metric_lines(run_dir: Path) -> list[dict]:
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in line.items() if k != "seconds"} for line in lines]


# -- a run and what it leaves -----------------------------------------------------------------


def test_run_writes_the_run_directory_and_returns_the_summary(tmp_path):
    out = tmp_path / "run"
    summary = run(tiny(out, epochs=2, lr=0.002))
    assert set(summary) == SUMMARY_KEYS
    assert summary["run_dir"] == str(out) and summary["epochs"] == 2 and summary["device"] == "cpu"
    assert summary["model"] == "tudui" and summary["optimizer"] == "adam" and summary["dataset"] == "fake"
    assert summary["last_checkpoint"] == str(out / "last.pt") and summary["best_checkpoint"] == str(out / "best.pt")
    assert summary["images_per_second"] > 0
    assert sorted(p.name for p in out.iterdir()) == [
        "best.pt",
        "config.yaml",
        "last.pt",
        "metrics.jsonl",
        "status.json",
    ]
    status = json.loads((out / "status.json").read_text())
    assert (status["status"], status["epochs_done"], status["error"]) == ("finished", 2, None)

    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [line["epoch"] for line in lines] == [1, 2]
    assert all(set(line) == METRIC_KEYS for line in lines)
    assert lines[-1]["val_accuracy"] == summary["val_accuracy"]
    assert summary["best_val_accuracy"] == max(line["val_accuracy"] for line in lines)
    assert lines[0]["lr"] == pytest.approx(0.002)

    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["model"] == "tudui" and config["optimizer"] == "adam" and config["dataset"] == "fake"
    assert config["seed"] == 0 and config["hparams"] == {"lr": 0.002} and config["epochs"] == 2


def test_epoch_lines_go_to_the_stream_and_quiet_silences_them(tmp_path, capsys):
    import io

    stream = io.StringIO()
    run(tiny(tmp_path / "a", epochs=2, quiet=False), progress_stream=stream)
    text = stream.getvalue()
    assert "epoch 1/2" in text and "epoch 2/2" in text and "val_accuracy" in text
    assert "\r" not in text  # no progress bar when the stream is not a terminal
    stream = io.StringIO()
    run(tiny(tmp_path / "b"), progress_stream=stream)
    assert stream.getvalue() == ""
    assert capsys.readouterr().out == ""  # stdout is reserved for --json


def test_same_seed_gives_bitwise_equal_weights(tmp_path):
    run(tiny(tmp_path / "a", epochs=2))
    run(tiny(tmp_path / "b", epochs=2))
    run(tiny(tmp_path / "c", epochs=2, seed=1))
    assert_bitwise_equal(weights(tmp_path / "a" / "last.pt"), weights(tmp_path / "b" / "last.pt"))
    a, c = weights(tmp_path / "a" / "last.pt"), weights(tmp_path / "c" / "last.pt")
    assert any(not torch.equal(a[k], c[k]) for k in a)


def test_two_epochs_then_resume_to_four_equals_four_straight(tmp_path):
    run(tiny(tmp_path / "straight", epochs=4))
    run(tiny(tmp_path / "resumed", epochs=2))
    summary = run(tiny(tmp_path / "resumed", epochs=4, resume=True))
    assert summary["epochs"] == 4
    straight = torch.load(tmp_path / "straight" / "last.pt", weights_only=True)
    resumed = torch.load(tmp_path / "resumed" / "last.pt", weights_only=True)
    assert_bitwise_equal(straight["model"], resumed["model"])
    assert_bitwise_equal(straight["optimizer"]["state"][0], resumed["optimizer"]["state"][0])
    assert torch.equal(straight["rng"]["shuffle"], resumed["rng"]["shuffle"])
    assert metric_lines(tmp_path / "straight") == metric_lines(tmp_path / "resumed")


def test_resume_when_all_epochs_are_done_trains_nothing(tmp_path):
    run(tiny(tmp_path / "r", epochs=2))
    before = (tmp_path / "r" / "last.pt").read_bytes()
    summary = run(tiny(tmp_path / "r", epochs=2, resume=True))
    assert summary["epochs"] == 2 and (tmp_path / "r" / "last.pt").read_bytes() == before
    with pytest.raises(UsageError, match="already trained 2 epochs"):
        run(tiny(tmp_path / "r", epochs=1, resume=True))


def _signal_at(monkeypatch, calls: int, *signums: int) -> None:
    """Send ``signums`` to this process during the ``calls``-th training step."""
    real = runner.train_step
    count = [0]

    def step(*args, **kwargs):
        count[0] += 1
        if count[0] == calls:
            for signum in signums:
                os.kill(os.getpid(), signum)
        return real(*args, **kwargs)

    monkeypatch.setattr(runner, "train_step", step)


@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_mid_epoch_checkpoints_and_resume_continues_bitwise(tmp_path, monkeypatch, signum, code):
    run(tiny(tmp_path / "straight", epochs=3))
    _signal_at(monkeypatch, 6, signum)  # epoch 2, step 2 of 4
    with pytest.raises(Interrupted) as info:
        run(tiny(tmp_path / "stopped", epochs=3))
    assert info.value.exit_code == code
    assert "epoch 2, step 2/4" in str(info.value) and "--resume" in str(info.value)
    ckpt = torch.load(tmp_path / "stopped" / "last.pt", weights_only=True)
    assert ckpt["epoch"] == 1 and ckpt["partial"]["epoch"] == 2 and ckpt["partial"]["step"] == 2
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers restored

    monkeypatch.undo()
    run(tiny(tmp_path / "stopped", epochs=3, resume=True))
    assert_bitwise_equal(weights(tmp_path / "straight" / "last.pt"), weights(tmp_path / "stopped" / "last.pt"))
    assert metric_lines(tmp_path / "straight") == metric_lines(tmp_path / "stopped")


def _with_workers(tmp_path: Path, out: str, **kw) -> RunConfig:
    """Tudui on an image folder of 12 images through the DataLoader with 2 workers: 3 steps an epoch."""
    if not (tmp_path / "images").exists():
        datafiles.write_image_folder(tmp_path / "images", per_class=4)
    options = dict(data="imagefolder", data_dir=str(tmp_path / "images"), batch_size=4, epochs=2, workers=2, quiet=True)
    return RunConfig("tudui", "sgd", out=str(tmp_path / out), **{**options, **kw})


def test_a_stopped_run_ends_its_dataloader_workers_though_its_traceback_holds_the_epoch(tmp_path, monkeypatch):
    config = _with_workers(tmp_path, "r")
    before = set(multiprocessing.active_children())
    monkeypatch.setenv("ZOO_TEST_KILL_WORKER", "0:2:SIGTERM")
    with pytest.raises(Interrupted) as info:  # info keeps the traceback, and with it the epoch's iterator
        run(config)
    assert info.value.exit_code == 143
    assert set(multiprocessing.active_children()) <= before


def _kill_workers_at(monkeypatch, calls: int, *, sigterm_too: bool) -> None:
    """During the ``calls``-th training step, SIGTERM to this process (as a signal to the whole
    process group sends it) when ``sigterm_too``, then SIGKILL to its DataLoader workers, waited
    for until they are dead but not reaped: the DataLoader's SIGCHLD handler then raises, in the
    step, as it does when a group's SIGTERM ends the workers."""
    real, count = runner.train_step, [0]

    def step(*args, **kwargs):
        count[0] += 1
        if count[0] == calls:
            if sigterm_too:
                os.kill(os.getpid(), signal.SIGTERM)
            for worker in multiprocessing.active_children():
                os.kill(worker.pid, signal.SIGKILL)
                os.waitid(os.P_PID, worker.pid, os.WEXITED | os.WNOWAIT)
        return real(*args, **kwargs)

    monkeypatch.setattr(runner, "train_step", step)


def test_a_sigterm_to_the_whole_group_stops_the_run_resumably_though_it_ends_the_workers(tmp_path, monkeypatch):
    run(_with_workers(tmp_path, "straight"))
    _kill_workers_at(monkeypatch, 5, sigterm_too=True)  # epoch 2, step 2
    with pytest.raises(Interrupted) as info:
        run(_with_workers(tmp_path, "stopped"))
    assert info.value.exit_code == 143
    assert "ended the DataLoader's workers" in str(info.value) and "--resume" in str(info.value)
    assert json.loads((tmp_path / "stopped" / "status.json").read_text())["status"] == "interrupted"
    assert torch.load(tmp_path / "stopped" / "last.pt", weights_only=True)["epoch"] == 1  # epoch 2 was not saved
    monkeypatch.undo()
    run(_with_workers(tmp_path, "stopped", resume=True))
    assert_bitwise_equal(weights(tmp_path / "straight" / "last.pt"), weights(tmp_path / "stopped" / "last.pt"))


def test_workers_a_group_sigterm_killed_cannot_replace_the_stop_once_it_is_being_saved(tmp_path, monkeypatch):
    # The step ends before torch hears of the workers' deaths: its SIGCHLD handler is held back
    # from the kill until the stop's checkpoint is written, then run as Python would have run it.
    real_step, real_save, count, held = runner.train_step, runner.Job.save, [0], []

    def step(*args, **kwargs):
        count[0] += 1
        if count[0] == 5:  # epoch 2, step 2 of 3
            held.append(signal.signal(signal.SIGCHLD, lambda signum, frame: None))
            os.kill(os.getpid(), signal.SIGTERM)
            for worker in multiprocessing.active_children():
                os.kill(worker.pid, signal.SIGKILL)
                os.waitid(os.P_PID, worker.pid, os.WEXITED | os.WNOWAIT)
        return real_step(*args, **kwargs)

    def save(self, path, partial=None):
        if held:
            torch_handler = held.pop()
            signal.signal(signal.SIGCHLD, torch_handler)
            torch_handler(signal.SIGCHLD, None)
        return real_save(self, path, partial)

    monkeypatch.setattr(runner, "train_step", step)
    monkeypatch.setattr(runner.Job, "save", save)
    with pytest.raises(Interrupted) as info:
        run(_with_workers(tmp_path, "r", epochs=3))
    assert info.value.exit_code == 143 and "at epoch 2, step 2/3" in str(info.value), str(info.value)
    partial = torch.load(tmp_path / "r" / "last.pt", weights_only=True)["partial"]
    assert (partial["epoch"], partial["step"]) == (2, 2)


def test_a_worker_killed_alone_fails_the_run_naming_it_not_as_an_internal_error(tmp_path, monkeypatch):
    _kill_workers_at(monkeypatch, 5, sigterm_too=False)  # out of memory, say
    with pytest.raises(RunError) as info:
        run(_with_workers(tmp_path, "r"))
    message = str(info.value)
    assert message.startswith("DataLoader worker (pid") and "lower --workers" in message, message
    assert "last.pt holds the last checkpoint" in message
    assert json.loads((tmp_path / "r" / "status.json").read_text())["status"] == "failed"


def test_a_second_sigint_stops_at_once_leaving_the_previous_checkpoint(tmp_path, monkeypatch):
    out = tmp_path / "r"
    run(tiny(out, epochs=1))
    before = (out / "last.pt").read_bytes()
    _signal_at(monkeypatch, 2, signal.SIGINT, signal.SIGINT)
    with pytest.raises(Interrupted) as info:
        run(tiny(out, epochs=2, resume=True))
    assert info.value.exit_code == 130 and "second" in str(info.value)
    assert (out / "last.pt").read_bytes() == before
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


def test_an_inherited_ignored_sigint_stays_ignored(tmp_path, monkeypatch):
    # A shell starts background jobs (cmd &, nohup) with SIGINT ignored: Ctrl-C spares them.
    inherited = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        _signal_at(monkeypatch, 2, signal.SIGINT)
        summary = run(tiny(tmp_path / "r", epochs=1))
        assert summary["epochs"] == 1 and signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, inherited)


# -- refusing what would lose work ------------------------------------------------------------


def test_an_existing_out_is_never_overwritten(tmp_path):
    out = tmp_path / "r"
    run(tiny(out))
    listing = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(UsageError, match="already exists.*--resume"):
        run(tiny(out))
    assert {p.name: p.read_bytes() for p in out.iterdir()} == listing


def test_resume_of_a_missing_directory_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="nothing to resume"):
        run(tiny(tmp_path / "absent", resume=True))
    assert not (tmp_path / "absent").exists()


def test_resume_of_a_run_killed_before_its_first_checkpoint_starts_over(tmp_path):
    out = tmp_path / "r"
    out.mkdir()
    (out / "config.yaml").write_text("model: tudui\n")  # a half-made run directory
    (out / ".last.pt.abc123.tmp").write_bytes(b"PK\x03\x04 half a checkpoint")  # a write that never finished
    run(tiny(out, epochs=2, resume=True))
    run(tiny(tmp_path / "fresh", epochs=2))
    assert_bitwise_equal(weights(tmp_path / "fresh" / "last.pt"), weights(out / "last.pt"))
    assert not list(out.glob("*.tmp")) and not list(out.glob(".*.tmp"))


def test_resume_keeps_the_runs_hyper_parameters_unless_given_again(tmp_path):
    out = tmp_path / "r"
    run(tiny(out, optimizer="sgd", lr=0.05))
    run(tiny(out, optimizer="sgd", epochs=2, resume=True))  # no --lr: the run's 0.05, not sgd's default
    run(tiny(out, optimizer="sgd", epochs=3, resume=True, lr=0.02))
    assert [line["lr"] for line in metric_lines(out)] == [0.05, 0.05, 0.02]
    assert torch.load(out / "last.pt", weights_only=True)["spec"]["hparams"] == {"lr": 0.02}


def test_resume_refuses_a_different_run(tmp_path):
    run(tiny(tmp_path / "r"))
    with pytest.raises(UsageError, match="--batch-size 16"):
        run(tiny(tmp_path / "r", epochs=2, resume=True, batch_size=8))
    with pytest.raises(UsageError, match="was trained with MODEL tudui"):
        run(tiny(tmp_path / "r", epochs=2, resume=True, model="vgg16-replace-classifier"))


def test_a_nan_loss_stops_with_a_run_error_and_keeps_the_last_good_checkpoint(tmp_path):
    out = tmp_path / "r"
    run(tiny(out, optimizer="sgd"))
    before = {name: (out / name).read_bytes() for name in ("last.pt", "best.pt", "metrics.jsonl")}
    with pytest.raises(RunError) as info:
        run(tiny(out, optimizer="sgd", epochs=2, resume=True, lr=1e10))
    message = str(info.value)
    assert info.value.exit_code == 1
    assert "epoch 2, step" in message and "lower the learning rate" in message and "untouched" in message
    assert {name: (out / name).read_bytes() for name in before} == before
    ckpt = torch.load(out / "last.pt", weights_only=True)
    assert all(torch.isfinite(t).all() for t in ckpt["model"].values())


@pytest.mark.parametrize(
    "check_every, nan_at_call, where",
    [
        (3, 2, "epoch 1, step 2/4"),  # found by the check after step 3
        (2, 4, "epoch 1, step 4/4"),  # in the second window (steps 3-4)
        (3, 8, "epoch 2, step 4/4"),  # after the last window: by the check at the epoch's end
    ],
)
def test_the_nan_check_names_the_step_whichever_window_it_falls_in(
    tmp_path, monkeypatch, check_every, nan_at_call, where
):
    real, calls = runner.train_step, [0]

    def step(*args, **kwargs):
        calls[0] += 1
        loss = real(*args, **kwargs)
        return torch.full_like(loss, float("nan")) if calls[0] == nan_at_call else loss

    monkeypatch.setattr(runner, "train_step", step)
    monkeypatch.setattr(runner, "CHECK_EVERY", check_every)
    with pytest.raises(RunError, match=f"the loss became nan at {where}"):
        run(tiny(tmp_path / "r", epochs=2))


@pytest.mark.parametrize(
    "overrides, needle",
    [
        ({"epochs": 0}, "--epochs"),
        ({"batch_size": -1}, "--batch-size"),
        ({"limit_train": 0}, "--limit-train"),
        ({"lr": -0.1}, "--lr"),
        ({"nproc": 2}, "run\\(\\) trains in this process only"),  # workers come from zoo run --nproc / torchrun
        ({"device": "gpu"}, "unknown device 'gpu'"),
        ({"model": "tuduii"}, "did you mean 'tudui'"),
        ({"data": "fakee"}, "unknown dataset"),
        ({"opts": {"momentun": "0.9"}}, "no parameter 'momentun'"),
    ],
)
def test_bad_configs_are_refused_before_anything_is_written(tmp_path, overrides, needle):
    with pytest.raises(UsageError, match=needle):
        run(tiny(tmp_path / "r", **overrides))
    assert not (tmp_path / "r").exists()


def test_an_unavailable_device_names_what_is_available():
    if torch.cuda.device_count() > 7:
        pytest.skip("this machine has a cuda:7")
    with pytest.raises(UsageError, match=r"cuda:7.*available: cpu"):
        resolve_device("cuda:7")
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


# -- datasets of other shapes, plugins watching ----------------------------------------------


class _ShapesPlugin:
    """Datasets a model may or may not take: 1-channel 16x16 (widened and resized, through a
    DataLoader) and 4-channel (refused)."""

    @staticmethod
    @hookimpl
    def register_datasets(register):
        register("gray16", _gray16, num_classes=None, input_size=(1, 16, 16))
        register("rgba", _rgba, num_classes=10, input_size=(4, 32, 32))


class _PlainDataset(torch.utils.data.Dataset):
    classes = ["dark", "light"]

    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        label = i % 2
        return torch.full((1, 16, 16), float(label) - 0.5), label


def _gray16(train, root, download):
    return _PlainDataset(24 if train else 8)


def _rgba(train, root, download):
    return TensorImageDataset(
        torch.zeros(8, 4, 32, 32, dtype=torch.uint8), torch.zeros(8), mean=(0.5,) * 4, std=(0.5,) * 4
    )


def test_one_channel_data_through_a_dataloader_is_adapted_to_the_model(tmp_path):
    get_plugin_host(extra=[("shapes", _ShapesPlugin)])
    summary = run(tiny(tmp_path / "r", data="gray16", epochs=2, batch_size=8, limit_train=None, limit_val=None))
    ckpt = torch.load(tmp_path / "r" / "last.pt", weights_only=True)
    assert ckpt["spec"]["num_classes"] == 2 and ckpt["spec"]["classes"] == ["dark", "light"]
    assert ckpt["spec"]["data_input_size"] == [1, 16, 16] and ckpt["spec"]["input_size"] == [3, 32, 32]
    # The run's accuracy is that of its model on the images widened to 3 channels and resized to
    # 32x32 (each image is one value: -0.5 for "dark", 0.5 for "light").
    model = Tudui(2)
    model.load_state_dict(ckpt["model"])
    labels = torch.arange(8) % 2
    with torch.no_grad():
        predicted = model.eval()((labels.float() - 0.5).view(8, 1, 1, 1).expand(8, 3, 32, 32)).argmax(1)
    assert summary["val_accuracy"] == pytest.approx((predicted == labels).float().mean().item(), abs=1e-9)


def test_data_that_cannot_be_adapted_is_refused(tmp_path):
    get_plugin_host(extra=[("shapes", _ShapesPlugin)])
    with pytest.raises(UsageError, match="cannot train on dataset 'rgba'.*4 channel"):
        run(tiny(tmp_path / "r", data="rgba", limit_train=None, limit_val=None))


class _Recorder:
    """An observer plugin: every event hook, recording what it is given."""

    events: list = []

    @staticmethod
    @hookimpl
    def on_run_start(run):
        _Recorder.events.append(("start", run.start_epoch, type(run.model).__name__, run.run_dir.name))

    @staticmethod
    @hookimpl
    def on_epoch_end(run, epoch, metrics):
        _Recorder.events.append(("epoch", epoch, dict(metrics)))

    @staticmethod
    @hookimpl
    def on_checkpoint(run, path):
        _Recorder.events.append(("checkpoint", run.epoch, Path(path).name, Path(path).exists()))

    @staticmethod
    @hookimpl
    def on_run_end(run, metrics):
        _Recorder.events.append(("end", metrics["status"], metrics["epochs"]))


def _recorded(tmp_path: Path, **overrides) -> list:
    _Recorder.events = []
    get_plugin_host(extra=[("recorder", _Recorder)])
    try:
        run(tiny(tmp_path / "r", epochs=2, **overrides))
    except RunError:
        pass
    return _Recorder.events


def test_hook_on_run_start(tmp_path):
    events = _recorded(tmp_path)
    assert events[0] == ("start", 0, "Tudui", "r")
    assert [e[0] for e in events].count("start") == 1


def test_hook_on_epoch_end(tmp_path):
    epochs = [e for e in _recorded(tmp_path) if e[0] == "epoch"]
    assert [e[1] for e in epochs] == [1, 2]
    assert set(epochs[0][2]) == METRIC_KEYS
    assert [json.loads(line) for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()] == [
        e[2] for e in epochs
    ]


def test_hook_on_checkpoint(tmp_path):
    saved = [e[1:] for e in _recorded(tmp_path) if e[0] == "checkpoint"]
    # best.pt (when better) then last.pt, each already in place when the hook runs, and
    # run.epoch is the epoch the checkpoint holds (epochs completed), not the one before it
    assert saved[:2] == [(1, "best.pt", True), (1, "last.pt", True)]
    assert saved[-1] == (2, "last.pt", True)


def test_hook_on_run_end(tmp_path):
    assert _recorded(tmp_path)[-1] == ("end", "finished", 2)
    assert _recorded(tmp_path / "nan", optimizer="sgd", lr=1e10)[-1] == ("end", "failed", 0)


# -- base weights ----------------------------------------------------------------------------


class _StartState:
    state: dict = {}

    @staticmethod
    @hookimpl
    def on_run_start(run):
        _StartState.state = {k: v.clone() for k, v in run.model.state_dict().items()}


def test_weights_path_loads_a_method_2_state_dict_before_training(tmp_path):
    torch.manual_seed(123)
    path = tmp_path / "tudui.pth"
    torch.save(Tudui(10).state_dict(), path)  # the seed's method 2
    get_plugin_host(extra=[("start-state", _StartState)])
    run(tiny(tmp_path / "r", weights=str(path)))
    assert_bitwise_equal(torch.load(path, weights_only=True), _StartState.state)
    config = yaml.safe_load((tmp_path / "r" / "config.yaml").read_text())
    assert config["weights"] == str(path)


def test_weights_method_1_needs_trust(tmp_path, capsys):
    path = tmp_path / "tudui-full.pth"
    torch.save(Tudui(10), path)  # the seed's method 1: a pickled class
    with pytest.raises(UsageError, match=r"refused.*zoo_tudui\.model\.Tudui.*--trust"):
        run(tiny(tmp_path / "r", weights=str(path)))
    assert not (tmp_path / "r").exists()
    run(tiny(tmp_path / "r", weights=str(path), trust=True))
    assert "weights_only=False" in capsys.readouterr().err


def test_weights_of_another_model_name_the_first_mismatched_keys(tmp_path):
    path = tmp_path / "linear.pth"
    torch.save(nn.Sequential(nn.Linear(3, 2)).state_dict(), path)
    with pytest.raises(
        UsageError, match=r"does not fit base model 'tudui': missing keys model\.0\.weight.*unexpected keys 0\.weight"
    ):
        run(tiny(tmp_path / "r", weights=str(path)))
    wrong_classes = tmp_path / "tudui5.pth"
    torch.save(Tudui(5).state_dict(), wrong_classes)
    with pytest.raises(UsageError, match=r"shape mismatch model\.8\.weight: file \(5, 64\) vs model \(10, 64\)"):
        run(tiny(tmp_path / "r", weights=str(wrong_classes)))


def test_weights_imagenet_offline_names_the_expected_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    expected = tmp_path / "torch-home" / "hub" / "checkpoints" / "vgg16-397923af.pth"
    with pytest.raises(UsageError) as info:
        run(tiny(tmp_path / "r", model="vgg16-replace-classifier", weights="imagenet"))
    assert str(expected) in str(info.value) and "--download" in str(info.value)
    with pytest.raises(UsageError, match="no pretrained weights for model 'tudui'"):
        run(tiny(tmp_path / "r", weights="imagenet"))
    assert not (tmp_path / "r").exists()


# -- the step and validate -------------------------------------------------------------------


def test_the_amp_path_trains_and_evaluates_under_bf16_autocast():
    # --amp is CUDA-only in a run, but its code path is device-independent: autocast on the
    # CPU runs the same branches of train_step and evaluate (what this machine can check).
    torch.manual_seed(0)
    model = Tudui().to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    criterion = nn.CrossEntropyLoss()
    inputs = torch.randn(16, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    targets = torch.randint(0, 10, (16,))
    seen: list[torch.dtype] = []
    model.register_forward_hook(lambda module, args, output: seen.append(output.dtype))
    before = [p.detach().clone() for p in model.parameters()]
    losses = [train_step(model, optimizer, criterion, inputs, targets, amp_dtype=torch.bfloat16) for _ in range(3)]
    assert seen == [torch.bfloat16] * 3  # the forward ran in bf16 ...
    assert all(p.dtype == torch.float32 for p in model.parameters())  # ... the weights stay float32
    assert all(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert torch.stack(losses).isfinite().all() and not any(loss.requires_grad for loss in losses)
    batches = [(inputs, targets)]
    result = runner.evaluate(model, batches, criterion, amp_dtype=torch.bfloat16, channels_last=True)
    assert seen[-1] == torch.bfloat16 and result["samples"] == 16 and 0 <= result["val_accuracy"] <= 1


def test_train_step_works_for_lbfgs_through_the_closure():
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    inputs, targets = torch.randn(8, 4), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    optimizer = torch.optim.LBFGS(model.parameters(), lr=0.5, max_iter=5)
    first = train_step(model, optimizer, nn.CrossEntropyLoss(), inputs, targets)
    second = train_step(model, optimizer, nn.CrossEntropyLoss(), inputs, targets)
    assert first.shape == () and not first.requires_grad
    assert second < first


def test_validate_reproduces_the_runs_last_validation(tmp_path):
    summary = run(tiny(tmp_path / "r", epochs=2))
    result = validate(tmp_path / "r" / "last.pt", device="cpu", limit_val=32)
    assert result == {
        "val_loss": pytest.approx(summary["val_loss"], rel=1e-5),
        "val_accuracy": summary["val_accuracy"],
        "samples": 32,
    }
    assert validate(tmp_path / "r" / "best.pt", limit_val=10)["samples"] == 10
    with pytest.raises(UsageError, match="config.yaml is not a torch file: it looks like a text file"):
        validate(tmp_path / "r" / "config.yaml")
