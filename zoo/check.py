"""``zoo check``: one training step for every model x optimizer pair, on synthetic data.

Each pair is first put through the preflight (a misfit or a pair that cannot fit in memory is
``incompatible`` without running anything), then takes its step in a forked child process
that is killed at the pair's deadline: one L-BFGS or Muon step on VGG16 can take minutes, and a
check must not wait for it. The model is built once in the parent; each child inherits it
copy-on-write and updates only its own copy, so every optimizer starts from the same initial
weights without a state_dict copy and the parent's model is never touched.

GNU OpenMP, torch's CPU thread pool, is not fork-safe: once a process has run a parallel region,
a forked child that starts one waits forever for pool threads it did not inherit. So the parent
runs single-threaded while checking, and a throwaway child probes whether children can use all
threads (they can unless something earlier in this process already ran multi-threaded ops; then
they use one).
"""

from __future__ import annotations

import math
import multiprocessing
import time
import warnings
from collections.abc import Callable
from typing import Any, NoReturn

import torch
from torch import nn

from zoo.eager import eager_step, without_dynamo
from zoo.entries import ModelEntry, OptimizerEntry
from zoo.errors import RunError, UsageError, ZooError, one_line
from zoo.preflight import IncompatibleError, WontFitError, preflight
from zoo.registry import Registry, get_registry
from zoo.steps import train_step

__all__ = ["run_check", "BATCH_SIZE", "NUM_CLASSES"]

BATCH_SIZE = 2
NUM_CLASSES = 10
_PROBE_S = 1.0  # a healthy probe takes milliseconds; a deadlocked one never ends (slow: one thread)
_fork_unsafe = False  # this process has run a multi-threaded OpenMP region
# Below this many parameters a batch-2 step is milliseconds of work and a second thread only
# adds synchronisation: on the 2-core VM a Tudui step took 10 ms on one thread and up to 0.5 s
# on two (which made L-BFGS's 20 evaluations overrun the budget).
_SMALL_MODEL = 1_000_000

Row = dict[str, Any]


_REASON_LIMIT = 500  # characters of a row's reason: a whole traceback's message would swamp the table


def _reason(exc: BaseException) -> str:
    """A row's reason: one line, at most ``_REASON_LIMIT`` characters."""
    # the zoo's own messages already say what went wrong: no type name in front of them
    text = " ".join(str(exc).split()) if isinstance(exc, ZooError) else one_line(exc)
    return text if len(text) <= _REASON_LIMIT else text[: _REASON_LIMIT - 3] + "..."


def _row(model: str, optimizer: str, status: str, reason: str | None, seconds: float) -> Row:
    return {"model": model, "optimizer": optimizer, "status": status, "reason": reason, "seconds": round(seconds, 3)}


def _probe(threads: int) -> None:
    torch.set_num_threads(threads)
    torch.ones(1 << 20).add_(1)  # an elementwise parallel_for
    torch.ones(512, 512) @ torch.ones(512, 512)  # BLAS's own use of the pool


def _child_threads(threads: int) -> int:
    """How many intra-op threads a forked child can use without deadlocking."""
    global _fork_unsafe
    if threads <= 1 or _fork_unsafe:
        return 1
    probe = multiprocessing.get_context("fork").Process(target=_probe, args=(threads,), daemon=True)
    probe.start()
    probe.join(_PROBE_S)
    if probe.is_alive():
        probe.kill()
        probe.join()
    _fork_unsafe = probe.exitcode != 0  # once the pool exists it stays: no need to probe again
    return 1 if _fork_unsafe else threads


def _warm_up(train_step: Callable[..., torch.Tensor]) -> None:
    """The first optimizer step of a process imports some 900 modules (2 s here): take it once
    in the parent, so that every child inherits them instead of paying again."""
    tiny = nn.Linear(2, 2)
    optimizer = torch.optim.SGD(tiny.parameters())
    eager_step(optimizer)  # as the children step theirs: without importing torch._dynamo
    train_step(tiny, optimizer, nn.CrossEntropyLoss(), torch.zeros(1, 2), torch.zeros(1, dtype=torch.long))


def _step(
    conn: Any,
    threads: int,
    train_step: Callable[..., torch.Tensor],
    model: nn.Module,
    factory: Any,
    hparams: dict[str, Any],
    inputs: torch.Tensor,
    targets: torch.Tensor,
) -> None:
    """The child's work: build the optimizer, take one step, send ``(status, reason)``."""
    try:
        torch.set_num_threads(threads)
        warnings.simplefilter("ignore")  # the rows are the output; torch's warnings would garble them
        optimizer = factory([p for p in model.parameters() if p.requires_grad], **hparams)
        eager_step(optimizer)  # as a run steps it (zoo/runner.py): no torch._dynamo import
        loss = float(train_step(model, optimizer, nn.CrossEntropyLoss(), inputs, targets))
        result = ("ok", None) if math.isfinite(loss) else ("error", f"the loss is {loss} on the first step")
    except BaseException as exc:  # anything the step raises is this pair's result
        result = ("error", _reason(exc))
    conn.send(result)
    conn.close()


def _died(exitcode: int | None) -> str:
    if exitcode == -9:
        return "the step's process was killed (SIGKILL: out of memory?)"
    return f"the step's process exited with code {exitcode} without a result"


