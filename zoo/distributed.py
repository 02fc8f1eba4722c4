"""Data-parallel training on torch.distributed: ``zoo run ... --nproc N`` and ``torchrun -m zoo run``.

The zoo brings no launcher of its own. ``zoo run --nproc N`` runs torch's elastic agent (the
engine behind ``torchrun``) in this process; the agent starts N workers, each
``python -m zoo run`` with the same command line, and restarts the whole group after a failure
while ``--max-restarts`` allows. A user may equally start the workers with ``torchrun
--nproc-per-node N -m zoo run ...``: a worker reads everything from torchrun's environment
(``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``LOCAL_WORLD_SIZE``, ``TORCHELASTIC_*``), never from
the launcher that started it.

Inside a worker, :func:`setup` joins the process group and returns a :class:`Dist`, which the
runner consults at a handful of marked places. What it guarantees:

* **One run, whatever N is.** Every rank draws the same shuffled order from the same seeded
  generator and takes its own shard of each global batch (:class:`zoo.data.Batches`), so a step
  of N processes x ``--batch-size B`` sees exactly the samples of a single-process step of
  ``B x N``; DDP averages the gradients, which makes the update that of the ``B x N`` batch. The
  learning rate is used as given: it is not scaled with N.
* **Metrics do not depend on N.** The loss each step records is the mean over all ranks'
  batches, and validation adds up every rank's shard, so ``metrics.jsonl`` reads the same.
* **Rank 0 alone writes and speaks**: the run directory, checkpoints (the bare module, no
  ``module.`` prefix), progress, the event hooks. Other ranks are quiet.
* **Ranks agree before they stop.** A signal reaches each rank at a slightly different step;
  ranks vote every step, so they all stop after the same one and rank 0's checkpoint holds it.
* **An elastic restart continues the run.** A restarted group (``TORCHELASTIC_RESTART_COUNT``
  > 0) resumes the run directory that an earlier attempt of the same job created.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import os
import re
import signal
import socket
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import torch
import torch.distributed as dist
from torch import nn

from zoo.devices import resolve_device
from zoo.errors import RunError, UsageError, ZooError

if TYPE_CHECKING:
    from zoo.runner import RunConfig

__all__ = [
    "Dist",
    "in_worker",
    "should_launch",
    "setup",
    "launch",
    "run_worker",
    "WorkersFailed",
    "ENV_LAUNCHER",
    "ENV_TEST_KILL",
    "MARKER",
]

ENV_LAUNCHER = "ZOO_LAUNCHER"  # set by `zoo run --nproc` for its workers: it reports their errors itself
ENV_TEST_KILL = "ZOO_TEST_KILL_WORKER"  # "RANK:STEP[:SIGNAL]": that rank signals itself (SIGKILL) after STEP steps (tests only)
MARKER = ".zoo-elastic-run-id"  # in a run directory made by an elastic job: that job's run id
# What the agent gives workers after a signal, to finish their step and checkpoint, before it
# SIGKILLs them; also how long a worker stuck in a collective with a dead peer can hold up a restart.
SHUTDOWN_TIMEOUT_S = 60
_WORKER_ENV = ("RANK", "LOCAL_RANK", "WORLD_SIZE")


def in_worker() -> bool:
    """Whether this process was started by torchrun or the elastic agent (``zoo run --nproc``)."""
    return all(name in os.environ for name in _WORKER_ENV)


def should_launch(nproc: int, max_restarts: int) -> bool:
    """Whether ``zoo run`` should start workers rather than train in this process."""
    return not in_worker() and (nproc > 1 or max_restarts > 0)


# -- the worker's view ------------------------------------------------------------------------


class _NoObservers:
    """What ranks other than 0 emit events to: nothing (plugins see each event once)."""

    def emit(self, hook: str, **kwargs: Any) -> None:
        pass


class _MeanOverRanks(nn.Module):
    """``criterion`` whose value is the mean over all ranks' batches and whose gradient is this
    rank's own.

    All ranks then see one loss: the per-step losses the epoch line is made of need no further
    reduction, the NaN guard trips on every rank at the same step, and an optimizer that reads
    the loss (L-BFGS's line search) takes the same branches on every rank, instead of calling
    its closure a different number of times, which would leave DDP waiting. The mean is exact
    because every rank's batch has the same size (:class:`zoo.data.Batches`).
    """

    def __init__(self, criterion: nn.Module, world: int):
        super().__init__()
        self.criterion, self.world = criterion, world

    def forward(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        local = self.criterion(outputs, targets)
        mean = local.detach().float().clone()
        dist.all_reduce(mean)
        mean.div_(self.world)
        # local - local.detach() is exactly 0 and carries local's gradient: the value is `mean`, bit for bit.
        return mean.to(local.dtype) + (local - local.detach())


@dataclass
class Dist:
    """This process's place in the job. A single process is ``Dist(device)``: rank 0 of 1,
    and every method is then the identity or a no-op, so the runner has one code path."""

    device: torch.device
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    backend: str | None = None
    control: Any = None  # a gloo group for host-side votes and sums, whatever the backend
    owned: bool = False  # this run initialised the default process group, so it destroys it
    kill_at: tuple[int, signal.Signals] | None = None  # ZOO_TEST_KILL_WORKER: (step, signal) this rank sends itself
    _steps: int = field(default=0, init=False, repr=False)  # training steps taken (stop_vote calls)
    _pending: tuple[Any, torch.Tensor] | None = field(default=None, init=False, repr=False)  # the vote in flight

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1

    def describe(self) -> str:
        """Where training runs, for the start line: ``cpu``, or ``2 processes on cpu (gloo)``."""
        if not self.distributed:
            return str(self.device)
        return f"{self.world} processes on {self.device.type} ({self.backend})"

    # -- the model and the loss

    def wrap(self, model: nn.Module) -> nn.Module:
        """``model`` in DistributedDataParallel (which broadcasts rank 0's weights now)."""
        if not self.distributed:
            return model
        from torch.nn.parallel import DistributedDataParallel

        device_ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=device_ids)

    def train_criterion(self, criterion: nn.Module) -> nn.Module:
        """The training loss: its gradient is this rank's (DDP averages gradients itself), its
        value the mean over every rank's batch (see :class:`_MeanOverRanks`)."""
        return _MeanOverRanks(criterion, self.world) if self.distributed else criterion

    def for_evaluation(self, forward: nn.Module, model: nn.Module) -> nn.Module:
        """The module to validate with. Distributed: the bare module (DDP's forward would run a
        collective per batch, and the validation shards may differ in length), after taking
        rank 0's buffers (batch-norm statistics), so that every rank validates the very model
        that rank 0 checkpoints."""
        if not self.distributed:
            return forward
        for buffer in model.buffers():
            dist.broadcast(buffer, src=0)
        return model

    def sum_metrics(self, sums: list[float], samples: int) -> tuple[list[float], int]:
        """Add up every rank's validation sums and sample count (``evaluate``'s ``reduce``)."""
        totals = torch.tensor([*sums, float(samples)], dtype=torch.float64)
        dist.all_reduce(totals, group=self.control)
        *summed, count = totals.tolist()
        return summed, int(count)

    def fork_rng(self, seed: int, epoch: int) -> None:
        """Give ranks other than 0 a stream of their own for dropout and other random layers.

        Every rank starts from the same seed (the same initial weights and batch order); without
        this, rank r would draw the same dropout masks as rank 0 for its own samples. Rank 0
        keeps its stream, which is the one its checkpoints save. Rank r's stream for an epoch
        is a function of (seed, epoch, rank) alone, so a run resumed at an epoch boundary
        (``--resume``, an elastic restart) draws the masks the uninterrupted run drew.
        """
        if self.rank:
            torch.manual_seed(_rank_seed(seed, epoch, self.rank))

    def rank_rng_states(self) -> list[dict[str, torch.Tensor]] | None:
        """Every rank's random state, gathered (a collective: all ranks call it at the same
        step). A run stopped mid-epoch saves them, so that each rank continues its own stream."""
        if not self.distributed:
            return None
        mine = {"torch": torch.get_rng_state()}
        if self.device.type == "cuda":
            mine["cuda"] = torch.cuda.get_rng_state(self.device)
        states: list[Any] = [None] * self.world
        dist.all_gather_object(states, mine, group=self.control)
        return states

    def restore_rank_rng(self, states: Sequence[Mapping[str, torch.Tensor]] | None, seed: int, epoch: int) -> None:
        """Continue this rank's stream from ``rank_rng_states`` of a stopped epoch; with none
        saved for this world size (another N cannot replay the run anyway), fork as at an
        epoch's start. Rank 0's state comes from the checkpoint's ``rng``."""
        if not self.rank:
            return
        if not states or len(states) != self.world:
            self.fork_rng(seed, epoch)
            return
        torch.set_rng_state(states[self.rank]["torch"])
        if "cuda" in states[self.rank] and self.device.type == "cuda":
            torch.cuda.set_rng_state(states[self.rank]["cuda"], self.device)

    # -- agreeing on when to stop

    def stop_vote(self, local: bool) -> bool:
        """Called after every training step: whether all ranks agree to stop now.

        ``local`` is this rank's wish (a signal arrived). The vote runs asynchronously on the
        gloo group and is read one step later, so it never stalls a step (nor syncs a GPU);
        every rank reads the same result after the same step.
        """
        self._steps += 1
        if self.kill_at is not None and self._steps == self.kill_at[0]:
            os.kill(os.getpid(), self.kill_at[1])  # tests: a worker dying (or asked to stop) mid-epoch
        if not self.distributed:
            return local
        agreed = self._collect()
        flag = torch.tensor([int(local)], dtype=torch.int32)
        work = dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=self.control, async_op=True)
        self._pending = (work, flag)
        return agreed

    def agree(self, local: bool) -> bool:
        """A blocking vote (after each epoch): whether any rank wants to stop, including a wish
        still in flight from the last step's vote."""
        if not self.distributed:
            return local
        flag = torch.tensor([int(local or self._collect())], dtype=torch.int32)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=self.control)
        return bool(flag.item())

    def _collect(self) -> bool:
        if self._pending is None:
            return False
        work, flag = self._pending
        self._pending = None
        work.wait()
        return bool(flag.item())

    # -- rank 0's jobs

    def new_run_dir(self, create: Callable[[], Path]) -> Path:
        """Rank 0 creates the run directory (``create()``); every rank gets its path.

        In an elastic job, rank 0 also marks the directory with the job's run id, so that a
        restarted group knows the directory is its own to resume (see :func:`setup`).
        """
        path: Path | None = None
        if self.is_main:
            path = create()
            run_id = os.environ.get("TORCHELASTIC_RUN_ID")
            if run_id:
                (path / MARKER).write_text(run_id + "\n")
        if self.distributed:
            shared = [str(path) if path is not None else None]
            dist.broadcast_object_list(shared, src=0, group=self.control)
            path = Path(shared[0])
        assert path is not None
        return path

    def observers(self, host: Any) -> Any:
        """The plugin host on rank 0; elsewhere a host that emits nothing."""
        return host if self.is_main else _NoObservers()

    def close(self) -> None:
        """Leave the process group (after a run that ended cleanly on every rank)."""
        if not self.distributed:
            return
        self._collect()
        if self.control is not None:
            dist.destroy_process_group(self.control)
            self.control = None
        if self.owned and dist.is_initialized():
            dist.destroy_process_group()
            self.owned = False


