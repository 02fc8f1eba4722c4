"""The TensorBoard logger plugin: event files that TensorBoard's own reader reads back, written
through the event hooks as the runner calls them (no training needed)."""

from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

import pytest

from runfiles import metrics_line
from zoo.errors import UsageError
from zoo.plugins import get_plugin_host

pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed: pip install -e '.[tensorboard]'")

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

import zoo_tensorboard  # noqa: E402


def fake_run(run_dir, *, tensorboard=True, start_epoch=0):
    return SimpleNamespace(
        run_dir=run_dir,
        config=SimpleNamespace(tensorboard=tensorboard),
        model=None,
        optimizer=None,
        start_epoch=start_epoch,
    )


def train(host, run, epochs, *, speed=0.35, end=True):
    """Emit the events a run of ``epochs`` (1-based) would, as the runner does."""
    host.emit("on_run_start", run=run)
    for epoch in epochs:
        host.emit("on_epoch_end", run=run, epoch=epoch, metrics=metrics_line(epoch, speed=speed))
    if end:
        host.emit("on_run_end", run=run, metrics={"status": "finished"})


def read_scalars(log_dir) -> dict[str, list[tuple[int, float]]]:
    events = EventAccumulator(str(log_dir))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


@pytest.fixture
def host(monkeypatch):
    # strict: a hook that raises fails the test instead of becoming a warning
    monkeypatch.setenv("ZOO_STRICT_PLUGINS", "1")
    return get_plugin_host()


def test_writes_each_epochs_scalars_that_tensorboard_reads_back(tmp_path, host):
    assert host.infos["tensorboard"].builtin  # loaded through its entry point, like any plugin
    run = fake_run(tmp_path / "run")
    train(host, run, range(1, 4))
    scalars = read_scalars(tmp_path / "run" / "tensorboard")
    assert set(scalars) == {"loss/train", "loss/val", "accuracy/val", "lr"}
    for key, tag in zoo_tensorboard.SCALARS.items():
        expected = [(e, metrics_line(e)[key]) for e in (1, 2, 3)]
        assert [s for s, _ in scalars[tag]] == [1, 2, 3], tag
        assert [v for _, v in scalars[tag]] == pytest.approx([v for _, v in expected], rel=1e-6), tag
    assert not zoo_tensorboard._writers  # closed at the end of the run


def test_each_epoch_is_on_disk_before_the_run_ends(tmp_path, host):
    run = fake_run(tmp_path / "run")
    train(host, run, [1, 2], end=False)  # flushed per epoch: a live TensorBoard sees them
    assert [s for s, _ in read_scalars(tmp_path / "run" / "tensorboard")["loss/val"]] == [1, 2]
    host.emit("on_run_end", run=run, metrics={"status": "interrupted"})


def test_a_resumed_run_replaces_the_epochs_after_its_checkpoint(tmp_path, host):
    # The first process logged epochs 1-3 but its last checkpoint was after epoch 2; the
    # resumed run trains epoch 3 again. TensorBoard must show one epoch 3: the new one.
    train(host, fake_run(tmp_path / "run"), range(1, 4))
    # That process ran a minute ago: event files are read in name order, and the name starts
    # with the creation second, which two writers in one test could otherwise share.
    for path in (tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"):
        parts = path.name.split(".")
        parts[3] = f"{int(parts[3]) - 60:010d}"
        path.rename(path.with_name(".".join(parts)))
    train(host, fake_run(tmp_path / "run", start_epoch=2), [3, 4], speed=0.9)
    loss = read_scalars(tmp_path / "run" / "tensorboard")["loss/train"]
    assert [s for s, _ in loss] == [1, 2, 3, 4]
    assert loss[2][1] == pytest.approx(metrics_line(3, speed=0.9)["train_loss"])


def test_off_unless_the_run_asks(tmp_path, host):
    train(host, fake_run(tmp_path / "off", tensorboard=False), [1])
    no_flag = SimpleNamespace(run_dir=tmp_path / "no-flag", config=SimpleNamespace(), start_epoch=0)
    train(host, no_flag, [1])
    assert not (tmp_path / "off" / "tensorboard").exists()
    assert not (tmp_path / "no-flag" / "tensorboard").exists()


def test_require_says_what_to_install(monkeypatch):
    zoo_tensorboard.require()  # installed: nothing to say
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # import tensorboard -> ImportError
    with pytest.raises(
        UsageError, match=r"--tensorboard needs the tensorboard package: pip install 'tudui-zoo\[tensorboard\]'"
    ):
        zoo_tensorboard.require()


def test_importing_the_plugin_imports_neither_torch_nor_tensorboard():
    code = "import sys, zoo_tensorboard\nassert not {'torch', 'tensorboard'} & set(sys.modules), sys.modules.keys()\n"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
