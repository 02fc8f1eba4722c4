"""The uniform runner: train any registered model with any registered optimizer on any dataset.

This is the seed's full training routine (sections 27-31) made general. :func:`run` reads as the
course's script does: prepare (model, loss, optimizer and data on the device, the run directory),
then for each epoch train, validate, record and checkpoint. What a long run needs besides lives
in the parts it calls: :mod:`zoo.rundir` (atomic files, who writes), :mod:`zoo.resume`,
:mod:`zoo.progress`, :mod:`zoo.events` (signals in, plugin events out), :mod:`zoo.console` and
:mod:`zoo.ddp` (distributed training, which the loop names only through ``job.dist``).
"""

from __future__ import annotations

import functools
import os
import random
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TextIO

import torch
from torch import nn

from zoo import __version__
from zoo.checkpoint import (
    capture_rng,
    load_checkpoint,
    load_state_dict_strict,
    make_checkpoint,
    provenance,
    restore_rng,
)
from zoo.config import RunConfig, check_config, default_data_dir
from zoo.console import Console
from zoo.data import (
    TensorImageDataset,
    adapt_error,
    dataset_classes,
    dataset_input_size,
    iterate_batches,
    limit,
    normalisation,
    unreadable_images,
    without_files,
)
from zoo.ddp import Dist, setup
from zoo.devices import bf16_problem, resolve_device
from zoo.eager import eager_step, without_dynamo
from zoo.entries import too_small
from zoo.errors import Interrupted, RunError, UsageError, ZooError, one_line
from zoo.events import RunEvents, StopControl
from zoo.extras import Extras, build_extras
from zoo.hparams import parse_hparams
from zoo.plugins import get_plugin_host
from zoo.preflight import activation_bytes_per_sample, available_memory, preflight, validation_batch_size
from zoo.progress import Progress
from zoo.registry import Registry, get_registry, model_from_checkpoint
from zoo.resume import changed_hparams, check_resume, resumed_config
from zoo.rundir import RunDir, exists_error
from zoo.runs import read_config
from zoo.steps import accumulation_step, evaluate, first_nonfinite, train_step
from zoo.weights import base_weights

__all__ = [
    "RunConfig",
    "Run",
    "Interrupted",
    "run",
    "train_epoch",
    "train_step",
    "evaluate",
    "validate",
    "default_data_dir",
    "CHECK_EVERY",
]

CHECK_EVERY = 50  # steps between NaN checks: one host sync per window, not per step
VAL_BATCH_SIZE = 256  # validation keeps no activations for backward, so larger batches are cheap


@dataclass
class Run:
    """What the event hooks see of a run (``on_run_start(run)`` and the others)."""

    run_dir: Path
    config: RunConfig
    model: nn.Module  # the bare module (not a DDP or compiled wrapper)
    optimizer: torch.optim.Optimizer
    start_epoch: int  # epochs already completed when this process started
    device: torch.device
    spec: dict[str, Any]
    progress: Progress
    dataset: str = ""
    train_samples: int = 0
    val_samples: int = 0
    where: str = ""  # "cpu", or "2 processes on cpu (gloo)"

    @property
    def epoch(self) -> int:
        """Epochs completed so far (the one a checkpoint holds, when ``on_checkpoint`` is called)."""
        return self.progress.epoch


@dataclass
class Job:
    """Everything :func:`prepare` builds for one run, and what the loop changes as it goes."""

    config: RunConfig
    dist: Dist
    run_dir: RunDir
    run: Run
    forward: nn.Module  # what trains: the model, maybe in DDP and torch.compile
    criterion: nn.Module
    train_criterion: nn.Module  # distributed: its value is the mean over every rank's batch
    generator: torch.Generator  # the batch order's own stream, saved in every checkpoint
    train_batches: Any
    val_batches: Any
    step_sizes: list[int]  # samples per step, all ranks together
    events: RunEvents
    console: Console | None
    provenance: dict[str, Any]
    amp_dtype: torch.dtype | None = None
    channels_last: bool = False
    partial: dict[str, Any] | None = None  # where a stopped epoch stopped (from the checkpoint)
    resumed_rng: dict[str, Any] | None = None
    extras: Extras | None = None  # the recipe: schedule, augmentations, EMA, accumulation, clipping
    stopped_early: bool = False  # --patience ran out

    @property
    def progress(self) -> Progress:
        return self.run.progress

    def save(self, path: Path, partial: dict[str, Any] | None = None) -> None:
        """Checkpoint the run as it is now (mid-epoch, with ``partial``) to ``path``."""
        run = self.run
        checkpoint = make_checkpoint(
            run.model,
            run.optimizer,
            epoch=run.epoch,
            spec=run.spec,
            metrics=self.progress.metrics(),
            rng=capture_rng(self.generator, self.run.device),
            partial=partial,
            provenance=self.provenance,
        )
        checkpoint.update(self.extras.state())
        if self.run_dir.save_checkpoint(path, checkpoint):
            self.events.emit("on_checkpoint", run=run, path=str(path))

    def summary(self) -> dict[str, Any]:
        """The ``zoo run --json`` object."""
        config, progress, run_dir = self.config, self.progress.summary(), self.run_dir
        summary = {
            "run_dir": str(run_dir.path),
            "model": config.model,
            "optimizer": config.optimizer,
            "dataset": self.run.dataset,
            "device": str(self.run.device),
            "epochs": progress["epochs"],
            "train_loss": progress["train_loss"],
            "val_loss": progress["val_loss"],
            "val_accuracy": progress["val_accuracy"],
            "best_val_accuracy": progress["best_val_accuracy"],
            "last_checkpoint": str(run_dir.last) if run_dir.last.exists() else None,
            "best_checkpoint": str(run_dir.best) if run_dir.best.exists() else None,
            "images_per_second": progress["images_per_second"],
        }
        if config.patience is not None:  # --patience: whether it ran out before --epochs
            summary["stopped_early"] = self.stopped_early
        return summary