def _rank_seed(seed: int, epoch: int, rank: int) -> int:
    """A seed for rank ``rank`` in ``epoch``, well apart from the run's ``seed`` and each other."""
    digest = hashlib.blake2b(f"zoo-rank-stream:{seed}:{epoch}:{rank}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1  # torch.manual_seed takes up to 2**64 - 1


def _env_int(name: str, default: int | None = None) -> int:
    text = os.environ.get(name)
    if text is None:
        if default is None:
            raise UsageError(f"${name} is not set: start workers with torchrun or zoo run --nproc")
        return default
    try:
        return int(text)
    except ValueError:
        raise UsageError(f"${name} must be an integer, got {text!r}") from None


def _worker_device(spec: str, local_rank: int, world: int) -> torch.device:
    """One device per process: ``cuda:LOCAL_RANK`` when training on CUDA, else the CPU."""
    text = str(spec).strip().lower()
    if world > 1 and re.fullmatch(r"cuda:\d+", text):
        raise UsageError(
            f"--device {spec} names one GPU, but each of the {world} processes trains on its own "
            f"(cuda:LOCAL_RANK): pass --device cuda (or auto)"
        )
    device = resolve_device(spec)  # refuses unknown spellings and absent devices
    if device.type != "cuda" or world == 1:
        return device
    count = torch.cuda.device_count()
    if local_rank >= count:
        raise UsageError(
            f"this is local rank {local_rank}, but only {count} GPU(s) are visible: start at most "
            f"{count} processes per node (one per GPU), or train on the CPU with --device cpu"
        )
    return torch.device("cuda", local_rank)


def _owns(run_dir: Path, run_id: str) -> bool:
    try:
        return (run_dir / MARKER).read_text().strip() == run_id
    except OSError:
        return False


def _worker_config(config: "RunConfig", rank: int, local_world: int) -> "RunConfig":
    """The config as this rank runs it: quiet except on rank 0, and after an elastic restart,
    ``--resume`` of the run directory that an earlier attempt of this job created."""
    restart = _env_int("TORCHELASTIC_RESTART_COUNT", 0)
    max_restarts = _env_int("TORCHELASTIC_MAX_RESTARTS", 0)
    if max_restarts > 0 and config.out is None:
        raise UsageError(
            "with restarts (--max-restarts), pass --out DIR: a restarted group continues the run "
            "it finds there"
        )
    changes: dict[str, Any] = {"nproc": local_world}
    if rank:
        changes["quiet"] = True
    run_id = os.environ.get("TORCHELASTIC_RUN_ID", "")
    if restart and not config.resume and config.out is not None and _owns(Path(config.out).expanduser(), run_id):
        changes["resume"] = True
    if restart and not rank and not config.quiet:
        then = (f"continuing {config.out} from its last checkpoint" if changes.get("resume", config.resume)
                else "starting the run again")
        print(f"zoo: note: the worker group failed and was restarted (restart {restart} of {max_restarts}); {then}",
              file=sys.stderr, flush=True)
    return replace(config, **changes)


def _kill_at(rank: int) -> tuple[int, signal.Signals] | None:
    """``ZOO_TEST_KILL_WORKER=RANK:STEP[:SIGNAL]`` (SIGNAL a name such as SIGINT; SIGKILL when
    left out), honoured on the first attempt only (a test hook)."""
    text = os.environ.get(ENV_TEST_KILL)
    if not text or _env_int("TORCHELASTIC_RESTART_COUNT", 0):
        return None
    try:
        who, step, *name = text.split(":")
        sig = signal.Signals[name[0]] if name else signal.SIGKILL
        if len(name) > 1:
            raise ValueError(text)
        return (int(step), sig) if int(who) == rank else None
    except (ValueError, KeyError):
        raise UsageError(f"{ENV_TEST_KILL} must be RANK:STEP or RANK:STEP:SIGNAL, got {text!r}") from None


def _attempt_store(rank: int, world: int) -> dist.Store:
    """The job's store at ``MASTER_ADDR:MASTER_PORT`` (what ``env://`` would use), with a key
    prefix of its own for each elastic attempt.

    The elastic agent serves one store for the whole job, and ``env://`` reads it unprefixed:
    after a restart, a rank that comes up before the new rank 0 reads the previous attempt's
    keys (the dead workers' addresses) and the new group never forms. (Plain torchrun with
    ``--max-restarts`` shows it too, whenever rank 1 starts faster than rank 0.)
    """
    host, port = os.environ.get("MASTER_ADDR", "127.0.0.1"), _env_int("MASTER_PORT")
    # As env:// does: the agent hosts the store when it says so, rank 0 otherwise.
    served = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
    store = dist.TCPStore(host, port, world, is_master=not served and rank == 0,
                          timeout=_dt.timedelta(minutes=30), multi_tenant=True)
    return dist.PrefixStore(f"zoo/attempt_{_env_int('TORCHELASTIC_RESTART_COUNT', 0)}", store)


def setup(config: "RunConfig") -> tuple[Dist, "RunConfig"]:
    """This process's :class:`Dist` and the config it runs, joining the process group when
    torchrun (or ``zoo run --nproc``) started it as one of several workers.

    Outside a worker, ``nproc`` must be 1: ``run()`` trains in the calling process only.
    """
    if not in_worker():
        if config.nproc != 1:
            raise UsageError(
                f"nproc={config.nproc}: run() trains in this process only; start {config.nproc} "
                f"workers with `zoo run --nproc {config.nproc}` or `torchrun --nproc-per-node {config.nproc} -m zoo run`"
            )
        return Dist(device=resolve_device(config.device)), config
    rank, local_rank, world = (_env_int(name) for name in _WORKER_ENV)
    local_world = _env_int("LOCAL_WORLD_SIZE", world)
    if config.nproc not in (1, local_world):
        raise UsageError(
            f"--nproc {config.nproc}, but this node runs {local_world} worker processes: under "
            f"torchrun, its --nproc-per-node decides; drop --nproc"
        )
    device = _worker_device(config.device, local_rank, world)
    config = _worker_config(config, rank, local_world)
    kill_at = _kill_at(rank)
    if world == 1:  # an elastic job of one process (--max-restarts): nothing to synchronise
        return Dist(device=device, kill_at=kill_at), config
    backend = "nccl" if device.type == "cuda" else "gloo"
    owned = not dist.is_initialized()
    if owned:
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(
            backend,
            store=_attempt_store(rank, world),
            rank=rank,
            world_size=world,
            device_id=device if device.type == "cuda" else None,  # binds NCCL to its GPU now
        )
    else:  # run() called from a script that set up the process group itself
        backend = str(dist.get_backend())
    # Votes and small sums stay on the host: on NCCL they would sync the GPU at every step.
    control = dist.new_group(backend="gloo")
    joined = Dist(device, rank=rank, world=world, local_rank=local_rank, backend=backend, control=control,
                  owned=owned, kill_at=kill_at)
    return joined, config


# -- the worker's exit ----------------------------------------------------------------------------


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _collective_failed(exc: BaseException) -> bool:
    """A collective that failed because another rank died (gloo raises a plain RuntimeError)."""
    if isinstance(exc, dist.DistError):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and any(
        needle in text for needle in ("gloo", "NCCL", "Connection reset by peer", "Connection closed by peer")
    )


def _record_failure(message: str, exit_code: int, cause: str) -> None:
    """Write the failure where torchelastic looks for it ($TORCHELASTIC_ERROR_FILE, the format
    of its ErrorHandler): the launcher reads it back, torchrun shows it in its report."""
    path = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if not path:
        return
    extra = {"timestamp": str(int(time.time())), "zoo": {"exit_code": exit_code, "cause": cause}}
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps({"message": {"message": message, "extraInfo": extra}}))
    except OSError:
        pass  # the exit code still says it failed


