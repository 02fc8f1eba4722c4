"""The uniform runner: train any registered model with any registered optimizer on any dataset.

This is the seed's full training routine (sections 27-31) made general: build the model from
the registry, move model, loss and data to the device once, then for each epoch train
(``zero_grad``, ``backward``, ``step``), validate (``eval()``, no grad, ``argmax(1)``), log a
line to ``metrics.jsonl`` and checkpoint. Around that loop the runner adds what a long run
needs: seeded and bitwise-resumable on CPU, atomic checkpoints, a NaN guard, and SIGINT/SIGTERM
turned into a checkpoint that ``--resume`` continues from mid-epoch.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import math
import os
import random
import shutil
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, TextIO

import torch
from torch import nn

from zoo.checkpoint import (
    atomic_save,
    atomic_write,
    capture_rng,
    load_checkpoint,
    load_state_dict_strict,
    make_checkpoint,
    model_from_checkpoint,
    remove_stale_temp_files,
    restore_rng,
    safe_load,
    state_dict_from,
)
from zoo.devices import resolve_device
from zoo.errors import Interrupted, RunError, UsageError, ZooError

__all__ = ["RunConfig", "Run", "Interrupted", "run", "train_step", "evaluate", "validate", "default_data_dir"]

CHECK_EVERY = 50  # steps between NaN checks: one host sync per window, not per step
VAL_BATCH_SIZE = 256  # validation keeps no activations for backward, so larger batches are cheap
CHECKPOINTS = ("last.pt", "best.pt")


@dataclass
class RunConfig:
    """Everything ``zoo run`` takes (see CONTRACT.md for the meaning of each option)."""

    model: str
    optimizer: str
    data: str | None = None
    data_dir: str | None = None
    download: bool = False
    epochs: int = 10
    batch_size: int = 64
    lr: float | None = None
    opts: dict[str, str] = field(default_factory=dict)  # raw --opt KEY=VALUE pairs
    device: str = "auto"
    seed: int = 0
    out: str | None = None
    resume: bool = False
    weights: str | None = None  # "imagenet" or a state_dict file, loaded before the edits
    limit_train: int | None = None
    limit_val: int | None = None
    workers: int = 0
    amp: bool = False
    compile: bool = False
    tensorboard: bool = False
    quiet: bool = False
    registry_files: tuple[str, ...] = ()
    trust: bool = False
    nproc: int = 1


@dataclass
class Run:
    """What the event hooks see of a run (``on_run_start(run)`` and the others)."""

    run_dir: Path
    config: RunConfig
    model: nn.Module  # the bare module (not a compiled wrapper)
    optimizer: torch.optim.Optimizer
    start_epoch: int  # epochs already completed when this process started
    device: torch.device
    spec: dict[str, Any]
    epoch: int = 0  # epochs completed so far


# -- the step and the evaluation ------------------------------------------------------------------


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    criterion: nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    *,
    amp_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """One optimisation step, the seed's ``zero_grad`` / ``backward`` / ``step`` triple.

    It runs inside a closure passed to ``step`` because L-BFGS re-evaluates the loss several
    times per step; every other optimizer calls the closure once. Returns the loss before the
    update, detached and still on the device (reading it would force a sync every step).
    """
    first: list[torch.Tensor] = []

    def closure() -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        # Not torch.autocast(enabled=False): entering a disabled autocast still costs ~15 us a step.
        with torch.autocast(inputs.device.type, dtype=amp_dtype) if amp_dtype is not None else contextlib.nullcontext():
            loss = criterion(model(inputs), targets)
        loss.backward()
        if not first:
            first.append(loss.detach())
        return loss

    optimizer.step(closure)
    if not first:
        raise RunError(f"{type(optimizer).__name__}.step(closure) never called the closure, so nothing was learned")
    return first[0]


@torch.inference_mode()
def evaluate(
    model: nn.Module,
    batches: Any,
    criterion: nn.Module,
    *,
    amp_dtype: torch.dtype | None = None,
    channels_last: bool = False,
    reduce: Callable[[list[float], int], tuple[list[float], int]] | None = None,
) -> dict[str, Any]:
    """Mean loss and accuracy (``argmax(1)``) over ``batches``, in ``eval()`` mode.

    Sums stay on the device and are read once at the end. ``reduce`` (distributed training)
    adds up ``([loss_sum, correct], samples)`` over the ranks, each of which saw its own shard.
    """
    was_training = model.training
    model.eval()
    loss_sum, correct, samples = None, None, 0
    for inputs, targets in batches:
        if channels_last:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        with torch.autocast(inputs.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            outputs = model(inputs)
        batch_loss = criterion(outputs.float(), targets) * targets.shape[0]
        batch_correct = (outputs.argmax(1) == targets).sum()
        loss_sum = batch_loss if loss_sum is None else loss_sum + batch_loss
        correct = batch_correct if correct is None else correct + batch_correct
        samples += targets.shape[0]
    model.train(was_training)
    sums = torch.stack([loss_sum.float(), correct.float()]).tolist() if samples else [0.0, 0.0]
    if reduce is not None:  # distributed: every rank's shard, so the result does not depend on their number
        sums, samples = reduce(sums, samples)
    if not samples:
        raise UsageError("the validation set is empty: nothing to validate (check --limit-val)")
    loss, hits = sums
    return {"val_loss": loss / samples, "val_accuracy": hits / samples, "samples": samples}


# -- signals ------------------------------------------------------------------------------------


class _StopSignals:
    """While active, SIGINT and SIGTERM ask the loop to stop after the current step (it then
    checkpoints); a second signal stops at once, leaving the previous checkpoint intact.

    A signal the process inherited as ignored stays ignored: a shell starts background jobs
    (``cmd &``, ``nohup``) with SIGINT ignored so that Ctrl-C at the terminal spares them."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "_StopSignals":
        if threading.current_thread() is threading.main_thread():  # signal.signal's rule
            for signum in (signal.SIGINT, signal.SIGTERM):
                previous = signal.getsignal(signum)
                if previous is not signal.SIG_IGN:
                    self._previous[signum] = previous
                    signal.signal(signum, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None:
            self.signum = signum
            raise KeyboardInterrupt  # BaseException: no `except Exception` on the way swallows it
        self.signum = signum

    def __exit__(self, *exc: Any) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    @property
    def name(self) -> str:
        return signal.Signals(self.signum or signal.SIGINT).name


# -- setting up ---------------------------------------------------------------------------------


def default_data_dir() -> str:
    """``$ZOO_DATA``, else ``~/.cache/zoo/data``."""
    return os.environ.get("ZOO_DATA") or str(Path("~/.cache/zoo/data").expanduser())


def _check_config(config: RunConfig) -> None:
    def positive(value: Any, flag: str, minimum: int = 1) -> None:
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            raise UsageError(f"{flag} must be an integer of at least {minimum}, got {value!r}")

    positive(config.epochs, "--epochs")
    positive(config.batch_size, "--batch-size")
    positive(config.workers, "--workers", 0)
    positive(config.seed, "--seed", 0)
    for value, flag in ((config.limit_train, "--limit-train"), (config.limit_val, "--limit-val")):
        if value is not None:
            positive(value, flag)
    if config.lr is not None and not (isinstance(config.lr, (int, float)) and math.isfinite(config.lr) and config.lr > 0):
        raise UsageError(f"--lr must be a positive number, got {config.lr!r}")
    positive(config.nproc, "--nproc")  # more than 1: checked by zoo.distributed.setup


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


def _plain(value: Any) -> Any:
    """Hyper-parameters as YAML/JSON-friendly values (tensors -> numbers, tuples -> lists)."""
    if isinstance(value, torch.Tensor):
        return value.item() if value.numel() == 1 else value.tolist()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def _exists(out: Path) -> UsageError:
    return UsageError(f"run directory {out} already exists: pass --resume to continue it, or choose another --out")


def _create_run_dir(config: RunConfig) -> Path:
    """A new run directory; an existing one is never reused without ``--resume``."""
    if config.out is not None:
        out = Path(config.out).expanduser()
        if out.exists():
            raise _exists(out)
        candidates: Iterator[Path] = iter([out])
    else:
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        base = Path("runs") / f"{config.model}-{config.optimizer}-{stamp}"
        candidates = iter([base, *(base.with_name(f"{base.name}-{i}") for i in range(2, 100))])
    for out in candidates:
        try:
            out.mkdir(parents=True)
            return out
        except FileExistsError:
            if config.out is not None:  # created by someone else since we looked
                raise _exists(out) from None
        except OSError as exc:
            raise UsageError(f"cannot create run directory {out}: {exc.strerror or exc}") from exc
    raise UsageError("too many runs started this second: pass --out DIR")


def _open_resume(config: RunConfig, clean: bool = True) -> tuple[Path, dict[str, Any] | None]:
    """The run directory to resume and its ``last.pt`` (None: killed before its first one).

    ``clean`` removes the temporary files of a killed write: in a distributed run, rank 0
    alone does, since another rank's cleaning could race with its first writes.
    """
    if config.out is None:
        raise UsageError("--resume needs --out DIR: the run directory to continue")
    out = Path(config.out).expanduser()
    if not out.exists():
        raise UsageError(f"nothing to resume: {out} does not exist (drop --resume to start a new run there)")
    if not out.is_dir():
        raise UsageError(f"nothing to resume: {out} is not a run directory")
    if clean:
        remove_stale_temp_files(out, CHECKPOINTS + ("config.yaml", "metrics.jsonl", "status.json"))
    last = out / "last.pt"
    return out, (load_checkpoint(last, trust=config.trust) if last.exists() else None)


def _check_resume(checkpoint: dict[str, Any], config: RunConfig, dataset: str, path: Path, world: int = 1) -> None:
    """A resumed run must be the same run: same model, optimizer, data and batches.

    Batches are compared globally (``--batch-size`` x processes): that is what the updates
    are made of, so a run of 2 processes x 16 continues as 1 x 32, or 4 x 8.
    """
    spec = checkpoint["spec"]
    ours = {"model": config.model, "optimizer": config.optimizer, "dataset": dataset,
            "batch_size": config.batch_size, "limit_train": config.limit_train, "limit_val": config.limit_val}
    flags = {"dataset": "--data", "batch_size": "--batch-size", "limit_train": "--limit-train", "limit_val": "--limit-val"}
    was_world = int(spec.get("world_size", 1))
    if "batch_size" in spec and spec["batch_size"] * was_world == config.batch_size * world:
        del ours["batch_size"]  # the same global batch, split over another number of processes
    elif "batch_size" in spec and (was_world, world) != (1, 1):
        total = spec["batch_size"] * was_world
        fix = (f"--batch-size {total // world} with {world} process(es)" if total % world == 0
               else f"a number of processes that divides {total}")
        raise UsageError(
            f"cannot resume {path}: it was trained with a global batch of {total} (--batch-size "
            f"{spec['batch_size']} x {was_world} process(es)), not {config.batch_size * world} (--batch-size "
            f"{config.batch_size} x {world}); resume with {fix}, or start a new run with another --out"
        )
    for key, value in ours.items():
        if key in spec and spec[key] != value:
            flag = flags.get(key, key.upper())
            raise UsageError(
                f"cannot resume {path}: it was trained with {flag} {spec[key]}, not {value}; "
                f"resume with the same {flag}, or start a new run with another --out"
            )
    done, partial = int(checkpoint["epoch"]), checkpoint.get("partial")
    if partial and config.epochs < partial["epoch"]:
        raise UsageError(f"cannot resume {path} with --epochs {config.epochs}: it stopped during epoch {partial['epoch']}; pass --epochs {partial['epoch']} or more")
    if config.epochs < done:
        raise UsageError(f"{path} has already trained {done} epochs; --epochs {config.epochs} asks for fewer (pass more than {done} to continue)")


def _imagenet_weights(base: str, download: bool) -> dict[str, torch.Tensor]:
    """torchvision's ImageNet weights for ``base`` from the torch hub cache (``$TORCH_HOME``);
    fetched only with ``--download``."""
    import torchvision

    try:
        weights = torchvision.models.get_model_weights(base).DEFAULT
    except (ValueError, KeyError):
        raise UsageError(
            f"--weights imagenet: torchvision has no pretrained weights for model '{base}'; "
            f"pass a state_dict file with --weights PATH instead"
        ) from None
    cache = Path(torch.hub.get_dir()) / "checkpoints"
    path = cache / os.path.basename(weights.url)
    if path.exists():
        return state_dict_from(safe_load(path, what="weights file"), str(path))
    if not download:
        raise UsageError(
            f"--weights imagenet: {weights} is not in the torch hub cache: expected {path}; "
            f"download {weights.url} to that path (the cache is $TORCH_HOME/hub, "
            f"TORCH_HOME={os.environ.get('TORCH_HOME', '~/.cache/torch')}), or add --download"
        )
    try:
        state = torch.hub.load_state_dict_from_url(
            weights.url, model_dir=str(cache), map_location="cpu", check_hash=True, weights_only=True
        )
    except Exception as exc:
        raise UsageError(f"--weights imagenet: could not download {weights.url} to {path}: {exc}; put the file there by hand") from exc
    return state_dict_from(state, weights.url)


def _base_weights(config: RunConfig, entry: Any) -> Callable[[nn.Module], None] | None:
    """The ``before_edits`` callback that loads ``--weights`` into the base model, or None.

    The file is read (and refused, if unsafe) here, before anything is built.
    """
    if not config.weights:
        return None
    base = entry.base or entry.name
    if config.weights == "imagenet":
        state, source = _imagenet_weights(base, config.download), f"ImageNet weights of {base}"
    else:
        source = config.weights
        state = state_dict_from(safe_load(source, trust=config.trust, what="weights file"), f"--weights {source}")

    def load(model: nn.Module) -> None:
        load_state_dict_strict(model, state, source=f"--weights {source}", target=f"base model '{base}'")

    return load


def _preflight(model: nn.Module, name: str, factory: Any, hparams: dict[str, Any], device: torch.device) -> int | None:
    """Refuse a pair that cannot work or fit before training (zoo.preflight, when present);
    returns the estimated bytes of optimizer state."""
    try:
        from zoo.preflight import preflight
    except ModuleNotFoundError as exc:
        if exc.name != "zoo.preflight":
            raise
        return None
    return preflight(model, name, factory, hparams, device).optimizer_state


def _write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode()))


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