# -- the run ------------------------------------------------------------------------------------


def run(config: RunConfig, progress_stream: TextIO | None = None) -> dict[str, Any]:
    """Train ``config.model`` with ``config.optimizer``, validating and checkpointing each epoch.

    Returns the ``zoo run --json`` summary. Raises :class:`UsageError` (bad input, exit 2),
    :class:`RunError` (NaN loss, I/O, exit 1) or :class:`Interrupted` (exit 130/143).
    """
    check_config(config)
    # Eager (no --compile): the optimizer is built, stepped and saved without importing
    # torch._dynamo, 2 s and 150 MiB that nothing here would use (zoo/eager.py).
    with without_dynamo(not config.compile):
        job = prepare(config, progress_stream)  # refuses what it can before writing anything
        with job.train_batches, job.val_batches:  # their DataLoader workers end with the run
            return train(job)


def train(job: Job) -> dict[str, Any]:
    """The prepared run's epochs: train, validate, record and checkpoint each; the summary."""
    stop = StopControl(job.dist)
    with job.events.plugin(job.console, "console"), outcome(job, stop), stop:
        job.events.emit("on_run_start", run=job.run)
        for epoch in range(job.run.start_epoch + 1, job.config.epochs + 1):
            started = time.perf_counter() - (job.partial["seconds"] if _resumes(job, epoch) else 0.0)
            train_loss = train_epoch(job, epoch, stop, since=started)
            result = validate_epoch(job)
            line = {"epoch": epoch, "train_loss": train_loss, "val_loss": result["val_loss"],
                    "val_accuracy": result["val_accuracy"], "seconds": round(time.perf_counter() - started, 3),
                    "lr": _lr(job)}  # fmt: skip
            job.extras.after_epoch(result["val_loss"])  # a per-epoch schedule steps
            record_epoch(job, line)
            if stop.after_epoch() and epoch < job.config.epochs:  # the signal came during validation
                _end_workers(job)
                raise Interrupted(
                    f"stopped by {stop.name} after epoch {epoch}; continue with --resume --out {job.run_dir.path}",
                    stop.signum or signal.SIGINT,
                )
            if _out_of_patience(job) and epoch < job.config.epochs:
                job.stopped_early = True
                break
    return job.summary()


def _out_of_patience(job: Job) -> bool:
    """``--patience N``: val_accuracy has not improved for N epochs."""
    patience, progress = job.config.patience, job.progress
    return patience is not None and progress.epoch - (progress.best_epoch or 0) >= patience


def validate_epoch(job: Job) -> dict[str, Any]:
    """The seed's validation pass. Distributed: each rank validates its shard with rank 0's
    weights and buffers, and the sums are added up."""
    # Under --compile, validation runs the eager module: inference mode and the validation batch
    # would each cost the compiled one a recompile, for a pass that is a small part of an epoch.
    averaged = job.extras.evaluated()  # --ema: the averaged weights are the ones validated and kept
    target = averaged if averaged is not None else job.run.model
    return evaluate(
        job.dist.for_evaluation(target if averaged is not None or job.config.compile else job.forward, target),
        job.val_batches,
        job.criterion,
        amp_dtype=job.amp_dtype,
        channels_last=job.channels_last,
        reduce=job.dist.sum_metrics if job.dist.distributed else None,
    )


def record_epoch(job: Job, line: dict[str, Any]) -> None:
    """A validated epoch: into the history, the checkpoints, ``metrics.jsonl`` and the hooks."""
    improved = job.progress.record(line)
    # best.pt before last.pt: once last.pt says "epoch N", best.pt is up to date with it.
    if improved:
        job.save(job.run_dir.best)
    job.save(job.run_dir.last)
    job.run_dir.write_metrics(job.progress.history)
    job.events.emit("on_epoch_end", run=job.run, epoch=line["epoch"], metrics=line)


@contextmanager
def outcome(job: Job, stop: StopControl) -> Iterator[None]:
    """Record how the run ends in ``status.json`` and tell the plugins (``on_run_end``).

    A second signal (``KeyboardInterrupt``) leaves at once, with the previous checkpoint intact.
    """
    job.run_dir.write_status("running", epochs_done=job.run.epoch)
    status, error = "failed", None
    try:
        yield
        status = "finished"
    except KeyboardInterrupt:
        status = "interrupted"
        raise Interrupted(
            f"stopped at once by a second {stop.name}; {_kept(job)}", stop.signum or signal.SIGINT
        ) from None
    except Interrupted:
        status = "interrupted"
        raise
    except Exception as exc:
        killed = _killed_worker(exc)
        if killed is not None and stop.signum is not None:
            # SIGTERM to the whole process group (systemd, Slurm) ends the workers at once; the
            # DataLoader then raises wherever the step was, so the epoch cannot be saved.
            status = "interrupted"
            raise Interrupted(
                f"stopped by {stop.name}, which also ended the DataLoader's workers before the epoch could be "
                f"saved; {_kept(job)}; continue with --resume --out {job.run_dir.path}",
                stop.signum,
            ) from None
        if killed is not None:
            error = (f"{killed} (out of memory? killed by hand?); lower --workers or --batch-size, or use --workers 0; "
                     f"{_kept(job)}")  # fmt: skip
            raise RunError(error) from None
        error = str(exc) if isinstance(exc, ZooError) else one_line(exc)
        raise
    finally:
        finish(job, status, error)