def run_worker(train: Callable[[], dict[str, Any]], *, json_summary: bool = False) -> int:
    """``zoo run`` in a worker: train, then report the outcome once for the whole group.

    Rank 0 prints the ``--json`` summary. A failure is recorded for the launcher; under
    ``zoo run --nproc`` the launcher prints it (one line for the group, not one per rank),
    under torchrun each rank prints it, ranks other than 0 prefixed with their rank.
    """
    rank = int(os.environ.get("RANK", "0"))
    debug = os.environ.get("ZOO_DEBUG", "") not in ("", "0")
    from zoo.runner import Interrupted

    try:
        summary = train()
    except ZooError as exc:
        cause = "interrupted" if isinstance(exc, Interrupted) else "error"
        code, message = exc.exit_code, str(exc)
        error: BaseException = exc
    except KeyboardInterrupt as exc:  # a second signal: out at once
        cause, code, message, error = "interrupted", 130, "interrupted", exc
    except Exception as exc:
        error = exc
        code = 1
        if int(os.environ.get("WORLD_SIZE", "1")) > 1 and _collective_failed(exc):
            cause = "peer"
            message = f"another worker process failed or was stopped ({_one_line(exc)[:200]})"
        else:
            cause = "internal"
            message = f"internal error: {_one_line(exc)} (ZOO_DEBUG=1 shows the traceback)"
    else:
        if json_summary and rank == 0:
            print(json.dumps(summary), flush=True)
        return 0
    _record_failure(message, code, cause)
    if debug:
        raise error
    if not os.environ.get(ENV_LAUNCHER):
        print(f"zoo: error: {f'[rank {rank}] ' if rank else ''}{message}", file=sys.stderr, flush=True)
    return code