def _nothing_matches(registry: Registry, kind: str, pattern: str) -> NoReturn:
    """A glob that matches nothing says so; a plain name is an unknown name, reported as the
    registry reports one everywhere else (with the closest name of the same kind)."""
    if not any(c in pattern for c in "*?["):
        registry.get(kind, pattern)  # raises UnknownNameError: the pattern matched no name exactly
    raise UsageError(f"no {kind} matches '{pattern}' (zoo list {kind}s)")


def _run_pair(
    model: nn.Module,
    entry: OptimizerEntry,
    registry: Registry,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    budget_s: float,
    threads: int,
    train_step: Callable[..., torch.Tensor],
) -> tuple[str, str | None]:
    try:
        name = registry.shown_name(entry)  # a shadowed entry is reached as PLUGIN/NAME
        factory = registry.optimizer_factory(name)
        hparams = dict(entry.defaults)
        preflight(model, name, factory, hparams, "cpu")
    except (IncompatibleError, WontFitError) as exc:
        return "incompatible", str(exc)
    except Exception as exc:
        return "error", _reason(exc)

    context = multiprocessing.get_context("fork")
    receive, send = context.Pipe(duplex=False)
    child = context.Process(
        target=_step, args=(send, threads, train_step, model, factory, hparams, inputs, targets), daemon=True
    )
    deadline = time.monotonic() + budget_s
    child.start()
    send.close()  # keep only the child's end open, so its death reads as EOF
    try:
        if not receive.poll(max(0.0, deadline - time.monotonic())):
            return "timeout", f"no result within the {budget_s:g} s budget; the step was stopped"
        try:
            return receive.recv()
        except EOFError:
            child.join()
            return "error", _died(child.exitcode)
    finally:
        if child.is_alive():
            child.kill()
        child.join()
        receive.close()


def run_check(
    *,
    models: str = "*",
    optimizers: str = "*",
    budget_s: float = 5.0,
    registry: Registry | None = None,
    on_row: Callable[[Row], None] | None = None,
    on_start: Callable[[int, int], None] | None = None,
) -> list[Row]:
    """One training step (batch of 2 random inputs in the model's input size, random labels
    below 10) for every model x optimizer pair whose names match the globs.

    Returns rows ``{"model", "optimizer", "status", "reason", "seconds"}`` with status ``ok``,
    ``incompatible`` (refused by the preflight: the reason says why), ``timeout`` (no result
    within ``budget_s``; the step is killed, not waited for) or ``error`` (the exception).
    ``on_row`` is called with each row as soon as its pair finishes; ``on_start`` first, with the
    numbers of models and optimizers matched.
    """
    registry = registry or get_registry()
    model_entries = list(registry.entries("model", models))
    optimizer_entries = list(registry.entries("optimizer", optimizers))
    if not model_entries:
        _nothing_matches(registry, "model", models)
    if not optimizer_entries:
        _nothing_matches(registry, "optimizer", optimizers)
    if not budget_s > 0:
        raise UsageError(f"the time budget must be positive, got {budget_s:g} s")
    if "fork" not in multiprocessing.get_all_start_methods():
        raise RunError("zoo check runs each step in a forked process, and this platform cannot fork")
    if on_start is not None:
        on_start(len(model_entries), len(optimizer_entries))

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        child_threads = _child_threads(threads)
        # As a run does (zoo/runner.py): building, zeroing and stepping optimizers imports no
        # torch._dynamo (2 s); the children, forked inside, inherit it.
        with without_dynamo():
            _warm_up(train_step)
            return _check_all(registry, model_entries, optimizer_entries, budget_s, child_threads, train_step, on_row)
    finally:
        torch.set_num_threads(threads)


def _check_all(
    registry: Registry,
    model_entries: list[ModelEntry],
    optimizer_entries: list[OptimizerEntry],
    budget_s: float,
    threads: int,
    train_step: Callable[..., torch.Tensor],
    on_row: Callable[[Row], None] | None,
) -> list[Row]:
    rows: list[Row] = []

    def emit(row: Row) -> None:
        rows.append(row)
        if on_row is not None:
            on_row(row)

    for model_entry in model_entries:
        model = None  # drop the previous model before building the next: VGG16 is 0.5 GiB
        start = time.perf_counter()
        try:
            model = registry.build_model(registry.shown_name(model_entry), NUM_CLASSES)
        except Exception as exc:
            reason = f"the model failed to build: {_reason(exc)}"
            for optimizer_entry in optimizer_entries:
                emit(_row(registry.shown_name(model_entry), registry.shown_name(optimizer_entry), "error", reason,
                          time.perf_counter() - start))  # fmt: skip
            continue
        model.train()
        model_threads = threads if sum(p.numel() for p in model.parameters()) >= _SMALL_MODEL else 1
        generator = torch.Generator().manual_seed(0)
        inputs = torch.randn((BATCH_SIZE, *model_entry.input_size), generator=generator)
        targets = torch.randint(0, NUM_CLASSES, (BATCH_SIZE,), generator=generator)
        for optimizer_entry in optimizer_entries:
            start = time.perf_counter()
            status, reason = _run_pair(
                model, optimizer_entry, registry, inputs, targets, budget_s, model_threads, train_step
            )
            emit(_row(registry.shown_name(model_entry), registry.shown_name(optimizer_entry), status, reason,
                      time.perf_counter() - start))  # fmt: skip
    return rows