def _end_workers(job: Job) -> None:
    """Before a stop is saved and said, the DataLoader's workers end: torch reports a worker that
    died (a SIGTERM to the whole process group kills them too) from its SIGCHLD handler, wherever
    the main thread is, and afterwards that would replace the stop's own report."""
    job.train_batches.close()
    job.val_batches.close()


def _kept(job: Job) -> str:
    return (
        f"{job.run_dir.last} holds the last checkpoint"
        if job.run_dir.last.exists()
        else "no checkpoint was written yet"
    )


def _killed_worker(exc: BaseException) -> str | None:
    """torch's words when ``exc`` says a DataLoader worker process died (killed, or exited)."""
    text = str(exc).strip().rstrip(".")
    return text if isinstance(exc, RuntimeError) and text.startswith("DataLoader worker (pid") else None


def finish(job: Job, status: str, error: str | None) -> None:
    """The run stopped (``status``): record it, tell the plugins, leave the process group."""
    try:
        job.run_dir.write_status(status, epochs_done=job.run.epoch, error=error)
    except RunError as exc:  # a full disk must not hide the error that stopped the run
        print(f"zoo: warning: could not write {job.run_dir.path / 'status.json'}: {exc}", file=sys.stderr)
    job.events.emit("on_run_end", run=job.run, metrics={**job.summary(), "status": status})
    if status == "finished":
        job.dist.close()  # distributed: leave the process group (after a failure, exiting does)


def _lr(job: Job) -> float | None:
    value = job.run.optimizer.param_groups[0].get("lr")
    return float(value) if value is not None else None


def _resumes(job: Job, epoch: int) -> bool:
    """Whether ``epoch`` is the one a signal stopped, continued now."""
    return job.partial is not None and job.partial["epoch"] == epoch


# -- one epoch ----------------------------------------------------------------------------------


def train_epoch(job: Job, epoch: int, stop: StopControl, *, since: float) -> float:
    """Train one epoch (or what is left of a stopped one); returns its mean training loss.

    ``since`` is when the epoch started on the ``time.perf_counter`` clock. Stops early when
    ``stop`` says so, after saving where it stopped, and raises :class:`Interrupted`. Losses stay
    on the device; they are checked for NaN every ``CHECK_EVERY`` steps and before anything is
    saved, so NaN weights never reach a checkpoint.
    """
    job.forward.train()
    shuffle, batches, first_step, losses = _start_epoch(job, epoch)
    steps = len(job.train_batches)
    bar = job.console.progress_bar(epoch, job.config.epochs, steps, first_step) if job.console else None
    started = time.perf_counter()
    step = checked = first_step  # a stopped epoch's losses were checked before it was saved
    # The step's parts, looked up once: the loop's own work is a few tests a step (issue 16).
    extras, stepped, check_every, after_step = job.extras, True, CHECK_EVERY, stop.after_step
    augment, channels_last, whole, per_step = extras.augment, job.channels_last, extras.accumulate == 1, extras.per_step
    forward, optimizer, criterion, amp_dtype, clip = (job.forward, job.run.optimizer, job.train_criterion,
                                                      job.amp_dtype, extras.clip_grad_norm)  # fmt: skip
    try:
        for step, (inputs, targets) in enumerate(batches, start=first_step + 1):
            if augment is not None:
                inputs = extras.augmented(inputs)
            if channels_last:
                inputs = inputs.contiguous(memory_format=torch.channels_last)
            if whole:
                losses.append(train_step(forward, optimizer, criterion, inputs, targets, amp_dtype=amp_dtype,
                                         clip_grad_norm=clip))  # fmt: skip
            else:
                stepped = _accumulate(job, inputs, targets, step, steps, losses)
            if per_step and stepped:
                extras.after_optimizer_step()  # the EMA follows, a per-step schedule steps
            if step % check_every == 0:
                _check_finite(job, losses, checked, epoch)
                checked = step
            if bar is not None:
                bar.update(1)
            # Stop only after a whole optimizer step (an accumulated one: after its last batch).
            if after_step() and step < steps and stepped:
                break
    finally:
        if bar is not None:
            bar.close()
    if job.run.device.type == "cuda":
        torch.cuda.synchronize(job.run.device)  # the steps ran asynchronously: time all of them
    job.progress.add_training(sum(job.step_sizes[first_step:step]), time.perf_counter() - started)
    _check_finite(job, losses, checked, epoch)
    if step < steps:
        partial = {
            "epoch": epoch,
            "step": step,
            "losses": torch.stack(losses),
            "shuffle": shuffle,
            "seconds": time.perf_counter() - since,
        }
        _stop_mid_epoch(job, partial, stop)
    sizes = torch.tensor(job.step_sizes, dtype=torch.float32, device=job.run.device)
    return float((torch.stack(losses) * sizes).sum() / job.train_batches.samples)


def _accumulate(job: Job, inputs: torch.Tensor, targets: torch.Tensor, step: int, steps: int,
               losses: list[torch.Tensor]) -> bool:  # fmt: skip
    """Batch ``step`` of ``--accumulate N``: steps 1-N make one optimizer step, N+1-2N the next, and
    the epoch's last few make a shorter one. Appends the batch's loss; True when the optimizer stepped."""
    n, index = job.extras.accumulate, step - 1
    group_start, last = index - index % n, index % n == n - 1 or step == steps
    loss = accumulation_step(
        job.forward, job.run.optimizer, job.train_criterion, inputs, targets, first=index % n == 0, last=last,
        scale=1.0 / min(n, steps - group_start), amp_dtype=job.amp_dtype, clip_grad_norm=job.extras.clip_grad_norm,
    )  # fmt: skip
    losses.append(loss)
    return last