# -- the launcher -------------------------------------------------------------------------------


class WorkersFailed(ZooError):
    """The worker group failed (after its restarts): carries the chosen worker's exit code."""

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code


def _preflight(config: "RunConfig", nproc: int) -> None:
    """Refuse in this process what every worker would refuse: a bad option or name would
    otherwise cost a start-up of N workers, and again for every restart."""
    from zoo.hparams import parse_hparams
    from zoo.registry import get_registry
    from zoo.runner import _check_config

    _check_config(config)
    registry = get_registry(config.registry_files)
    model = registry.model(config.model)
    entry = registry.optimizer(config.optimizer)
    if config.data or model.default_dataset:
        registry.dataset(config.data or model.default_dataset)
    parse_hparams(config.optimizer, registry.optimizer_factory(config.optimizer), entry.defaults, lr=config.lr, opts=config.opts)
    text = str(config.device).strip().lower()
    if re.fullmatch(r"cuda:\d+", text):
        raise UsageError(
            f"--device {config.device} names one GPU, but --nproc {nproc} runs one process per GPU "
            f"(cuda:0 to cuda:{nproc - 1}): pass --device cuda (or auto)"
        )
    if resolve_device(config.device).type == "cuda" and nproc > torch.cuda.device_count():
        count = torch.cuda.device_count()
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        where = f" (CUDA_VISIBLE_DEVICES={visible})" if visible is not None else ""
        raise UsageError(
            f"--nproc {nproc} needs {nproc} GPUs, one per process, but {count} are visible{where}: "
            f"pass --nproc {count} or fewer, or --device cpu to train {nproc} processes on the CPU"
        )


