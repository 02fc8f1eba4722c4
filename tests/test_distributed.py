"""zoo.ddp and zoo.launch: ``zoo run --nproc 2`` and ``torchrun -m zoo run``, on the CPU (gloo), for real.

Every multi-process run goes through the real command line: a launcher process runs torch's
elastic agent, which starts two ``python -m zoo run`` workers. Each worker imports torch (a few
seconds on a small machine), so the runs are few and shared: the plain two-process run is a
module fixture that several tests read, the launchers are forked from the session's fork server
(tests/forkcli.py), and whatever can run in this process does (``validate``, the single-process
reference run, resuming in one process).

The data: Tudui + SGD on 96 ``fake`` images, 8 per process per step (a global batch of 16, so
6 steps an epoch), 64 to validate.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml

from conftest import ZooCLI
from handshake import WriteStops
from zoo import cli
from zoo.data import TensorImageDataset, iterate_batches
from zoo.ddp import MARKER, Dist
from zoo.errors import UsageError
from zoo.launch import root_failure
from zoo.runner import RunConfig, run, validate
from zoo.testhooks import KILL_WORKER_ENV as ENV_TEST_KILL

DATA = ["--data", "fake", "--limit-train", "96", "--limit-val", "64", "--device", "cpu", "--seed", "0"]
PER_RANK, EPOCHS = 8, 2
TWO = ["tudui", "sgd", *DATA, "--batch-size", str(PER_RANK), "--epochs", str(EPOCHS), "--nproc", "2"]

# The two-process run and the one-process run of twice the batch differ only in how the floats
# are added up: DDP averages two ranks' mean gradients over 8 samples, one process takes one
# mean over 16, and float addition is not associative (~1e-7 relative per step). After 12 SGD
# steps the weights differ by ~1e-8; a shard off by a single sample would differ by ~1e-3.
CLOSE = {"rtol": 1e-5, "atol": 1e-6}


def weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["model"]


def assert_weights_close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], **tolerance: float) -> None:
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], **(tolerance or CLOSE), msg=lambda m, key=key: f"{key}: {m}")


def metric_lines(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def single(out: Path, **overrides) -> RunConfig:
    """The one-process twin of TWO: the same data, a batch of 2 x PER_RANK."""
    fields = dict(
        model="tudui",
        optimizer="sgd",
        data="fake",
        limit_train=96,
        limit_val=64,
        device="cpu",
        seed=0,
        batch_size=2 * PER_RANK,
        epochs=EPOCHS,
        out=str(out),
        quiet=True,
    )
    return RunConfig(**{**fields, **overrides})


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Train here as the workers do, on one thread each (zoo run --nproc shares the cores out):
    the same kernels, and no thread pool spinning against the workers for two cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, fork_server, one_thread) -> Path:
    """A directory holding ``two`` (``zoo run ... --nproc 2 --json``, its CompletedProcess in
    ``two.result.json``) and ``one`` (the one-process reference, run here)."""
    from forkcli import ForkedZooCLI

    root = tmp_path_factory.mktemp("distributed")
    zoo = ForkedZooCLI(root, fork_server)
    result = zoo("run", *TWO, "--out", "two", "--json", timeout=240)
    (root / "two.result.json").write_text(
        json.dumps({"returncode": result.returncode, "stdout": result.stdout, "stderr": result.stderr})
    )
    run(single(root / "one"))
    return root


@pytest.fixture
def two(runs) -> SimpleNamespace:
    result = json.loads((runs / "two.result.json").read_text())
    assert result["returncode"] == 0, result["stderr"]
    return SimpleNamespace(dir=runs / "two", summary=json.loads(result["stdout"]), stderr=result["stderr"], root=runs)


@pytest.fixture
def zoo_forked(tmp_path, fork_server) -> ZooCLI:
    from forkcli import ForkedZooCLI

    return ForkedZooCLI(tmp_path, fork_server)


# -- two processes: one run ---------------------------------------------------------------------


@pytest.mark.slow
def test_nproc_2_trains_and_rank_0_alone_writes_and_prints(two):
    assert two.summary["epochs"] == EPOCHS and two.summary["run_dir"] == "two"  # --json: one line, rank 0's
    starts = [line for line in two.stderr.splitlines() if line.startswith("zoo: tudui + sgd")]
    assert len(starts) == 1 and "2 processes on cpu (gloo)" in starts[0], two.stderr
    assert [line.split()[1] for line in two.stderr.splitlines() if line.startswith("epoch ")] == ["1/2", "2/2"]
    assert "Traceback" not in two.stderr and "zoo: error" not in two.stderr

    assert {p.name for p in two.dir.iterdir()} == {
        "config.yaml",
        "metrics.jsonl",
        "status.json",
        "last.pt",
        "best.pt",
        MARKER,
    }
    assert [line["epoch"] for line in metric_lines(two.dir)] == [1, 2]
    assert yaml.safe_load((two.dir / "config.yaml").read_text())["nproc"] == 2
    assert json.loads((two.dir / "status.json").read_text())["status"] == "finished"
    ckpt = torch.load(two.dir / "last.pt", weights_only=True)
    assert not [k for k in ckpt["model"] if k.startswith(("module.", "_orig_mod."))]  # the bare module
    assert ckpt["spec"]["world_size"] == 2 and ckpt["spec"]["batch_size"] == PER_RANK
    assert ckpt["metrics"]["train_images"] == EPOCHS * 96


@pytest.mark.slow
def test_its_checkpoint_validates_in_one_process_with_the_reported_accuracy(two):
    for name in ("last.pt", "best.pt"):
        result = validate(two.dir / name, device="cpu", limit_val=64)
        reported = torch.load(two.dir / name, weights_only=True)["metrics"]
        assert result["samples"] == 64
        assert result["val_accuracy"] == reported["val_accuracy"]  # counts: exact whatever the sharding
        assert result["val_loss"] == pytest.approx(reported["val_loss"], rel=1e-6)  # sums added in another order
    assert two.summary["val_accuracy"] == metric_lines(two.dir)[-1]["val_accuracy"]


@pytest.mark.slow
def test_nproc_2_with_batch_b_matches_one_process_with_batch_2b(two):
    one = two.root / "one"
    assert_weights_close(weights(two.dir / "last.pt"), weights(one / "last.pt"))
    for a, b in zip(metric_lines(two.dir), metric_lines(one), strict=True):  # metrics do not depend on N
        assert a["val_accuracy"] == b["val_accuracy"]
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-5)


@pytest.mark.slow
def test_a_two_process_run_resumes_in_one_process_with_the_same_global_batch(two, tmp_path):
    out = tmp_path / "resumed"
    shutil.copytree(two.dir, out)
    with pytest.raises(
        UsageError, match=r"global batch of 16 \(--batch-size 8 x 2 process\(es\)\), not 8.*--batch-size 16"
    ):
        run(single(out, resume=True, epochs=3, batch_size=PER_RANK))
    run(single(out, resume=True, epochs=3))
    reference = tmp_path / "one"
    shutil.copytree(two.root / "one", reference)
    run(single(reference, resume=True, epochs=3))
    assert [line["epoch"] for line in metric_lines(out)] == [1, 2, 3]
    assert_weights_close(weights(out / "last.pt"), weights(reference / "last.pt"))


@pytest.mark.slow
def test_torchrun_starts_the_same_workers_and_resumes_a_run_with_nproc_2(two, tmp_path):
    out = tmp_path / "resumed"
    shutil.copytree(two.dir, out)
    zoo = ZooCLI(tmp_path)
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        "-m",
        "zoo",
        "run",
        "tudui",
        "sgd",
        *DATA,
        "--batch-size",
        str(PER_RANK),
        "--epochs",
        "3",
        "--resume",
        "--out",
        str(out),
        "--json",
    ]  # no --nproc: torchrun's --nproc-per-node decides
    result = subprocess.run(command, cwd=tmp_path, env=zoo.environment(), capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["epochs"] == 3  # one summary: rank 0's
    assert [line["epoch"] for line in metric_lines(out)] == [1, 2, 3]
    reference = tmp_path / "one"
    shutil.copytree(two.root / "one", reference)
    run(single(reference, resume=True, epochs=3))
    assert_weights_close(weights(out / "last.pt"), weights(reference / "last.pt"))


# -- failures and signals -----------------------------------------------------------------------


@pytest.mark.slow
def test_a_killed_worker_is_restarted_and_the_group_continues_from_the_last_checkpoint(two, zoo_forked):
    # Rank 1 SIGKILLs itself after its 9th step, mid-epoch 2; the agent restarts both workers,
    # which resume from last.pt (epoch 1). Epoch 2 then replays exactly: same weights, same
    # batch order, same reduction order, so the result is the uninterrupted run's, bit for bit.
    result = zoo_forked("run", *TWO, "--max-restarts", "1", "--out", "killed", env={ENV_TEST_KILL: "1:9"}, timeout=240)
    assert result.returncode == 0, result.stderr
    assert "restarted (restart 1 of 1); continuing killed from its last checkpoint" in result.stderr
    out = zoo_forked.cwd / "killed"
    assert [line["epoch"] for line in metric_lines(out)] == [1, 2]
    a, b = weights(out / "last.pt"), weights(two.dir / "last.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_sigint_stops_both_workers_after_the_same_step_and_the_run_resumes(two, tmp_path, fork_server):
    # Ctrl-C reaches the launcher, whose agent passes it on to the workers. It is sent while rank 0
    # is held inside its first write of last.pt (the write handshake, tests/handshake.py), so it
    # arrives at or after the end of epoch 1: the group stops after epoch 1 (the signal came
    # during its checkpoint) or at a step of a later epoch, and whichever it says, its checkpoint
    # must be exactly that.
    stdout, stderr = tmp_path / "stdout", tmp_path / "stderr"
    stops = WriteStops(tmp_path / "stop.json")
    env = ZooCLI(tmp_path).environment(stops.env())
    args = [
        "run",
        "tudui",
        "sgd",
        *DATA,
        "--batch-size",
        str(PER_RANK),
        "--epochs",
        "4",
        "--nproc",
        "2",
        "--out",
        "stopped",
    ]
    launcher = fork_server.start(args, cwd=tmp_path, env=env, path=[], stdout=stdout, stderr=stderr)
    try:
        held = stops.until(launcher, lambda stop: stop["name"] == "last.pt" and stop["point"] == "complete")
        assert held is not None, stderr.read_text()
        launcher.send_signal(signal.SIGINT)
        stops.release_all(launcher)
        code = launcher.wait(timeout=120)
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait()
    text = stderr.read_text()
    errors = [line for line in text.splitlines() if line.startswith("zoo: stopped:")]
    # One line for the group: rank 0's own words (where it stopped), read back by the launcher.
    assert code == 130 and len(errors) == 1 and "Traceback" not in text and "zoo: error" not in text, text
    where = re.search(r"stopped by SIGINT (?:at epoch (\d+), step (\d+)/6|after epoch (\d+))", errors[0])
    assert where, errors[0]
    out = tmp_path / "stopped"
    assert json.loads((out / "status.json").read_text())["status"] == "interrupted"
    ckpt = torch.load(out / "last.pt", weights_only=True)
    if where[3]:  # after a validated epoch: a whole-epoch checkpoint, no partial one
        assert (ckpt["epoch"], ckpt["partial"]) == (int(where[3]), None) and ckpt["epoch"] >= 1
    else:  # mid-epoch: where every rank stopped, with each rank's random state
        partial = ckpt["partial"]
        assert (ckpt["epoch"], partial["epoch"], partial["step"]) == (int(where[1]) - 1, int(where[1]), int(where[2]))
        assert partial["epoch"] >= 2 and len(partial["ranks_rng"]) == 2
    assert [line["epoch"] for line in metric_lines(out)] == list(range(1, ckpt["epoch"] + 1))

    run(single(out, resume=True, epochs=4))  # in one process, 2 x 8 = 16
    reference = tmp_path / "one"
    shutil.copytree(two.root / "one", reference)
    run(single(reference, resume=True, epochs=4))
    assert [line["epoch"] for line in metric_lines(out)] == [1, 2, 3, 4]
    assert_weights_close(weights(out / "last.pt"), weights(reference / "last.pt"))


DROPOUT_REGISTRY = """
models:
  tudui-dropout:
    base: tudui
    summary: Tudui with dropout on its output, a random layer
    edits:
      - append: drop
        layer: Dropout
        kwargs: {p: 0.5}