def _start_epoch(job: Job, epoch: int) -> tuple[torch.Tensor, Any, int, list[torch.Tensor]]:
    """The epoch's batch order (as a generator state), its batch iterator, and the steps and
    losses already done: none, or those of the stopped epoch a resumed run continues, whose
    order is replayed and whose random streams are put back as they were when it stopped."""
    resumed = job.partial if _resumes(job, epoch) else None
    job.partial = None
    if resumed is not None:
        job.generator.set_state(resumed["shuffle"])
    shuffle = job.generator.get_state()
    batches = iter(job.train_batches)  # draws the epoch's order from job.generator
    if resumed is None:
        job.dist.fork_rng(job.config.seed, epoch)  # distributed: ranks > 0 draw their own dropout masks
        job.extras.start_epoch(epoch)
        return shuffle, batches, 0, []
    first_step = int(resumed["step"])
    for _ in range(first_step):
        next(batches)
    assert job.resumed_rng is not None
    # The second restore of the same state: _restore has already said what it could not restore.
    restore_rng({k: v for k, v in job.resumed_rng.items() if k != "shuffle"}, device=job.run.device, warn=False)
    job.dist.restore_rank_rng(resumed.get("ranks_rng"), job.config.seed, epoch)  # ranks > 0: their own streams
    job.extras.restore_rank_streams(resumed.get("ranks_rng"), job.dist.world)
    return shuffle, batches, first_step, list(resumed["losses"].to(job.run.device).unbind())


def _check_finite(job: Job, losses: list[torch.Tensor], start: int, epoch: int) -> None:
    """Stop the run if a loss of steps ``start + 1`` .. ``len(losses)`` is NaN or infinite."""
    found = first_nonfinite(losses, start)
    if found is None:
        return
    step, value = found
    kept = f"{job.run_dir.last} is untouched" if job.run_dir.last.exists() else "no checkpoint was written"
    rate = _lr(job)
    hint = f" (now {rate:g}, e.g. --lr {rate / 10:g})" if rate else ""
    raise RunError(
        f"the loss became {value} at epoch {epoch}, step {step}/{len(job.train_batches)}: training diverged; "
        f"lower the learning rate{hint}; {kept}"
    )


def _stop_mid_epoch(job: Job, partial: dict[str, Any], stop: StopControl) -> None:
    """A signal stopped the epoch: save where it is, so that ``--resume`` continues from there."""
    _end_workers(job)
    ranks_rng = job.dist.rank_rng_states(job.extras.rank_streams())  # distributed: every rank's streams
    if ranks_rng is not None:
        partial["ranks_rng"] = ranks_rng
    job.save(job.run_dir.last, partial)
    raise Interrupted(
        f"stopped by {stop.name} at epoch {partial['epoch']}, step {partial['step']}/"
        f"{len(job.train_batches)}; continue with --resume --out {job.run_dir.path}",
        stop.signum or signal.SIGINT,
    )


# -- preparing a run ------------------------------------------------------------------------------


@dataclass
class _Data:
    """The run's two splits and what they tell about the task."""

    train: Any
    val: Any
    data_dir: str
    size: tuple[int, ...]  # the data's (C, H, W), before any resize to the model's input size
    classes: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def num_classes(self) -> int:
        return len(self.classes)


@dataclass
class _Plan:
    """What a command line resolves to before any data is read: entries, options, processes."""

    config: RunConfig
    registry: Registry
    model_entry: Any
    dataset: str
    factory: Any
    hparams: dict[str, Any]
    dist: Dist
    console: Console | None
    amp_dtype: torch.dtype | None
    input_size: tuple[int, ...] = ()  # (C, H, W) the run trains at: --input-size, else the model's


