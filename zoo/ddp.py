"""Data-parallel training, the worker's side: one of N processes started by ``zoo run --nproc N``
(see :mod:`zoo.launch`) or by ``torchrun --nproc-per-node N -m zoo run``.

A worker reads everything from torchrun's environment (``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``,
``LOCAL_WORLD_SIZE``, ``TORCHELASTIC_*``), never from the launcher that started it.

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
import os
import re
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from zoo.config import RunConfig
from zoo.devices import resolve_device
from zoo.errors import Interrupted, UsageError, ZooError, debug_enabled, error_report, one_line, report_prefix
from zoo.rundir import RunDir

__all__ = ["Dist", "in_worker", "setup", "run_worker", "ENV_LAUNCHER", "MARKER"]

ENV_LAUNCHER = "ZOO_LAUNCHER"  # set by `zoo run --nproc` for its workers: it reports their errors itself
MARKER = ".zoo-elastic-run-id"  # in a run directory made by an elastic job: that job's run id
_WORKER_ENV = ("RANK", "LOCAL_RANK", "WORLD_SIZE")


def in_worker() -> bool:
    """Whether this process was started by torchrun or the elastic agent (``zoo run --nproc``)."""
    return all(name in os.environ for name in _WORKER_ENV)


# -- the worker's view ------------------------------------------------------------------------


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

    def rank_rng_states(self, extra: Mapping[str, torch.Tensor] | None = None) -> list[dict[str, torch.Tensor]] | None:
        """Every rank's random state, gathered (a collective: all ranks call it at the same
        step), with ``extra`` streams of its own (the augmentations'). A run stopped mid-epoch
        saves them, so that each rank continues its own streams."""
        if not self.distributed:
            return None
        mine = {**(extra or {}), "torch": torch.get_rng_state()}
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
        mine = states[self.rank]
        if self.device.type == "cuda" and "cuda" not in mine:
            # Saved off the GPU: this rank's CUDA stream would otherwise be rank 0's, restored
            # from the checkpoint, and draw rank 0's dropout masks.
            self.fork_rng(seed, epoch)
        torch.set_rng_state(mine["torch"])
        if "cuda" in mine and self.device.type == "cuda":
            torch.cuda.set_rng_state(mine["cuda"], self.device)

    # -- agreeing on when to stop

    def stop_vote(self, local: bool) -> bool:
        """Called after every training step: whether all ranks agree to stop now.

        ``local`` is this rank's wish (a signal arrived). The vote runs asynchronously on the
        gloo group and is read one step later, so it never stalls a step (nor syncs a GPU);
        every rank reads the same result after the same step.
        """
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

    def new_run_dir(self, create: Callable[[], RunDir]) -> RunDir:
        """Rank 0 creates the run directory (``create()``); the others get its path, read-only.

        In an elastic job, rank 0 also marks the directory with the job's run id, so that a
        restarted group knows the directory is its own to resume (see :func:`setup`).
        """
        run_dir = create() if self.is_main else None
        run_id = os.environ.get("TORCHELASTIC_RUN_ID")
        if run_dir is not None and run_id:
            (run_dir.path / MARKER).write_text(run_id + "\n")
        if not self.distributed:
            assert run_dir is not None
            return run_dir
        shared = [str(run_dir.path) if run_dir is not None else None]
        dist.broadcast_object_list(shared, src=0, group=self.control)
        return run_dir or RunDir(Path(shared[0]), writer=False)

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
    """One device per process: ``cuda:LOCAL_RANK`` when training on CUDA, else the CPU.

    A scheduler that gives each process a GPU of its own (its own ``CUDA_VISIBLE_DEVICES``)
    leaves each one GPU to see, ``cuda:0``, whatever its local rank: with exactly one visible,
    that is the one. (Processes that all see the same single GPU are refused by NCCL, which
    names the duplicate GPU, when the group forms.)
    """
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
    if count == 1:
        return torch.device("cuda", 0)
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


def _worker_config(config: RunConfig, rank: int, local_world: int) -> RunConfig:
    """The config as this rank runs it: quiet except on rank 0, and after an elastic restart,
    ``--resume`` of the run directory that an earlier attempt of this job created."""
    restart = _env_int("TORCHELASTIC_RESTART_COUNT", 0)
    max_restarts = _env_int("TORCHELASTIC_MAX_RESTARTS", 0)
    if max_restarts > 0 and config.out is None:
        raise UsageError(
            "with restarts (--max-restarts), pass --out DIR: a restarted group continues the run it finds there"
        )
    changes: dict[str, Any] = {"nproc": local_world}
    if rank:
        changes["quiet"] = True
    run_id = os.environ.get("TORCHELASTIC_RUN_ID", "")
    if restart and not config.resume and config.out is not None and _owns(Path(config.out).expanduser(), run_id):
        changes["resume"] = True
    if restart and not rank and not config.quiet:
        then = (
            f"continuing {config.out} from its last checkpoint"
            if changes.get("resume", config.resume)
            else "starting the run again"
        )
        print(
            f"zoo: note: the worker group failed and was restarted (restart {restart} of {max_restarts}); {then}",
            file=sys.stderr,
            flush=True,
        )
    return replace(config, **changes)


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
    store = dist.TCPStore(
        host, port, world, is_master=not served and rank == 0, timeout=_dt.timedelta(minutes=30), multi_tenant=True
    )
    return dist.PrefixStore(f"zoo/attempt_{_env_int('TORCHELASTIC_RESTART_COUNT', 0)}", store)


def setup(config: RunConfig) -> tuple[Dist, RunConfig]:
    """This process's :class:`Dist` and the config it runs, joining the process group when
    torchrun (or ``zoo run --nproc``) started it as one of several workers.

    Outside a worker, ``nproc`` must be 1: ``run()`` trains in the calling process only.
    """
    if not in_worker():
        if config.nproc != 1:
            raise UsageError(
                f"nproc={config.nproc}: run() trains in this process only; start {config.nproc} "
                f"workers with `zoo run --nproc {config.nproc}` or "
                f"`torchrun --nproc-per-node {config.nproc} -m zoo run`"
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
    if world == 1:  # an elastic job of one process (--max-restarts): nothing to synchronise
        return Dist(device=device), config
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
    joined = Dist(device, rank=rank, world=world, local_rank=local_rank, backend=backend, control=control, owned=owned)
    return joined, config


# -- the worker's exit ----------------------------------------------------------------------------


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


def _cause(exc: BaseException) -> str:
    """How a worker failed, for the launcher's triage (see ``zoo.launch.root_failure``)."""
    if isinstance(exc, Interrupted | KeyboardInterrupt):
        return "interrupted"
    if isinstance(exc, ZooError):
        return "error"
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and _collective_failed(exc):
        return "peer"
    return "internal"


def run_worker(train: Callable[[], dict[str, Any]], *, json_summary: bool = False) -> int:
    """``zoo run`` in a worker: train, then report the outcome once for the whole group.

    Rank 0 prints the ``--json`` summary. A failure is recorded for the launcher; under
    ``zoo run --nproc`` the launcher prints it (one line for the group, not one per rank),
    under torchrun each rank prints it, ranks other than 0 prefixed with their rank.
    """
    rank = int(os.environ.get("RANK", "0"))
    try:
        summary = train()
    except (Exception, KeyboardInterrupt) as exc:  # KeyboardInterrupt: a second signal, out at once
        cause = _cause(exc)
        code, message = error_report(exc)
        if cause == "peer":
            message = f"another worker process failed or was stopped ({one_line(exc)[:200]})"
        _record_failure(message, code, cause)
        if debug_enabled():
            raise
        if not os.environ.get(ENV_LAUNCHER):
            print(f"{report_prefix(exc)} {f'[rank {rank}] ' if rank else ''}{message}", file=sys.stderr, flush=True)
        return code
    if json_summary and rank == 0:
        print(json.dumps(summary), flush=True)
    return 0