def _write_status(run_dir: Path, status: str, *, started: str, epochs_done: int, error: str | None = None) -> None:
    """``status.json``: what ``zoo runs`` reports (running, finished, interrupted, failed).

    ``pid`` lets a reader tell a live run from one killed with SIGKILL (which writes nothing).
    """
    doc = {"status": status, "started": started, "updated": _dt.datetime.now().isoformat(timespec="seconds"),
           "epochs_done": epochs_done, "pid": os.getpid(), "error": error}
    _write_text(run_dir / "status.json", json.dumps(doc, indent=2) + "\n")


def _started(run_dir: Path) -> str:
    """When the run first started: kept across resumes so ``zoo runs`` sorts by it."""
    try:
        return str(json.loads((run_dir / "status.json").read_text())["started"])
    except (OSError, ValueError, KeyError, TypeError):
        return _dt.datetime.now().isoformat(timespec="seconds")


def _check_disk(run_dir: Path, model: nn.Module, state_bytes: int | None, files: int) -> None:
    """Refuse up front when the disk cannot hold ``files`` more checkpoints of this model and
    optimizer state (unknown state: two copies of the parameters, like Adam)."""
    params = sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))
    need = files * (params + (state_bytes if state_bytes is not None else 2 * params))
    free = shutil.disk_usage(run_dir).free
    if free < need:
        raise RunError(f"not enough disk space in {run_dir}: checkpoints need about {need / 2**20:.0f} MiB, {free / 2**20:.0f} MiB free")