def _run_dir(config: "RunConfig") -> Path:
    """The run directory, decided once, here, so that every worker (and every restart) gets the
    same ``--out``; the same checks and default name as a single-process run."""
    from zoo.runner import _exists

    if config.out is not None:
        out = Path(config.out).expanduser()
        if config.resume and not out.is_dir():
            why = "does not exist (drop --resume to start a new run there)" if not out.exists() else "is not a run directory"
            raise UsageError(f"nothing to resume: {out} {why}")
        if not config.resume and out.exists():
            raise _exists(out)
        return out
    if config.resume:
        raise UsageError("--resume needs --out DIR: the run directory to continue")
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = Path("runs") / f"{config.model}-{config.optimizer}-{stamp}"
    for out in (base, *(base.with_name(f"{base.name}-{i}") for i in range(2, 100))):
        if not out.exists():
            return out
    raise UsageError("too many runs started this second: pass --out DIR")


def _rendezvous_endpoint() -> str:
    """``127.0.0.1:0`` (the agent's store binds a free port itself, so no other process can
    take it in between), or ``$MASTER_PORT`` when the user chose one, checked to be free."""
    text = os.environ.get("MASTER_PORT", "").strip()
    if not text:
        return "127.0.0.1:0"
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise UsageError(f"MASTER_PORT must be a port number (1-65535), got {text!r}")
    port = int(text)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # As the store's own socket would: a port in TIME_WAIT is free, a listening one is not.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("", port))
        except OSError as exc:
            raise UsageError(
                f"port {port} (MASTER_PORT) is busy: {exc.strerror or exc}; unset MASTER_PORT to let "
                f"zoo pick a free port, or choose another"
            ) from None
    return f"127.0.0.1:{port}"