"""


@pytest.mark.slow
def test_random_layers_resume_bitwise_whether_stopped_between_or_inside_epochs(tmp_path, fork_server):
    # Rank 1 draws dropout masks of its own. After a restart at an epoch boundary its stream is
    # re-derived from (seed, epoch, rank); after a stop mid-epoch it continues the stream saved
    # for it in the checkpoint (a signal after step 5 is voted on at step 6 and read at step 7:
    # all ranks stop after step 7, mid-epoch 2). Either way the weights are the uninterrupted
    # run's, bit for bit.
    from forkcli import ForkedZooCLI

    (tmp_path / "dropout.yaml").write_text(DROPOUT_REGISTRY)
    zoo = ForkedZooCLI(tmp_path, fork_server)
    args = [
        "run",
        "tudui-dropout",
        "sgd",
        "--registry",
        "dropout.yaml",
        "--data",
        "fake",
        "--limit-train",
        "64",
        "--limit-val",
        "16",
        "--device",
        "cpu",
        "--batch-size",
        "8",
        "--epochs",
        "2",
        "--nproc",
        "2",
    ]  # 4 steps an epoch
    reference = zoo(*args, "--out", "reference", timeout=240)
    assert reference.returncode == 0, reference.stderr

    killed = zoo(*args, "--max-restarts", "1", "--out", "killed", env={ENV_TEST_KILL: "1:6"}, timeout=240)
    assert killed.returncode == 0 and "restarted (restart 1 of 1)" in killed.stderr, killed.stderr

    stopped = zoo(*args, "--out", "stopped", env={ENV_TEST_KILL: "1:5:SIGINT"}, timeout=240)
    assert stopped.returncode == 130, stopped.stderr
    partial = torch.load(tmp_path / "stopped" / "last.pt", weights_only=True)["partial"]
    assert partial["epoch"] == 2 and 0 < partial["step"] < 4 and len(partial["ranks_rng"]) == 2
    resumed = zoo(*args, "--resume", "--out", "stopped", timeout=240)
    assert resumed.returncode == 0, resumed.stderr

    expected = weights(tmp_path / "reference" / "last.pt")
    for name in ("killed", "stopped"):
        got = weights(tmp_path / name / "last.pt")
        assert all(torch.equal(got[k], expected[k]) for k in expected), name
        assert [line["train_loss"] for line in metric_lines(tmp_path / name)] == [
            line["train_loss"] for line in metric_lines(tmp_path / "reference")
        ], name


def test_the_group_reports_its_root_cause_once(tmp_path):
    from torch.distributed.elastic.multiprocessing.errors import ProcessFailure

    def failure(rank: int, exitcode: int, message: str | None = None, **zoo) -> ProcessFailure:
        path = tmp_path / f"{rank}-{exitcode}.json"
        if message is not None:
            extra = {"timestamp": "0", "zoo": zoo}
            path.write_text(json.dumps({"message": {"message": message, "extraInfo": extra}}))
        return ProcessFailure(local_rank=rank, pid=100 + rank, exitcode=exitcode, error_file=str(path))

    (tmp_path / "last.pt").write_bytes(b"")
    # rank 1 died; rank 0 only saw its collective fail: the death is the news
    error = root_failure(
        {0: failure(0, 1, "another worker process failed", cause="peer", exit_code=1), 1: failure(1, -9)},
        tmp_path,
        max_restarts=1,
    )
    assert error.exit_code == 1 and "worker rank 1 (pid 101) was killed by SIGKILL (after 1 restart)" in str(error)
    assert f"continue with --resume --out {tmp_path}" in str(error)
    # the same bad input on every rank: rank 0's words and exit code, nothing added
    error = root_failure(
        {r: failure(r, 2, f"unknown dataset [{r}]", cause="error", exit_code=2) for r in (1, 0)},
        tmp_path,
        max_restarts=0,
    )
    assert (error.exit_code, str(error)) == (2, "unknown dataset [0]")


@pytest.fixture
def busy_port():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield listener.getsockname()[1]


def test_launch_errors_are_one_line_before_any_worker_starts(tmp_path, monkeypatch, capsys, busy_port):
    monkeypatch.chdir(tmp_path)

    def refused(*args: str, code: int = 2) -> str:
        assert cli.main(["run", *args]) == code
        err = capsys.readouterr().err
        assert (
            len([line for line in err.splitlines() if line.startswith("zoo: error:")]) == 1 and "Traceback" not in err
        )
        return err

    assert "pass --device cuda" in refused(*TWO, "--device", "cuda:1")
    assert "did you mean 'sgd'" in refused("tudui", "sgdd", *DATA, "--nproc", "2")
    assert "nothing to resume" in refused(*TWO, "--resume", "--out", "missing")
    monkeypatch.setenv("MASTER_PORT", str(busy_port))
    assert f"port {busy_port} (MASTER_PORT) is busy" in refused(*TWO, "--out", "r")
    assert not list(tmp_path.iterdir())  # nothing written


def test_more_processes_than_gpus_is_refused(tmp_path, monkeypatch, capsys):
    import zoo.launch

    monkeypatch.setattr(zoo.launch, "resolve_device", lambda spec: torch.device("cuda", 0))
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert cli.main(["run", "tudui", "sgd", "--nproc", "2", "--out", str(tmp_path / "r")]) == 2
    assert "--nproc 2 needs 2 GPUs, one per process, but 1 are visible" in capsys.readouterr().err


def test_run_refuses_nproc_outside_a_launcher(tmp_path):
    with pytest.raises(UsageError, match="torchrun --nproc-per-node 2 -m zoo run"):
        run(single(tmp_path / "r", nproc=2))


# -- a worker's GPU, simulated (torch.cuda and the process group patched) ------------------------


@pytest.fixture
def cuda_worker(monkeypatch):
    """``cuda_worker(gpus, local_rank, local_world)``: this process as a torchrun worker on a
    node of ``local_world`` processes that sees ``gpus`` GPUs; returns what ``setup`` set: the
    devices given to ``torch.cuda.set_device`` and the ``init_process_group`` arguments."""
    import torch.distributed as dist

    seen: dict[str, list] = {"set_device": [], "init": []}

    def make(gpus: int, local_rank: int, local_world: int) -> dict[str, list]:
        for name, value in [("RANK", local_rank), ("LOCAL_RANK", local_rank), ("WORLD_SIZE", local_world)]:
            monkeypatch.setenv(name, str(value))
        monkeypatch.setenv("LOCAL_WORLD_SIZE", str(local_world))
        monkeypatch.setenv("MASTER_PORT", "29500")
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
        monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
        monkeypatch.setattr(torch.cuda, "set_device", seen["set_device"].append)
        monkeypatch.setattr(dist, "is_initialized", lambda: False)
        monkeypatch.setattr(dist, "TCPStore", lambda *args, **kwargs: "store")
        monkeypatch.setattr(dist, "PrefixStore", lambda prefix, store: store)
        monkeypatch.setattr(dist, "init_process_group", lambda *args, **kwargs: seen["init"].append((args, kwargs)))
        monkeypatch.setattr(dist, "new_group", lambda **kwargs: "control")
        return seen

    return make


def test_one_gpu_per_process_trains_local_rank_1_on_its_only_gpu(cuda_worker):
    """A scheduler that gives each process its own CUDA_VISIBLE_DEVICES: local rank 1 sees one
    GPU, cuda:0, which is its own."""
    from zoo.ddp import setup

    seen = cuda_worker(gpus=1, local_rank=1, local_world=2)
    joined, config = setup(RunConfig("tudui", "sgd", device="cuda"))
    assert joined.device == torch.device("cuda", 0) and joined.rank == 1 and joined.backend == "nccl"
    assert seen["set_device"] == [torch.device("cuda", 0)]
    ((args, kwargs),) = seen["init"]
    assert args == ("nccl",) and kwargs["device_id"] == torch.device("cuda", 0)
    assert config.quiet


def test_fewer_gpus_than_local_ranks_is_still_refused(cuda_worker):
    from zoo.ddp import setup

    seen = cuda_worker(gpus=2, local_rank=2, local_world=3)
    with pytest.raises(UsageError, match=r"this is local rank 2, but only 2 GPU\(s\) are visible"):
        setup(RunConfig("tudui", "sgd", device="cuda"))
    assert seen == {"set_device": [], "init": []}


def test_a_rank_resumed_on_a_gpu_from_a_cpu_stop_draws_a_stream_of_its_own(monkeypatch):
    """Rank 1's state saved on the CPU has no CUDA stream: without a fork of its own, rank 1's
    GPU would continue rank 0's stream (restored from the checkpoint) and draw its masks."""
    seeds: list[int] = []
    monkeypatch.setattr(torch, "manual_seed", seeds.append)
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda *args: pytest.fail("no CUDA state was saved"))
    states = [{"torch": torch.get_rng_state()}, {"torch": torch.Generator().manual_seed(1).get_state()}]
    with torch.random.fork_rng(devices=[]):  # this process's CPU stream is put back afterwards
        Dist(torch.device("cuda", 1), rank=1, world=2).restore_rank_rng(states, seed=0, epoch=2)
        assert len(seeds) == 1
        assert torch.equal(torch.get_rng_state(), states[1]["torch"])  # the CPU stream continues as saved
        seeds.clear()
        Dist(torch.device("cpu"), rank=1, world=2).restore_rank_rng(states, seed=0, epoch=2)
        assert seeds == []  # on the CPU, the saved state is all there is to restore