def prepare(config: RunConfig, progress_stream: TextIO | None = None) -> Job:
    """Everything a run needs, in the order that refuses a bad command before anything is written:
    names and options, the run to resume, data, model, optimizer and recipe; then the run directory."""
    plan = _plan(config, progress_stream)
    config, dist = plan.config, plan.dist
    run_dir, checkpoint = _resume_point(config, dist, plan.dataset, _qualified_names(plan.registry, config))
    if checkpoint is not None and config.input_size is None:  # the size it trained at (older runs: no --input-size)
        plan.input_size = tuple(checkpoint["spec"].get("input_size") or plan.input_size)
    before_edits = (
        base_weights(config.weights, plan.model_entry, download=config.download, trust=config.trust)
        if checkpoint is None
        else None
    )
    if plan.input_size != tuple(plan.model_entry.input_size):
        _refuse_unbuildable_size(plan)
    data = _load_data(config, plan.registry, plan.dataset, plan.input_size, dist.world)
    generator = _seed_everything(config.seed)  # the same command twice gives the same weights
    weights = config.weights or (checkpoint["spec"].get("weights") if checkpoint is not None else None)
    model = plan.registry.build_model(config.model, data.num_classes, before_edits=before_edits,
                                      input_size=plan.input_size, weights=weights)  # fmt: skip
    state_bytes = preflight(model, config.optimizer, plan.factory, plan.hparams, dist.device).optimizer_state
    model.to(dist.device)
    optimizer = _make_optimizer(plan.registry, config, model, plan.hparams)
    # NHWC: what cuDNN's and oneDNN's fastest convolutions want; a model without 2-D convolutions
    # would only pay a copy per batch, and L-BFGS flattens gradients with view(), which NHWC refuses.
    # (Converting keeps the parameter objects the optimizer holds; it has no state yet.)
    channels_last = any(isinstance(m, nn.Conv2d) for m in model.modules()) and not isinstance(
        optimizer, torch.optim.LBFGS
    )
    if channels_last:
        model.to(memory_format=torch.channels_last)
    train_batches, val_batches = _batches(plan, data, generator, model, state_bytes)
    # Built before a checkpoint is restored: a scheduler's construction sets the learning rate.
    optimizer_steps = -(-len(train_batches) // config.accumulate)
    extras = build_extras(config, plan.registry, model, optimizer, dist.device, steps_per_epoch=optimizer_steps,
                          rank=dist.rank)  # fmt: skip
    if run_dir is None:
        run_dir = dist.new_run_dir(lambda: RunDir.create(config.out, config.model, config.optimizer))
    spec = _spec(config, plan.registry, plan.model_entry, plan.dataset, data, plan.hparams, checkpoint, dist.world,
                 input_size=plan.input_size)  # fmt: skip
    spec.update(_recipe_spec(config, extras))
    progress = Progress.from_metrics(checkpoint["metrics"]) if checkpoint is not None else Progress()
    run = Run(run_dir.path, config, model, optimizer, progress.epoch, dist.device, spec, progress, plan.dataset,
              len(data.train), len(data.val), dist.describe())  # fmt: skip
    if checkpoint is not None:
        _restore(run, checkpoint, generator, plan.console, extras, speaks=dist.is_main)
    elif config.resume and plan.console is not None:
        plan.console.note(f"{run_dir.path} has no checkpoint yet (stopped before its first): starting over")
    job = _job(plan, run_dir, run, generator, train_batches, val_batches, extras, checkpoint)
    job.channels_last = channels_last
    _write_run_files(job, data.data_dir, state_bytes, resumed=checkpoint is not None)
    return job


def _refuse_unbuildable_size(plan: _Plan) -> None:
    """An ``--input-size`` the model's constructor rejects (ViT's: a multiple of its patch) is
    refused before any data is read: built on the meta device (no memory, no initialisation),
    with any head (the size is in question, not the classes). A builder that cannot work on the
    meta device is tried again on the CPU, so that only the size itself refuses."""
    classes = plan.registry.dataset(plan.dataset).num_classes or 10
    build = functools.partial(plan.registry.build_model, plan.config.model, classes, check=False,
                              input_size=plan.input_size)  # fmt: skip
    try:
        with torch.device("meta"):
            build()
    except UsageError:
        build()


def _plan(config: RunConfig, progress_stream: TextIO | None) -> _Plan:
    """Names and options checked against the registry; a worker joins its process group."""
    registry = get_registry(config.registry_files)
    if config.tensorboard:
        _require_tensorboard()
    model_entry, optimizer_entry = registry.model(config.model), registry.optimizer(config.optimizer)
    # A torchrun / `zoo run --nproc` worker joins the process group here; elsewhere a no-op.
    dist, config = setup(config)
    if config.resume:  # the options not given again are the run's own
        config = resumed_config(config, _saved_config(config.out), dist.world)
    dataset = config.data or model_entry.default_dataset
    if dataset is None:
        raise UsageError(f"model '{config.model}' has no default dataset: pass --data NAME (zoo list datasets)")
    registry.dataset(dataset)
    console = Console(progress_stream) if not config.quiet and dist.is_main else None
    factory = registry.optimizer_factory(config.optimizer)
    hparams = parse_hparams(config.optimizer, factory, optimizer_entry.defaults, lr=config.lr, opts=config.opts)
    cuda_numerics(dist.device, deterministic=config.deterministic)
    amp_dtype = _amp_dtype(config, dist.device, console)
    input_size = _input_size(model_entry, config.input_size)
    return _Plan(config, registry, model_entry, dataset, factory, hparams, dist, console, amp_dtype, input_size)


def _input_size(entry: Any, size: int | None) -> tuple[int, ...]:
    """The ``(C, H, W)`` a run trains at: ``--input-size N`` as ``(C, N, N)``, else the model's
    own. A size below the model's minimum is refused here, before anything is read or written."""
    if size is None:
        return tuple(entry.input_size)
    wanted = (entry.input_size[0], size, size)
    problem = too_small(entry, wanted)
    if problem:
        least = entry.min_input_size
        raise UsageError(
            f"--input-size {size}: {problem}; pass --input-size {max(least)} or more, or leave it out to train "
            f"at its own {entry.input_size[1]}x{entry.input_size[2]}"
        )
    return wanted


def _batches(plan: _Plan, data: _Data, generator: torch.Generator, model: nn.Module,
             state_bytes: int | None) -> tuple[Any, Any]:  # fmt: skip
    """The training batches (shuffled by ``generator``) and the validation batches. Distributed:
    each rank iterates its own shard of every (global) batch and of the validation set."""
    config, dist, input_size = plan.config, plan.dist, plan.input_size
    batches = dict(device=dist.device, input_size=input_size, workers=config.workers, rank=dist.rank, world=dist.world)
    train_batches = iterate_batches(data.train, config.batch_size, shuffle=True, generator=generator, **batches)
    largest = max(config.batch_size, VAL_BATCH_SIZE)
    val_batch = _validation_batch(model, input_size, dist.device, data, state_bytes, largest=largest)
    return train_batches, iterate_batches(data.val, val_batch, shuffle=False, **batches)


def _job(plan: _Plan, run_dir: RunDir, run: Run, generator: torch.Generator, train_batches: Any, val_batches: Any,
         extras: Extras, checkpoint: dict[str, Any] | None) -> Job:  # fmt: skip
    """The run's loop state: what trains and on which batches, and who hears of it."""
    config, dist = plan.config, plan.dist
    # DDP first, then compile (compiling DDP lets torch.compile split graphs at its buckets).
    forward = dist.wrap(run.model)
    forward = torch.compile(forward) if config.compile else forward
    criterion = nn.CrossEntropyLoss().to(dist.device)  # validation's: the plain loss
    train_criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing).to(dist.device)
    host = get_plugin_host()
    return Job(
        config=config, dist=dist, run_dir=run_dir, run=run, forward=forward, criterion=criterion,
        train_criterion=dist.train_criterion(train_criterion), generator=generator, train_batches=train_batches,
        val_batches=val_batches, step_sizes=train_batches.step_sizes(), events=RunEvents(host, active=dist.is_main),
        console=plan.console, provenance=provenance(zoo_version=__version__, plugins=host.plugin_records()),
        amp_dtype=plan.amp_dtype, partial=(checkpoint or {}).get("partial"),
        resumed_rng=(checkpoint or {}).get("rng"), extras=extras,
    )  # fmt: skip