def _quiet_torchelastic() -> None:
    # The agent logs each step of a restart or shutdown as warnings; the zoo says what matters
    # in its own words (ZOO_DEBUG=1 keeps torch's logs).
    for name in ("torch.distributed.elastic", "torch.distributed.launcher"):
        logger = logging.getLogger(name)
        logger.addHandler(logging.NullHandler())
        logger.propagate = False


def _error_data(failure: Any) -> tuple[str | None, Mapping[str, Any]]:
    data = failure.error_file_data if isinstance(failure.error_file_data, Mapping) else {}
    message = data.get("message")
    if isinstance(message, Mapping):
        extra = message.get("extraInfo") or {}
        return str(message.get("message")), extra.get("zoo") or {}
    return (str(message) if message and message != "<NONE>" else None), {}


_CAUSES = ("error", "internal", "killed", "interrupted", "peer", "exit")  # most telling first


def _root_failure(failures: Mapping[int, Any], out: Path, max_restarts: int) -> WorkersFailed:
    """One error for the group: the most telling failure among the ranks of the last attempt
    (a zoo error over a crash over a rank that only saw another one die)."""
    found: list[tuple[int, int, str, int]] = []
    for rank, failure in failures.items():
        message, zoo = _error_data(failure)
        if message and zoo:
            cause, code = str(zoo.get("cause", "error")), int(zoo.get("exit_code", 1))
        elif failure.exitcode < 0:
            cause, code = "killed", 1
            message = f"worker rank {rank} (pid {failure.pid}) was killed by {failure.signal_name()}"
        else:
            cause, code = "exit", 1
            message = message or f"worker rank {rank} (pid {failure.pid}) exited with code {failure.exitcode}"
        found.append((_CAUSES.index(cause) if cause in _CAUSES else len(_CAUSES), rank, message, code))
    _, _, message, code = min(found, key=lambda item: item[:2])
    if code not in (2, 130, 143):  # a run-time failure: say what was tried and what is left
        if max_restarts:
            message += f" (after {max_restarts} restart{'s' if max_restarts > 1 else ''})"
        if (out / "last.pt").exists():
            message += f"; {out / 'last.pt'} holds the last checkpoint: continue with --resume --out {out}"
    return WorkersFailed(message, code)