# -- the run ------------------------------------------------------------------------------------


def run(config: RunConfig, progress_stream: TextIO | None = None) -> dict[str, Any]:
    """Train ``config.model`` with ``config.optimizer``, validating and checkpointing each epoch.

    Returns the ``zoo run --json`` summary. Raises :class:`UsageError` (bad input, exit 2),
    :class:`RunError` (NaN loss, I/O, exit 1) or :class:`Interrupted` (exit 130/143).
    """
    from zoo.data import adapt_error, dataset_classes, dataset_input_size, iterate_batches, limit, normalisation
    from zoo.distributed import setup as setup_distributed
    from zoo.hparams import parse_hparams
    from zoo.plugins import get_plugin_host
    from zoo.registry import get_registry

    stream = progress_stream or sys.stderr
    _check_config(config)
    if config.tensorboard:
        _require_tensorboard()
    registry = get_registry(config.registry_files)
    model_entry = registry.model(config.model)
    optimizer_entry = registry.optimizer(config.optimizer)
    dataset_name = config.data or model_entry.default_dataset
    if dataset_name is None:
        raise UsageError(f"model '{config.model}' has no default dataset: pass --data NAME (zoo list datasets)")
    dataset_entry = registry.dataset(dataset_name)
    # Distributed (a torchrun / `zoo run --nproc` worker): join the process group; the device is
    # cuda:LOCAL_RANK or the CPU; ranks > 0 run quiet; an elastic restart resumes. Else a no-op.
    dist, config = setup_distributed(config)
    device = dist.device
    factory = registry.optimizer_factory(config.optimizer)
    hparams = parse_hparams(config.optimizer, factory, optimizer_entry.defaults, lr=config.lr, opts=config.opts)

    # The run to resume is checked before any data is loaded; a new run directory is created
    # only once everything that can be refused has been (nothing on disk for a bad command).
    checkpoint: dict[str, Any] | None = None
    if config.resume:
        run_dir, checkpoint = _open_resume(config, clean=dist.is_main)
        if checkpoint is not None:
            _check_resume(checkpoint, config, dataset_name, run_dir / "last.pt", world=dist.world)
    elif config.out is not None and Path(config.out).expanduser().exists():
        raise _exists(Path(config.out).expanduser())
    # Base weights are read (and refused, if unsafe) now; a resumed run has its own.
    before_edits = _base_weights(config, model_entry) if checkpoint is None else None

    # Data. num_classes and class names come from the dataset, as the seed's CIFAR-10 gives 10.
    data_dir = config.data_dir or default_data_dir()
    train_set = limit(registry.load_dataset(dataset_name, train=True, root=data_dir, download=config.download), config.limit_train)
    val_set = limit(registry.load_dataset(dataset_name, train=False, root=data_dir, download=config.download), config.limit_val)
    if len(train_set) == 0 or len(val_set) == 0:
        raise UsageError(f"dataset '{dataset_name}' in {data_dir} has {len(train_set)} training and {len(val_set)} validation samples: both need at least one")
    if len(train_set) < dist.world:  # distributed: every rank needs a sample per step
        raise UsageError(f"{len(train_set)} training samples cannot be shared out among {dist.world} processes: use more data or fewer processes")
    data_size = dataset_input_size(train_set)
    problem = adapt_error(data_size, model_entry.input_size)
    if problem:
        raise UsageError(f"model '{config.model}' cannot train on dataset '{dataset_name}': {problem}")
    classes = list(dataset_entry.classes or dataset_classes(train_set) or [])
    num_classes = dataset_entry.num_classes or len(classes)
    if not num_classes:
        raise UsageError(f"dataset '{dataset_name}' declares no num_classes and its data has no 'classes' attribute")
    classes = classes if len(classes) == num_classes else [str(i) for i in range(num_classes)]
    mean, std = normalisation(train_set)

    # Model and optimizer, seeded so that the same command twice gives the same weights.
    generator = _seed_everything(config.seed)
    model = registry.build_model(config.model, num_classes, before_edits=before_edits)
    state_bytes = _preflight(model, config.optimizer, factory, hparams, device)
    # NHWC: what cuDNN's and oneDNN's fastest convolutions want (Tudui trains ~15% faster on a
    # CPU as well); a model without 2-D convolutions would only pay a copy per batch.
    channels_last = any(isinstance(m, nn.Conv2d) for m in model.modules())
    amp_dtype = None
    if config.amp and device.type == "cuda":
        if not torch.cuda.is_bf16_supported():
            raise UsageError(f"--amp uses bfloat16, which {torch.cuda.get_device_name(device)} does not support; drop --amp")
        amp_dtype = torch.bfloat16
    elif config.amp and not config.quiet:
        print("zoo: note: --amp only applies on CUDA; training in float32", file=stream)
    if channels_last:
        model.to(device, memory_format=torch.channels_last)
    else:
        model.to(device)
    criterion = nn.CrossEntropyLoss().to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    try:
        optimizer = registry.make_optimizer(config.optimizer, params, hparams)
    except ZooError:
        raise
    except Exception as exc:
        raise UsageError(f"optimizer '{config.optimizer}' cannot train model '{config.model}': {type(exc).__name__}: {exc}") from exc
    # Distributed: DDP first, then compile (compiling DDP lets torch.compile split graphs at its buckets).
    forward = dist.wrap(model)
    forward = torch.compile(forward) if config.compile else forward
    if not config.resume:
        run_dir = dist.new_run_dir(lambda: _create_run_dir(config))  # rank 0 creates it, all get its path
    last_path, best_path = run_dir / "last.pt", run_dir / "best.pt"

    # Hyper-parameters as stored (tuples stay tuples). A resumed run keeps its own, except those
    # given again on this command line (e.g. a lower --lr after a NaN), which win.
    run_hparams = {k: (tuple(v) if isinstance(v, list) else v) for k, v in _plain(hparams).items()}
    changed: dict[str, Any] = {}
    if checkpoint is not None:
        given = set(config.opts) | ({"lr"} if config.lr is not None else set())
        saved = checkpoint["spec"]["hparams"]
        changed = {k: run_hparams[k] for k in given if k in run_hparams and saved.get(k) != run_hparams[k]}
        run_hparams = {**saved, **changed}
    base_entry = registry.model(model_entry.base) if model_entry.base else model_entry
    spec = {
        "model": config.model,
        "optimizer": config.optimizer,
        "hparams": run_hparams,
        "dataset": dataset_name,
        "num_classes": num_classes,
        "classes": classes,
        "input_size": list(model_entry.input_size),
        "data_input_size": list(data_size),
        "mean": list(mean),
        "std": list(std),
        "base": model_entry.base,
        "base_classes": model_entry.base_classes,
        "edits": [edit.as_json() for edit in model_entry.edits],
        "plugin": base_entry.plugin,
        "weights": config.weights or (checkpoint["spec"].get("weights") if checkpoint else None),
        "batch_size": config.batch_size,
        "limit_train": config.limit_train,
        "limit_val": config.limit_val,
        "seed": config.seed,
        "world_size": dist.world,  # processes: the global batch is batch_size x world_size
    }

    # Resume: weights, optimizer state, history and every RNG, restored after building (which
    # drew from the RNG) so that the continuation equals an uninterrupted run bitwise.
    history: list[dict[str, Any]] = []
    partial: dict[str, Any] | None = None
    train_images, train_seconds = 0, 0.0
    start_epoch = 0
    if checkpoint is not None:
        load_state_dict_strict(model, checkpoint["model"], source=str(last_path), target=f"model '{config.model}'")
        optimizer.load_state_dict(checkpoint["optimizer"])
        for key, value in changed.items():
            for group in optimizer.param_groups:
                group[key] = value
        if changed and not config.quiet:
            print(f"zoo: note: resuming with changed hyper-parameters {changed}", file=stream)
        restore_rng(checkpoint["rng"], generator)
        metrics = checkpoint["metrics"]
        history = list(metrics.get("history", []))
        train_images, train_seconds = int(metrics.get("train_images", 0)), float(metrics.get("train_seconds", 0.0))
        start_epoch = int(checkpoint["epoch"])
        partial = checkpoint.get("partial")
    elif config.resume and not config.quiet:
        print(f"zoo: note: {run_dir} has no checkpoint yet (stopped before its first): starting from the beginning", file=stream)

    config_doc = {**_plain(asdict(config)), "dataset": dataset_name, "data_dir": data_dir, "hparams": _plain(run_hparams),
                  "num_classes": num_classes, "base": model_entry.base, "edits": spec["edits"],
                  "resolved_device": str(device), "out": str(run_dir)}
    if dist.is_main:  # distributed: rank 0 alone writes the run directory
        try:
            import yaml

            _write_text(run_dir / "config.yaml", yaml.safe_dump(config_doc, sort_keys=False))
            _write_text(run_dir / "metrics.jsonl", "".join(json.dumps(line) + "\n" for line in history))
        except RunError as exc:
            raise UsageError(f"run directory {run_dir} is not writable: {exc}") from exc
        # last.pt, best.pt and a temporary copy while one is written; a resumed run has the first two.
        _check_disk(run_dir, model, state_bytes, files=1 if checkpoint is not None else 3)

    best_acc = max((line["val_accuracy"] for line in history), default=-1.0)
    best_epoch = next((line["epoch"] for line in history if line["val_accuracy"] == best_acc), None)
    # Distributed: each rank iterates its own shard of every (global) batch and of the validation set.
    train_batches = iterate_batches(train_set, config.batch_size, shuffle=True, generator=generator, device=device,
                                    input_size=model_entry.input_size, workers=config.workers,
                                    rank=dist.rank, world=dist.world)
    val_batches = iterate_batches(val_set, max(config.batch_size, VAL_BATCH_SIZE), shuffle=False, device=device,
                                  input_size=model_entry.input_size, workers=config.workers,
                                  rank=dist.rank, world=dist.world)
    steps = len(train_batches)
    # Samples per step, all ranks together (the last batch may be short), to turn per-step mean
    # losses into the epoch's; an epoch of N ranks uses the first n - n % N samples of its order.
    sizes = train_batches.step_sizes()
    step_sizes = torch.tensor(sizes, dtype=torch.float32, device=device)
    train_criterion = dist.train_criterion(criterion)  # distributed: its value is the mean over all ranks

    host = dist.observers(get_plugin_host())  # distributed: events are emitted by rank 0 only
    state = Run(run_dir, config, model, optimizer, start_epoch, device, spec, epoch=start_epoch)
    if not config.quiet:
        print(f"zoo: {config.model} + {config.optimizer} on {dataset_name} ({len(train_set)} train / "
              f"{len(val_set)} val) on {dist.describe()}, epochs {start_epoch + 1}-{config.epochs} -> {run_dir}", file=stream)

    def summary() -> dict[str, Any]:
        last = history[-1] if history else {}
        return {
            "run_dir": str(run_dir),
            "model": config.model,
            "optimizer": config.optimizer,
            "dataset": dataset_name,
            "device": str(device),
            "epochs": state.epoch,
            "train_loss": last.get("train_loss"),
            "val_loss": last.get("val_loss"),
            "val_accuracy": last.get("val_accuracy"),
            "best_val_accuracy": best_acc if history else None,
            "last_checkpoint": str(last_path) if last_path.exists() else None,
            "best_checkpoint": str(best_path) if best_path.exists() else None,
            "images_per_second": train_images / train_seconds if train_seconds > 0 else None,
        }

    def save(path: Path, epoch: int, metrics: dict[str, Any], partial: dict[str, Any] | None = None) -> None:
        if not dist.is_main:  # distributed: every rank holds the same state; rank 0 writes it
            return
        ckpt = make_checkpoint(model, optimizer, epoch=epoch, spec=spec, metrics=metrics,
                               rng=capture_rng(generator), partial=partial)
        atomic_save(ckpt, path)
        host.emit("on_checkpoint", run=state, path=str(path))

    def lr() -> float | None:
        value = optimizer.param_groups[0].get("lr")
        return float(value) if value is not None else None

    def check_finite(losses: list[torch.Tensor], start: int, epoch: int) -> None:
        """Stop the run if a loss of steps ``start + 1`` .. ``len(losses)`` is NaN or infinite."""
        if start >= len(losses):
            return
        window = torch.stack(losses[start:])
        bad = (~torch.isfinite(window)).nonzero()
        if bad.numel():  # one host sync per check
            step = start + int(bad[0, 0]) + 1
            value = float(window[step - 1 - start])
            kept = f"{last_path} is untouched" if last_path.exists() else "no checkpoint was written"
            rate = lr()
            hint = f" (now {rate:g}, e.g. --lr {rate / 10:g})" if rate else ""
            raise RunError(
                f"the loss became {value} at epoch {epoch}, step {step}/{steps}: training diverged; "
                f"lower the learning rate{hint}; {kept}"
            )

    started = _started(run_dir) if config.resume else _dt.datetime.now().isoformat(timespec="seconds")
    if dist.is_main:
        _write_status(run_dir, "running", started=started, epochs_done=start_epoch)
    host.emit("on_run_start", run=state)
    status, error = "failed", None
    signals = _StopSignals()
    try:
        with signals:
            for epoch in range(start_epoch + 1, config.epochs + 1):
                epoch_start = time.perf_counter()
                forward.train()
                # Each step's loss, left on the device: appending to a list costs nothing,
                # where an indexed store into a tensor costs ~5 us a step (and a copy kernel on CUDA).
                losses: list[torch.Tensor] = []
                first_step, seconds_before = 0, 0.0
                if partial is not None and partial["epoch"] == epoch:
                    # Continue a stopped epoch: replay its batch order, skip the batches done,
                    # then put back the RNG state of the moment it stopped.
                    generator.set_state(partial["shuffle"])
                    first_step, seconds_before = int(partial["step"]), float(partial["seconds"])
                    losses = list(partial["losses"].to(device).unbind())
                epoch_shuffle = generator.get_state()
                batches = iter(train_batches)
                for _ in range(first_step):
                    next(batches)
                if first_step:
                    restore_rng({k: v for k, v in checkpoint["rng"].items() if k != "shuffle"})  # type: ignore[index]
                    # distributed: ranks > 0 continue their own streams where they stopped
                    dist.restore_rank_rng(partial.get("ranks_rng"), config.seed, epoch)  # type: ignore[union-attr]
                else:
                    dist.fork_rng(config.seed, epoch)  # distributed: ranks > 0 draw their own dropout masks
                partial = None

                bar = None
                if not config.quiet and stream.isatty():
                    from tqdm import tqdm

                    bar = tqdm(total=steps, initial=first_step, desc=f"epoch {epoch}/{config.epochs}",
                               unit="batch", file=stream, leave=False, dynamic_ncols=True)
                train_start = time.perf_counter()
                step = checked = first_step  # the partial epoch's losses were checked before it was saved
                try:
                    for step, (inputs, targets) in enumerate(batches, start=first_step + 1):
                        if channels_last:
                            inputs = inputs.contiguous(memory_format=torch.channels_last)
                        losses.append(train_step(forward, optimizer, train_criterion, inputs, targets, amp_dtype=amp_dtype))
                        if step % CHECK_EVERY == 0:
                            check_finite(losses, checked, epoch)
                            checked = step
                        if bar is not None:
                            bar.update(1)
                        # Distributed: a vote, so that every rank stops after the same step.
                        if dist.stop_vote(signals.signum is not None) and step < steps:
                            break
                finally:
                    if bar is not None:
                        bar.close()
                if device.type == "cuda":
                    torch.cuda.synchronize(device)  # the steps ran asynchronously: time all of them
                train_seconds += time.perf_counter() - train_start
                train_images += sum(sizes[first_step:step])
                check_finite(losses, checked, epoch)  # before anything is saved: never NaN weights

                if step < steps:  # stopped by a signal mid-epoch: save where we are
                    partial_state = {"epoch": epoch, "step": step, "losses": torch.stack(losses), "shuffle": epoch_shuffle,
                                     "seconds": seconds_before + time.perf_counter() - epoch_start}
                    ranks_rng = dist.rank_rng_states()  # distributed: every rank's stream, gathered
                    if ranks_rng is not None:
                        partial_state["ranks_rng"] = ranks_rng
                    save(last_path, epoch - 1, {**(history[-1] if history else {}), "history": history,
                                                "best_val_accuracy": best_acc, "best_epoch": best_epoch,
                                                "train_images": train_images, "train_seconds": train_seconds},
                         partial_state)
                    raise Interrupted(f"stopped by {signals.name} at epoch {epoch}, step {step}/{steps}; "
                                      f"continue with --resume --out {run_dir}", signals.signum or signal.SIGINT)

                train_loss = float((torch.stack(losses) * step_sizes).sum() / train_batches.samples)
                # Distributed: each rank validates its shard with rank 0's weights and buffers; the sums are added up.
                result = evaluate(dist.for_evaluation(forward, model), val_batches, criterion, amp_dtype=amp_dtype,
                                  channels_last=channels_last, reduce=dist.sum_metrics if dist.distributed else None)
                line = {"epoch": epoch, "train_loss": train_loss, "val_loss": result["val_loss"],
                        "val_accuracy": result["val_accuracy"],
                        "seconds": round(seconds_before + time.perf_counter() - epoch_start, 3), "lr": lr()}
                history.append(line)
                improved = line["val_accuracy"] > best_acc
                if improved:
                    best_acc, best_epoch = line["val_accuracy"], epoch
                metrics = {**line, "history": history, "best_val_accuracy": best_acc, "best_epoch": best_epoch,
                           "train_images": train_images, "train_seconds": train_seconds}
                # best.pt before last.pt: once last.pt says "epoch N", best.pt is up to date with it.
                if improved:
                    save(best_path, epoch, metrics)
                save(last_path, epoch, metrics)
                if dist.is_main:
                    with open(run_dir / "metrics.jsonl", "a") as f:
                        f.write(json.dumps(line) + "\n")
                state.epoch = epoch
                if not config.quiet:
                    rate = f"  {train_images / train_seconds:,.0f} img/s" if train_seconds > 0 else ""
                    print(f"epoch {epoch}/{config.epochs}  train_loss {train_loss:.4f}  val_loss {line['val_loss']:.4f}  "
                          f"val_accuracy {line['val_accuracy']:.4f}{' (best)' if improved else ''}  "
                          f"{line['seconds']:.1f}s{rate}", file=stream, flush=True)
                host.emit("on_epoch_end", run=state, epoch=epoch, metrics=line)
                # Arrived during validation (distributed: on any rank, or during the last step).
                if dist.agree(signals.signum is not None) and epoch < config.epochs:
                    raise Interrupted(f"stopped by {signals.name} after epoch {epoch}; continue with --resume --out {run_dir}",
                                      signals.signum)
        status = "finished"
    except KeyboardInterrupt:  # a second signal: out at once, the previous checkpoint intact
        status = "interrupted"
        kept = f"{last_path} holds the last checkpoint" if last_path.exists() else "no checkpoint was written yet"
        raise Interrupted(f"stopped at once by a second {signals.name}; {kept}", signals.signum or signal.SIGINT) from None
    except Interrupted:
        status = "interrupted"
        raise
    except ZooError as exc:
        error = str(exc)
        raise
    except Exception as exc:
        error = f"{type(exc).__name__}: {' '.join(str(exc).split())}"
        raise
    finally:
        try:
            if dist.is_main:
                _write_status(run_dir, status, started=started, epochs_done=state.epoch, error=error)
        except RunError as exc:  # a full disk must not hide the error that stopped the run
            print(f"zoo: warning: could not write {run_dir / 'status.json'}: {exc}", file=stream)
        host.emit("on_run_end", run=state, metrics={**summary(), "status": status})
        if status == "finished":
            dist.close()  # distributed: leave the process group (after a failure, exiting does)
    return summary()