def _recipe_spec(config: RunConfig, extras: Extras) -> dict[str, Any]:
    """What checkpoints record of the recipe, for ``--resume`` to check it is the same."""
    schedule = extras.schedule
    return {
        "sched": config.sched, "sched_hparams": _plain(schedule.hparams) if schedule else None,
        "sched_interval": schedule.interval if schedule else None, "augment": list(config.augment),
        "ema": config.ema, "label_smoothing": config.label_smoothing, "clip_grad_norm": config.clip_grad_norm,
        "accumulate": config.accumulate, "sched_epochs": config.epochs if schedule else None,
    }  # fmt: skip


def _saved_config(out: str | None) -> dict[str, Any]:
    """The ``config.yaml`` of the run ``--resume`` continues; empty when it has none (killed
    before writing it) or it cannot be read (the checkpoint's own spec is checked anyway)."""
    try:
        return read_config(Path(out).expanduser()) if out is not None else {}
    except ValueError:
        return {}


def _qualified_names(registry: Registry, config: RunConfig) -> dict[str, str]:
    """The qualified names (PLUGIN/NAME) of the run's model and optimizer: what checkpoints record."""
    return {
        "model": registry.qualified_name(registry.model(config.model)),
        "optimizer": registry.qualified_name(registry.optimizer(config.optimizer)),
    }


def _resume_point(
    config: RunConfig, dist: Dist, dataset: str, names: dict[str, str]
) -> tuple[RunDir | None, dict[str, Any] | None]:
    """With ``--resume``: the run directory and its ``last.pt`` (None: killed before its first),
    checked to continue the same run. Without: None, None (the directory is created later)."""
    if not config.resume:
        out = Path(config.out).expanduser() if config.out is not None else None
        if out is not None and out.exists():
            raise exists_error(out)
        return None, None
    run_dir = RunDir.reopen(config.out, writer=dist.is_main)
    if not run_dir.last.exists():
        return run_dir, None
    checkpoint = load_checkpoint(run_dir.last, trust=config.trust)
    check_resume(checkpoint, config, dataset, run_dir.last, world=dist.world, names=names)
    return run_dir, checkpoint


def _load_data(config: RunConfig, registry: Registry, dataset: str, input_size: tuple[int, ...], world: int) -> _Data:
    """Both splits, limited, checked against the model; classes come from the dataset, as the
    seed's CIFAR-10 gives 10."""
    entry = registry.dataset(dataset)
    data_dir = config.data_dir or default_data_dir()  # as given: messages name what the user typed
    train = limit(_load_split(config, registry, dataset, data_dir, train=True), config.limit_train)
    val = limit(_load_split(config, registry, dataset, data_dir, train=False), config.limit_val)
    if len(train) == 0 or len(val) == 0:
        raise UsageError(
            f"dataset '{dataset}' in {data_dir} has {len(train)} training and {len(val)} validation "
            f"samples: both need at least one"
        )
    if len(train) < world:  # distributed: every rank needs a sample per step
        raise UsageError(
            f"{len(train)} training samples cannot be shared out among {world} processes: "
            f"use more data or fewer processes"
        )
    size = dataset_input_size(train)
    problem = adapt_error(size, input_size)
    if problem:
        raise UsageError(f"model '{config.model}' cannot train on dataset '{dataset}': {problem}")
    classes = list(entry.classes or dataset_classes(train) or [])
    num_classes = entry.num_classes or len(classes)
    if not num_classes:
        raise UsageError(f"dataset '{dataset}' declares no num_classes and its data has no 'classes' attribute")
    classes = classes if len(classes) == num_classes else [str(i) for i in range(num_classes)]
    mean, std = normalisation(train)
    # Recorded absolute, so that config.yaml (and zoo validate) find the data from anywhere.
    recorded = str(Path(data_dir).expanduser().absolute())
    return _Data(train, val, recorded, tuple(size), classes, tuple(mean), tuple(std))


def _load_split(config: RunConfig, registry: Registry, dataset: str, data_dir: str, *, train: bool) -> Any:
    """One split, its unreadable image files (if it is a folder of them) refused before anything
    is written, or left out with a warning under ``--skip-bad-images``."""
    data = registry.load_dataset(dataset, train=train, root=data_dir, download=config.download)
    bad = unreadable_images(data)
    if not bad:
        return data
    split, more = ("training" if train else "validation"), (f" (and {len(bad) - 1} more)" if len(bad) > 1 else "")
    if not config.skip_bad_images:
        raise UsageError(
            f"{len(bad)} image file(s) of the {split} split of '{dataset}' cannot be read: {bad[0]}{more}; "
            f"remove or replace them, or pass --skip-bad-images to leave them out"
        )
    print(
        f"zoo: warning: left out {len(bad)} unreadable image file(s) of the {split} split: {bad[0]}{more}",
        file=sys.stderr,
    )
    return without_files(data, set(bad))