# -- sharding (zoo.data), in this process ---------------------------------------------------------


def numbered(n: int) -> TensorImageDataset:
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 1, 2, 2).clone()
    return TensorImageDataset(images, torch.arange(n), mean=(0.0,), std=(1.0,))


@pytest.mark.parametrize("n, batch, world", [(10, 2, 3), (96, 8, 2), (7, 4, 2), (5, 1, 5)])
def test_ranks_take_disjoint_shards_that_make_up_the_single_process_batches(n, batch, world):
    def epoch(rank: int, world: int, batch: int) -> list[list[int]]:
        batches = iterate_batches(
            numbered(n), batch, shuffle=True, generator=torch.Generator().manual_seed(3), rank=rank, world=world
        )
        steps = [y.tolist() for _, y in batches]
        assert len(steps) == len(batches)
        return steps

    shards = [epoch(rank, world, batch) for rank in range(world)]
    order = sum(epoch(0, 1, batch * world), [])  # one process, the same generator: the epoch's order
    usable, size = n - n % world, batch * world  # the last n % world samples of the order sit out
    assert len({len(s) for s in shards}) == 1  # the same number of steps on every rank...
    for step, steps in enumerate(zip(*shards)):
        assert len({len(s) for s in steps}) == 1  # ...of the same size, or DDP would wait forever
        together = sorted(sum(steps, []))
        assert len(set(together)) == len(together)  # disjoint
        assert together == sorted(order[step * size : min((step + 1) * size, usable)])  # one global batch
    batches = iterate_batches(numbered(n), batch, shuffle=True, generator=torch.Generator(), rank=0, world=world)
    assert batches.samples == usable and sum(batches.step_sizes()) == usable