def _interrupted(sig: signal.Signals, logs: Path, out: Path) -> ZooError:
    """The group was stopped by a signal to this process: rank 0's own words when it wrote them."""
    from zoo.runner import Interrupted

    message = f"stopped by {sig.name}; continue with --resume --out {out}"
    attempts = sorted(logs.glob("*/attempt_*"), key=lambda p: int(p.name.rpartition("_")[2]))
    if attempts:
        try:
            data = json.loads((attempts[-1] / "0" / "error.json").read_text())
            if data["message"]["extraInfo"]["zoo"]["cause"] == "interrupted":
                message = data["message"]["message"]
        except (OSError, ValueError, KeyError, TypeError):
            pass
    return Interrupted(message, sig)


def launch(argv: Sequence[str], config: "RunConfig", *, max_restarts: int = 0) -> int:
    """``zoo run ... --nproc N``: run ``python -m zoo <argv>`` in ``config.nproc`` workers under
    torch's elastic agent, on this machine, restarting the group up to ``max_restarts`` times.

    Returns 0 when every worker finished; otherwise raises one :class:`ZooError` for the group
    (its exit code is the failing worker's, or 130/143 when this process was interrupted).
    """
    from torch.distributed.elastic.multiprocessing import DefaultLogsSpecs, SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.elastic.rendezvous import RendezvousError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    nproc = config.nproc
    _preflight(config, nproc)
    out = _run_dir(config)
    endpoint = _rendezvous_endpoint()
    args = ["-m", "zoo", *argv] + ([] if config.out is not None else ["--out", str(out)])
    if os.environ.get("ZOO_DEBUG", "") in ("", "0"):
        _quiet_torchelastic()

    env = {ENV_LAUNCHER: "1"}
    if "OMP_NUM_THREADS" not in os.environ:
        # As torchrun does, keep N processes from each starting a thread per core; but give
        # CPU training the cores there are, shared out, rather than torchrun's flat 1.
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        env["OMP_NUM_THREADS"] = str(max(1, cores // nproc))
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)  # the agent passes its own environment on to the workers
    logs = Path(tempfile.mkdtemp(prefix="zoo-elastic-"))
    launch_config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=nproc,
        run_id=uuid.uuid4().hex,  # what a restarted group finds in the run directory's MARKER
        rdzv_backend="c10d",
        rdzv_endpoint=endpoint,
        max_restarts=max_restarts,
        monitor_interval=0.1,
        logs_specs=DefaultLogsSpecs(log_dir=str(logs)),
        shutdown_timeout=SHUTDOWN_TIMEOUT_S,
    )
    try:
        elastic_launch(launch_config, sys.executable)(*args)
    except ChildFailedError as exc:
        raise _root_failure(exc.failures, out, max_restarts) from None
    except SignalException as exc:
        raise _interrupted(exc.sigval, logs, out) from None
    except RendezvousError as exc:
        raise RunError(f"the {nproc} worker processes could not meet at {endpoint}: {_one_line(exc)}") from exc
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        import shutil

        shutil.rmtree(logs, ignore_errors=True)
    return 0