# -- validate -----------------------------------------------------------------------------------


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
    from zoo.data import adapt_error, dataset_classes, dataset_input_size, iterate_batches, limit
    from zoo.registry import get_registry

    if limit_val is not None and (not isinstance(limit_val, int) or limit_val < 1):
        raise UsageError(f"--limit-val must be an integer of at least 1, got {limit_val!r}")
    target = resolve_device(device)
    ckpt = load_checkpoint(checkpoint, trust=trust)
    registry = get_registry(registry_files)
    spec = ckpt["spec"]
    model = model_from_checkpoint(ckpt, source=str(checkpoint), registry=registry).to(target)
    name = data or spec["dataset"]
    entry = registry.dataset(name)
    root = data_dir or default_data_dir()
    val_set = limit(registry.load_dataset(name, train=False, root=root, download=False), limit_val)
    num_classes = entry.num_classes or len(dataset_classes(val_set) or [])
    if num_classes != spec["num_classes"]:
        raise UsageError(f"dataset '{name}' has {num_classes} classes but {checkpoint} was trained for {spec['num_classes']}")
    problem = adapt_error(dataset_input_size(val_set), spec["input_size"])
    if problem:
        raise UsageError(f"{checkpoint} cannot be validated on dataset '{name}': {problem}")
    batches = iterate_batches(val_set, VAL_BATCH_SIZE, shuffle=False, device=target, input_size=tuple(spec["input_size"]))
    result = evaluate(model, batches, nn.CrossEntropyLoss().to(target))
    return result