def _seed_everything(seed: int) -> torch.Generator:
    """Seed torch (CPU and CUDA), Python and NumPy; return the generator that shuffles batches.

    A dedicated generator keeps the batch order independent of whatever else draws from
    torch's global RNG (dropout, a plugin's init), so the order is part of the saved state.
    """
    random.seed(seed)
    torch.manual_seed(seed)
    try:
        import numpy as np

        np.random.seed(seed % 2**32)
    except ImportError:
        pass
    return torch.Generator().manual_seed(seed)


def _amp_dtype(config: RunConfig, device: torch.device, console: Console | None) -> torch.dtype | None:
    """bfloat16 under ``--amp`` on CUDA; elsewhere float32 (``--amp`` says so)."""
    if not config.amp:
        return None
    if device.type != "cuda":
        if console is not None:
            console.note("--amp only applies on CUDA; training in float32")
        return None
    problem = bf16_problem(device)  # the training device's own capability, emulation not counted
    if problem is not None:
        raise UsageError(problem)
    return torch.bfloat16


def cuda_numerics(device: torch.device, *, deterministic: bool) -> None:
    """On CUDA: TF32 matmuls and convolutions (float32 values, 10-bit mantissa products: several
    times the FP32 throughput on Ampere and later) and cuDNN's autotuner (a few slow first steps
    while it times each convolution's algorithms, then the fastest). ``--deterministic`` turns all
    three off, for results reproducible bit for bit across runs, at full FP32 cost. The CPU is
    untouched: it has neither, and its runs are always bitwise reproducible."""
    if device.type != "cuda":
        return
    precision = "ieee" if deterministic else "tf32"
    torch.backends.cuda.matmul.fp32_precision = precision
    torch.backends.cudnn.conv.fp32_precision = precision
    torch.backends.cudnn.benchmark = not deterministic
    torch.backends.cudnn.deterministic = deterministic


def _validation_batch(
    model: nn.Module,
    input_size: tuple[int, ...],
    device: torch.device,
    data: _Data,
    state_bytes: int | None,
    *,
    largest: int,
) -> int:
    """``largest`` on the CPU; on a GPU, no more than half of what is left free once the model,
    its gradients and optimizer state (not allocated yet: the first step does) and the data held
    there are counted can hold (models at 224 pixels and up)."""
    if device.type != "cuda":
        return largest
    free = available_memory(device)
    if free is not None:
        gradients = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
        held = sum(s.images.numel() * s.images.element_size() for s in (data.train, data.val)
                   if isinstance(s, TensorImageDataset))  # fmt: skip
        free = max(0, free - held - gradients - (state_bytes or 0))
    return validation_batch_size(activation_bytes_per_sample(model, input_size, device), free, largest)


def _make_optimizer(
    registry: Registry, config: RunConfig, model: nn.Module, hparams: dict[str, Any]
) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    try:
        optimizer = registry.make_optimizer(config.optimizer, params, hparams)
    except ZooError:
        raise
    except Exception as exc:
        raise UsageError(
            f"optimizer '{config.optimizer}' cannot train model '{config.model}': {one_line(exc)}"
        ) from exc
    if not config.compile:
        eager_step(optimizer)  # its step imports no torch._dynamo either
    return optimizer


def _spec(
    config: RunConfig,
    registry: Registry,
    entry: Any,
    dataset: str,
    data: _Data,
    hparams: dict[str, Any],
    checkpoint: dict[str, Any] | None,
    world: int,
    *,
    input_size: tuple[int, ...],
) -> dict[str, Any]:
    """What every checkpoint records to rebuild and continue the run (CONTRACT.md's ``spec``).

    Hyper-parameters as stored (tuples stay tuples). A resumed run keeps its own, except those
    given again on this command line (e.g. a lower --lr after a NaN), which win.
    """
    run_hparams = {k: (tuple(v) if isinstance(v, list) else v) for k, v in _plain(hparams).items()}
    if checkpoint is not None:
        saved = checkpoint["spec"]["hparams"]
        run_hparams = {**saved, **changed_hparams(saved, run_hparams, config)}
    base_entry = registry.model(entry.base) if entry.base else entry
    return {
        **_qualified_names(registry, config),  # PLUGIN/NAME: the same entries whatever is installed later
        "hparams": run_hparams,
        "dataset": dataset,
        "num_classes": data.num_classes,
        "classes": data.classes,
        "input_size": list(input_size),
        "data_input_size": list(data.size),
        "data_dir": data.data_dir,
        "mean": list(data.mean),
        "std": list(data.std),
        "base": registry.qualified_name(base_entry) if entry.base else None,
        "base_classes": entry.base_classes,
        "edits": [edit.as_json() for edit in entry.edits],
        "plugin": base_entry.plugin,
        "weights": config.weights or (checkpoint["spec"].get("weights") if checkpoint else None),
        "batch_size": config.batch_size,
        "limit_train": config.limit_train,
        "limit_val": config.limit_val,
        "seed": config.seed,
        "world_size": world,  # processes: the global batch is batch_size x world_size
    }


def _restore(
    run: Run, checkpoint: dict[str, Any], generator: torch.Generator, console: Console | None, extras: Extras,
    *, speaks: bool,
) -> None:  # fmt: skip
    """Weights, optimizer state and every RNG from ``checkpoint``, restored after building (which
    drew from the RNG) so that the continuation equals an uninterrupted run bitwise."""
    load_state_dict_strict(
        run.model, checkpoint["model"], source=str(run.run_dir / "last.pt"), target=f"model '{run.config.model}'"
    )
    run.optimizer.load_state_dict(checkpoint["optimizer"])
    _match_parameter_layouts(run.optimizer)
    changed = changed_hparams(checkpoint["spec"]["hparams"], run.spec["hparams"], run.config)
    for key, value in changed.items():
        for group in run.optimizer.param_groups:
            group[key] = value
    if changed and console is not None:
        console.note(f"resuming with changed hyper-parameters {changed}")
    restore_rng(checkpoint["rng"], generator, run.device, warn=speaks)
    extras.restore(checkpoint, mid_epoch=checkpoint.get("partial") is not None)


