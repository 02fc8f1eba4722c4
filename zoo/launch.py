"""Data-parallel training, the launcher's side: ``zoo run ... --nproc N [--max-restarts K]``.

The zoo brings no launcher of its own: this runs torch's elastic agent (the engine behind
``torchrun``) in the ``zoo run`` process. The agent starts N workers, each ``python -m zoo run``
with the same command line (:mod:`zoo.ddp` is their side), and restarts the whole group after a
failure while ``--max-restarts`` allows. When the group fails, :func:`root_failure` picks the
one error that explains it.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import socket
import sys
import tempfile
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from zoo.config import RunConfig, check_config
from zoo.ddp import ENV_LAUNCHER, in_worker
from zoo.devices import resolve_device
from zoo.errors import Interrupted, RunError, UsageError, ZooError, debug_enabled, one_line
from zoo.rundir import default_run_dir, exists_error, resume_error

__all__ = ["should_launch", "launch", "root_failure", "WorkersFailed", "SHUTDOWN_TIMEOUT_S"]

# What the agent gives workers after a signal, to finish their step and checkpoint, before it
# SIGKILLs them; also how long a worker stuck in a collective with a dead peer can hold up a restart.
SHUTDOWN_TIMEOUT_S = 60


def should_launch(nproc: int, max_restarts: int) -> bool:
    """Whether ``zoo run`` should start workers rather than train in this process."""
    return not in_worker() and (nproc > 1 or max_restarts > 0)


class WorkersFailed(ZooError):
    """The worker group failed (after its restarts): carries the chosen worker's exit code."""

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code


def _preflight(config: RunConfig, nproc: int) -> None:
    """Refuse in this process what every worker would refuse: a bad option or name would
    otherwise cost a start-up of N workers, and again for every restart."""
    from zoo.hparams import parse_hparams
    from zoo.registry import get_registry

    check_config(config)
    registry = get_registry(config.registry_files)
    model = registry.model(config.model)
    entry = registry.optimizer(config.optimizer)
    if config.data or model.default_dataset:
        registry.dataset(config.data or model.default_dataset)
    parse_hparams(
        config.optimizer, registry.optimizer_factory(config.optimizer), entry.defaults, lr=config.lr, opts=config.opts
    )
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


def _run_dir(config: RunConfig) -> Path:
    """The run directory, decided once, here, so that every worker (and every restart) gets the
    same ``--out``; the same checks and default name as a single-process run."""
    out = Path(config.out).expanduser() if config.out is not None else None
    if config.resume:
        problem = resume_error(out)
        if problem is not None:
            raise problem
    if out is not None:
        if not config.resume and out.exists():
            raise exists_error(out)
        return out
    for out in default_run_dir(config.model, config.optimizer):
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


def root_failure(failures: Mapping[int, Any], out: Path, max_restarts: int) -> WorkersFailed:
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


def launch(argv: Sequence[str], config: RunConfig, *, max_restarts: int = 0) -> int:
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
    if not debug_enabled():
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
        raise root_failure(exc.failures, out, max_restarts) from None
    except SignalException as exc:
        raise _interrupted(exc.sigval, logs, out) from None
    except RendezvousError as exc:
        raise RunError(f"the {nproc} worker processes could not meet at {endpoint}: {one_line(exc)}") from exc
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        shutil.rmtree(logs, ignore_errors=True)
    return 0