def test_validation_shards_cover_every_sample_once_and_the_dataloader_path_agrees():
    class Plain(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return 11

        def __getitem__(self, i: int):
            return torch.zeros(1, 2, 2), i

    seen = []
    for rank in range(3):
        tensors = [y.tolist() for _, y in iterate_batches(numbered(11), 2, shuffle=False, rank=rank, world=3)]
        loader = [y.tolist() for _, y in iterate_batches(Plain(), 2, shuffle=False, rank=rank, world=3)]
        assert tensors == loader
        seen += sum(tensors, [])
        shuffled = [
            iterate_batches(data, 2, shuffle=True, generator=torch.Generator().manual_seed(1), rank=rank, world=3)
            for data in (numbered(11), Plain())
        ]
        assert [y.tolist() for _, y in shuffled[0]] == [y.tolist() for _, y in shuffled[1]]
    assert seen == list(range(11))


def test_a_single_process_dist_changes_nothing():
    one = Dist(torch.device("cpu"))
    model, criterion = torch.nn.Linear(2, 2), torch.nn.CrossEntropyLoss()
    assert one.wrap(model) is model and one.train_criterion(criterion) is criterion
    assert one.for_evaluation(model, model) is model and one.is_main
    assert one.stop_vote(True) and not one.stop_vote(False) and one.agree(True) and not one.agree(False)
    assert one.describe() == "cpu" and one.is_main and not one.distributed


def test_an_accumulated_step_averages_gradients_over_the_ranks_once_not_once_a_batch(tmp_path):
    # A one-process gloo group: DDP runs its reducer as with more. A communication hook counts the
    # all-reduces of the three batches of one --accumulate 3 step.
    import torch.distributed as torch_dist
    from torch.nn.parallel import DistributedDataParallel

    from zoo.steps import accumulation_step

    torch_dist.init_process_group("gloo", init_method=(tmp_path / "store").as_uri(), rank=0, world_size=1)
    try:
        torch.manual_seed(0)
        model = DistributedDataParallel(torch.nn.Linear(4, 3))
        reduced = []

        def count(state, bucket):
            reduced.append(bucket.index())
            future = torch.futures.Future()
            future.set_result(bucket.buffer())
            return future

        model.register_comm_hook(None, count)
        bare = torch.nn.Linear(4, 3)
        bare.load_state_dict(model.module.state_dict())
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        inputs, targets = torch.randn(3, 2, 4), torch.tensor([[0, 1], [2, 0], [1, 1]])
        for i in range(3):
            accumulation_step(model, optimizer, torch.nn.CrossEntropyLoss(), inputs[i], targets[i],
                              first=i == 0, last=i == 2, scale=1 / 3)  # fmt: skip
        assert reduced == [0]  # one bucket (a small model), reduced once: after the last batch
        # The step is still the one of the three batches' mean gradient.
        sum(torch.nn.functional.cross_entropy(bare(inputs[i]), targets[i]) / 3 for i in range(3)).backward()
        for trained, p in zip(model.module.parameters(), bare.parameters()):
            torch.testing.assert_close(trained, p.detach() - 0.1 * p.grad)
    finally:
        torch_dist.destroy_process_group()


@pytest.mark.slow
def test_a_recipe_run_restarted_after_a_killed_worker_equals_the_uninterrupted_one(zoo_forked):
    # warmup-cosine, flip, crop, an EMA, label smoothing and accumulation under --nproc 2: rank 1
    # dies mid-epoch 2 and the restarted group continues from epoch 1's checkpoint. Every rank
    # reseeds its augmentations from (seed, epoch, rank) at each epoch's start, and the schedule,
    # EMA and optimizer come back from the checkpoint, so epoch 2 replays bit for bit.
    recipe = ["--sched", "warmup-cosine", "--augment", "flip", "--augment", "crop:padding=2", "--ema", "0.9",
              "--label-smoothing", "0.1", "--accumulate", "2", "--lr", "0.05", "--quiet"]  # fmt: skip
    straight = zoo_forked("run", *TWO, *recipe, "--out", "straight", timeout=240)
    assert straight.returncode == 0, straight.stderr
    killed = zoo_forked("run", *TWO, *recipe, "--max-restarts", "1", "--out", "killed",
                        env={ENV_TEST_KILL: "1:9"}, timeout=240)  # fmt: skip
    assert killed.returncode == 0, killed.stderr
    # And a SIGINT mid-epoch 2 (rank 1 after its 7th batch; the group stops after the next whole
    # accumulated step), then --resume: each rank continues its own augmentation stream.
    stopped = zoo_forked("run", *TWO, *recipe, "--out", "stopped", env={ENV_TEST_KILL: "1:7:SIGINT"}, timeout=240)
    assert stopped.returncode == 130, stopped.stderr
    partial = torch.load(zoo_forked.cwd / "stopped" / "last.pt", weights_only=True)["partial"]
    assert (partial["epoch"], partial["step"]) == (2, 2) and "augment" in partial["ranks_rng"][1]
    resumed = zoo_forked("run", *TWO, *recipe, "--out", "stopped", "--resume", timeout=240)
    assert resumed.returncode == 0, resumed.stderr
    a = torch.load(zoo_forked.cwd / "straight" / "last.pt", weights_only=True)
    for name in ("killed", "stopped"):
        b = torch.load(zoo_forked.cwd / name / "last.pt", weights_only=True)
        for part, other in ((a["model"], b["model"]), (a["ema"]["model"], b["ema"]["model"])):
            assert all(torch.equal(part[k], other[k]) for k in part), name
        assert a["scheduler"] == b["scheduler"] and str(a["optimizer"]) == str(b["optimizer"]), name
        assert [line["lr"] for line in metric_lines(zoo_forked.cwd / "straight")] == [
            line["lr"] for line in metric_lines(zoo_forked.cwd / name)
        ], name