def _match_parameter_layouts(optimizer: torch.optim.Optimizer) -> None:
    """Give every state tensor shaped like its parameter that parameter's memory layout and device.

    Checkpoints hold contiguous (NCHW) copies and ``load_state_dict`` keeps them so, while a fresh
    run's momentum and Adam buffers are channels_last like their parameters: a resumed run would
    fall off the foreach and fused kernels' fast paths, which want matching layouts.
    """
    for group in optimizer.param_groups:
        for param in group["params"]:
            state = optimizer.state.get(param, {})
            for key, value in state.items():
                if torch.is_tensor(value) and value.shape == param.shape and value.stride() != param.stride():
                    state[key] = torch.empty_like(param, dtype=value.dtype).copy_(value)


def _write_run_files(job: Job, data_dir: str, state_bytes: int | None, *, resumed: bool) -> None:
    """``config.yaml`` and ``metrics.jsonl`` (a resumed run's history, up to its checkpoint), then
    a check that the disk holds the checkpoints to come."""
    config, spec = job.config, job.run.spec
    options = {k: v for k, v in _plain(asdict(config)).items() if k != "given"}
    doc = {
        **options,
        "lr": spec["hparams"].get("lr"),  # what trains, whether from --lr, --opt lr= or the defaults
        "dataset": spec["dataset"],
        "data_dir": data_dir,
        "hparams": _plain(spec["hparams"]),
        "num_classes": spec["num_classes"],
        "base": spec["base"],
        "edits": spec["edits"],
        "resolved_device": str(job.run.device),
        "out": str(job.run_dir.path),
        "world_size": job.dist.world,
    }
    try:
        job.run_dir.write_config(doc)
        job.run_dir.write_metrics(job.progress.history)
    except RunError as exc:
        raise UsageError(f"run directory {job.run_dir.path} is not writable: {exc}") from exc
    # Checkpoints hold the weights and the optimizer state (unknown: two copies of the weights,
    # like Adam); last.pt, best.pt and a temporary copy while one is written.
    model = job.run.model
    weights = sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))
    state = state_bytes if state_bytes is not None else 2 * weights
    job.run_dir.check_disk(weights + state, files=1 if resumed else 3)


def _plain(value: Any) -> Any:
    """Hyper-parameters as YAML/JSON-friendly values (tensors -> numbers, tuples -> lists)."""
    if isinstance(value, torch.Tensor):
        return value.item() if value.numel() == 1 else value.tolist()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def _require_tensorboard() -> None:
    """``--tensorboard`` is served by the built-in ``tensorboard`` plugin: fail before training
    when it (or the tensorboard package it needs) is missing."""
    from zoo.plugins import get_plugin_host

    host = get_plugin_host()
    info = host.infos.get("tensorboard")
    plugin = host.pm.get_plugin("tensorboard")
    if info is None or info.status != "ok" or plugin is None:
        reason = f": {info.error}" if info is not None and info.error else " (it is not installed)"
        raise UsageError(f"--tensorboard needs the zoo's tensorboard plugin, which did not load{reason}")
    plugin.require()


# -- validate -----------------------------------------------------------------------------------


def _trained_data_dir(path: str | os.PathLike[str], checkpoint: dict[str, Any]) -> str | None:
    """Where the checkpoint's run found its data: its run directory's config.yaml, else the spec."""
    try:
        saved = read_config(Path(path).parent).get("data_dir")
    except ValueError:
        saved = None
    return saved or checkpoint["spec"].get("data_dir")


def validate(
    checkpoint: str | os.PathLike[str],
    *,
    data: str | None = None,
    data_dir: str | None = None,
    device: str = "auto",
    limit_val: int | None = None,
    trust: bool = False,
    registry_files: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Loss and accuracy of a checkpoint on its dataset's validation split (or ``data``'s):
    ``{"val_loss", "val_accuracy", "samples"}``."""
    if limit_val is not None and (not isinstance(limit_val, int) or limit_val < 1):
        raise UsageError(f"--limit-val must be an integer of at least 1, got {limit_val!r}")
    target = resolve_device(device)
    ckpt = load_checkpoint(checkpoint, trust=trust)
    registry = get_registry(registry_files)
    spec = ckpt["spec"]
    model = model_from_checkpoint(ckpt, source=str(checkpoint), registry=registry).to(target)
    name = data or spec["dataset"]
    entry = registry.dataset(name)
    root = data_dir or (_trained_data_dir(checkpoint, ckpt) if name == spec["dataset"] else None) or default_data_dir()
    val_set = limit(registry.load_dataset(name, train=False, root=root, download=False), limit_val)
    num_classes = entry.num_classes or len(dataset_classes(val_set) or [])
    if num_classes != spec["num_classes"]:
        raise UsageError(
            f"dataset '{name}' has {num_classes} classes but {checkpoint} was trained for {spec['num_classes']}"
        )
    problem = adapt_error(dataset_input_size(val_set), spec["input_size"])
    if problem:
        raise UsageError(f"{checkpoint} cannot be validated on dataset '{name}': {problem}")
    batches = iterate_batches(
        val_set, VAL_BATCH_SIZE, shuffle=False, device=target, input_size=tuple(spec["input_size"])
    )
    result = evaluate(model, batches, nn.CrossEntropyLoss().to(target))
    return result
