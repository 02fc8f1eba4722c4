"""Checks before training a model x optimizer pair: can the optimizer take this model, and will
parameters, gradients and optimizer state fit in the device's memory?

Both are cheap (no forward pass, nothing allocated on the device) so that ``zoo run vgg16
lbfgs`` is refused in a second with its numbers instead of dying to the out-of-memory killer
twenty minutes in: L-BFGS keeps ``2 x history_size`` flat copies of every trainable parameter,
which for VGG16's 134M parameters and the default history of 100 is about 100 GiB.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from zoo.errors import UsageError, one_line
from zoo.hparams import REQUIRED, optimizer_params

__all__ = [
    "MemoryEstimate",
    "IncompatibleError",
    "WontFitError",
    "ACTIVATION_ALLOWANCE",
    "estimate_memory",
    "available_memory",
    "check_compatible",
    "preflight",
    "format_bytes",
    "activation_bytes_per_sample",
    "validation_batch_size",
]

GiB = 1 << 30
MiB = 1 << 20

# The estimate knows no batch size. Activations of a small batch at the zoo's input sizes take
# a few hundred MiB at most; on top of that the step itself builds temporaries as large as the
# parameters (the backward's gradient buffers before accumulation, foreach optimizers'
# intermediate lists), so the fit check adds this plus one more copy of the trainable
# parameters.
ACTIVATION_ALLOWANCE = 256 * MiB


class IncompatibleError(UsageError):
    """The optimizer cannot train this model (exit 2), whatever the memory."""


class WontFitError(UsageError):
    """Parameters, gradients and optimizer state would not fit in the device's memory (exit 2)."""


def format_bytes(n: float) -> str:
    """``1536 -> '1.5 KiB'``; GiB is the largest unit."""
    for unit, size in (("GiB", GiB), ("MiB", MiB), ("KiB", 1 << 10)):
        if abs(n) >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes a training run holds besides activations. ``state_detail`` says what the
    optimizer keeps per parameter and how it was counted."""

    parameters: int  # every parameter, trainable or frozen
    buffers: int  # batch-norm running statistics and the like
    gradients: int  # trainable parameters only
    optimizer_state: int
    state_detail: str
    trainable_numel: int
    kind: str | None = None  # the torch.optim class whose state was counted; None: unknown

    @property
    def total(self) -> int:
        return self.parameters + self.buffers + self.gradients + self.optimizer_state

    @property
    def breakdown(self) -> str:
        parts = [f"parameters {format_bytes(self.parameters)} ({self.trainable_numel:,} trainable)"]
        if self.buffers:
            parts.append(f"buffers {format_bytes(self.buffers)}")
        parts.append(f"gradients {format_bytes(self.gradients)}")
        parts.append(f"optimizer state {format_bytes(self.optimizer_state)} ({self.state_detail})")
        return f"{', '.join(parts)}; total {format_bytes(self.total)}"


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def _trainable(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    return [(name, p) for name, p in model.named_parameters() if p.requires_grad]


def _optimizer_class(factory: Any) -> type | None:
    """The class a factory makes, when that is knowable without calling it."""
    while isinstance(factory, functools.partial):
        factory = factory.func
    return factory if isinstance(factory, type) else None


def _torch_base(cls: type | None) -> str | None:
    """The name of the first ``torch.optim`` class in ``cls``'s ancestry: a subclass of AdamW
    keeps AdamW's state."""
    for klass in getattr(cls, "__mro__", ()):
        module = klass.__module__
        if (module == "torch.optim" or module.startswith("torch.optim.")) and klass is not torch.optim.Optimizer:
            return klass.__name__
    return None


def _effective_hparams(cls: type | None, factory: Any, hparams: dict[str, Any]) -> dict[str, Any]:
    """What the optimizer will run with: the class's signature defaults, the factory's, then
    ``hparams``."""
    out: dict[str, Any] = {}
    for source in (cls, factory):
        if source is None:
            continue
        try:
            params, _ = optimizer_params(source)
        except (TypeError, ValueError):  # no introspectable signature
            continue
        out.update({p.name: p.default for p in params if p.default is not REQUIRED})
    return {**out, **hparams}


def _state(kind: str | None, hp: dict[str, Any], trainable: list[nn.Parameter], name: str) -> tuple[int, str]:
    """Bytes of optimizer state and what they are, from each optimizer's documented
    per-parameter state. Scalars (step counters, ASGD's eta and mu) are left out."""
    one = sum(_nbytes(p) for p in trainable)  # one copy of the trainable parameters

    def copies(n: int, what: str) -> tuple[int, str]:
        return n * one, f"{n} x parameters: {what}" if n else what

    if kind == "SGD":
        return copies(1, "momentum_buffer") if hp.get("momentum") else copies(0, "none: momentum=0")
    if kind in ("Adam", "AdamW"):
        if hp.get("amsgrad"):
            return copies(3, "exp_avg, exp_avg_sq, max_exp_avg_sq")
        return copies(2, "exp_avg, exp_avg_sq")
    if kind in ("NAdam", "RAdam"):
        return copies(2, "exp_avg, exp_avg_sq")
    if kind == "Adamax":
        return copies(2, "exp_avg, exp_inf")
    if kind == "SparseAdam":
        return copies(2, "exp_avg, exp_avg_sq")
    if kind == "Adagrad":
        return copies(1, "sum")
    if kind == "Adadelta":
        return copies(2, "square_avg, acc_delta")
    if kind == "RMSprop":
        extra = ["momentum_buffer"] * bool(hp.get("momentum")) + ["grad_avg"] * bool(hp.get("centered"))
        return copies(1 + len(extra), ", ".join(["square_avg", *extra]))
    if kind == "Rprop":
        return copies(2, "prev, step_size")
    if kind == "ASGD":
        return copies(1, "ax")
    if kind == "Muon":
        return copies(1, "momentum_buffer")
    if kind == "LBFGS":
        history = int(hp.get("history_size", 100))
        # old_dirs and old_stps hold `history` flat vectors each; d, prev_flat_grad and the
        # current flat gradient are live during the step; the strong-Wolfe line search also
        # clones the starting point and brackets two gradients.
        wolfe = 3 if hp.get("line_search_fn") else 0
        what = f"2 x history_size={history} (old_dirs, old_stps) + d, prev_flat_grad, flat_grad"
        return copies(2 * history + 3 + wolfe, what + (" + line search x_init, g_prev, g_new" if wolfe else ""))
    if kind == "Adafactor":
        # Factored second moment: a row and a column vector per matrix (over the last two
        # dims), a full variance only for vectors and scalars.
        total = sum(
            (p.numel() // p.shape[-1] + p.numel() // p.shape[-2]) * p.element_size() if p.dim() >= 2 else _nbytes(p)
            for p in trainable
        )
        return total, "factored row_var + col_var; full variance for 1-D parameters"
    label = f"torch.optim.{kind}" if kind else f"'{name}'"
    return copies(2, f"unknown optimizer {label}: assumed 2 copies, like Adam")


def estimate_memory(model: nn.Module, optimizer_name: str, factory: Any, hparams: dict[str, Any]) -> MemoryEstimate:
    """Bytes of parameters, buffers, gradients and optimizer state for training ``model`` with
    ``factory(trainable_params, **hparams)``.

    ``hparams`` is what the factory will be called with (the registry entry's defaults
    included); keys it lacks take the signature's defaults. Works on ``meta`` models.
    """
    trainable = [p for _, p in _trainable(model)]
    # A storage-free instance tells the class and the hyper-parameters it really runs with,
    # including any a factory function sets itself; the signatures are the fallback.
    built = _construct(factory, trainable, hparams, meta_only=True) if trainable else None
    if isinstance(built, torch.optim.Optimizer):
        cls: type | None = type(built)
        hp = {**built.defaults, **{k: v for k, v in built.param_groups[0].items() if k != "params"}}
    else:
        cls = _optimizer_class(factory)
        hp = _effective_hparams(cls, factory, hparams)
    kind = _torch_base(cls)
    state, detail = _state(kind, hp, trainable, optimizer_name)
    return MemoryEstimate(
        parameters=sum(_nbytes(p) for p in model.parameters()),
        buffers=sum(_nbytes(b) for b in model.buffers()),
        gradients=sum(_nbytes(p) for p in trainable),
        optimizer_state=state,
        state_detail=detail,
        trainable_numel=sum(p.numel() for p in trainable),
        kind=kind,
    )


# -- available memory --------------------------------------------------------------------------


def _read_kv(path: Path) -> dict[str, int]:
    """``key value`` lines (/proc/meminfo, memory.stat) as ints; units (kB) are the caller's."""
    out: dict[str, int] = {}
    try:
        for line in path.read_text().splitlines():
            key, _, rest = line.partition(" ")
            fields = rest.split()
            if fields and fields[0].isdigit():
                out[key.rstrip(":")] = int(fields[0])
    except OSError:
        pass
    return out


def _cgroup_room(directory: Path, limit_file: str, usage_file: str, cache_key: str) -> int | None:
    try:
        limit = (directory / limit_file).read_text().strip()
        usage = int((directory / usage_file).read_text())
    except (OSError, ValueError):
        return None
    if limit == "max" or not limit.isdigit() or int(limit) >= 1 << 60:  # v1 writes "unlimited" as ~2**63
        return None
    # Clean page cache is reclaimed before the OOM killer runs: count it as free.
    cache = min(_read_kv(directory / "memory.stat").get(cache_key, 0), usage)
    return max(0, int(limit) - usage + cache)


def _cgroup_available(root: Path = Path("/sys/fs/cgroup"), proc: Path = Path("/proc/self/cgroup")) -> int | None:
    """Room under the tightest memory limit of this process's cgroup and its ancestors
    (v2 ``memory.max - memory.current``, or v1 ``memory.limit_in_bytes - memory.usage_in_bytes``)."""
    try:
        lines = proc.read_text().splitlines()
    except OSError:
        return None
    rooms: list[int] = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":
            base, files = root, ("memory.max", "memory.current", "inactive_file")
        elif "memory" in controllers.split(","):
            base, files = root / "memory", ("memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file")
        else:
            continue
        # Inside a container the process's path may not exist under the namespaced mount;
        # walking up still reaches the container's own limit at the mount's root.
        directory = base / path.strip("/")
        while True:
            room = _cgroup_room(directory, *files)
            if room is not None:
                rooms.append(room)
            if directory == base or base not in directory.parents:
                break
            directory = directory.parent
    return min(rooms) if rooms else None


def available_memory(device: str | torch.device) -> int | None:
    """Bytes free for a new allocation on ``device``: on CPU, ``MemAvailable`` bounded by any
    cgroup memory limit; on CUDA, the driver's free memory. None when unknown."""
    device = torch.device(device)
    if device.type == "cpu":
        meminfo = _read_kv(Path("/proc/meminfo")).get("MemAvailable")
        found = [n for n in (meminfo * 1024 if meminfo is not None else None, _cgroup_available()) if n is not None]
        return min(found) if found else None
    if device.type == "cuda" and torch.cuda.is_available():
        free, _total = torch.cuda.mem_get_info(device)
        return free
    return None


# -- compatibility -----------------------------------------------------------------------------


def _construct(
    factory: Callable[..., Any], params: list[torch.Tensor], hparams: dict[str, Any], *, meta_only: bool = False
) -> Any:
    """Build the optimizer to see whether it accepts these parameters; returns the optimizer or
    the exception. It is built on storage-free ``meta`` stand-ins first (Adagrad, for one,
    allocates its state in the constructor), then, if that fails, on the real parameters, in case
    the constructor reads values."""
    stand_ins = [torch.empty_like(p, device="meta").requires_grad_(True) for p in params]
    try:
        return factory(stand_ins, **hparams)
    except Exception as exc:
        if meta_only:
            return exc
    try:
        return factory(params, **hparams)
    except Exception as exc:
        return exc


def _examples(items: list[str], n: int = 3) -> str:
    return ", ".join(items[:n]) + (", ..." if len(items) > n else "")


def check_compatible(model: nn.Module, optimizer_name: str, factory: Any, hparams: dict[str, Any]) -> str | None:
    """Why ``factory(trainable_params, **hparams)`` cannot train ``model``, or None if it can."""
    named = _trainable(model)
    if not named:
        return f"the model has no trainable parameters: nothing for '{optimizer_name}' to optimize"
    built = _construct(factory, [p for _, p in named], hparams)
    cls = _optimizer_class(factory) or (type(built) if isinstance(built, torch.optim.Optimizer) else None)
    kind = _torch_base(cls)
    if kind == "SparseAdam":
        sparse = {id(m.weight) for m in model.modules() if isinstance(m, (nn.Embedding, nn.EmbeddingBag)) and m.sparse}
        dense = [name for name, p in named if id(p) not in sparse]
        if dense:
            return (
                f"'{optimizer_name}' (torch.optim.SparseAdam) needs sparse gradients, which only "
                f"nn.Embedding(sparse=True) and nn.EmbeddingBag(sparse=True) produce, but {len(dense)} of the "
                f"model's {len(named)} trainable parameters get dense ones ({_examples(dense)}); use adam or adamw"
            )
    if kind == "Muon":
        other = [f"{name} is {p.dim()}-D" for name, p in named if p.dim() != 2]
        if other:
            return (
                f"'{optimizer_name}' (torch.optim.Muon) only takes 2-D parameters, and the model has "
                f"{len(other)} that are not ({_examples(other)}); use adamw, or give muon the 2-D weights "
                f"and adamw the rest"
            )
    if isinstance(built, Exception):  # a hyper-parameter's value (torch checks them) or the parameters
        given = ", ".join(f"{k}={v!r}" for k, v in hparams.items()) or "its defaults"
        return (
            f"'{optimizer_name}' cannot be built with {given} for this model: {one_line(built)} "
            f"(zoo show {optimizer_name})"
        )
    return None


# -- both --------------------------------------------------------------------------------------


def _resident(model: nn.Module, device: torch.device) -> int:
    """Bytes of the model already on ``device``: they are not part of what is still free."""
    if device.type == "cuda" and device.index is None and torch.cuda.is_available():
        device = torch.device("cuda", torch.cuda.current_device())
    tensors = [*model.parameters(), *model.buffers()]
    tensors += [p.grad for p in model.parameters() if p.grad is not None]
    return sum(_nbytes(t) for t in tensors if t.device == device)


def _gib(n: float) -> str:
    return f"{n / GiB:.1f} GiB"


def preflight(
    model: nn.Module, optimizer_name: str, factory: Any, hparams: dict[str, Any], device: str | torch.device
) -> MemoryEstimate:
    """Refuse a pair before any training: ``IncompatibleError`` when the optimizer cannot take
    the model, ``WontFitError`` when parameters, gradients, optimizer state and an allowance
    for the step (``ACTIVATION_ALLOWANCE`` plus one copy of the trainable parameters) exceed
    the free memory of ``device``. Returns the estimate."""
    reason = check_compatible(model, optimizer_name, factory, hparams)
    if reason:
        raise IncompatibleError(reason)
    estimate = estimate_memory(model, optimizer_name, factory, hparams)
    device = torch.device(device)
    free = available_memory(device)
    if free is None:
        return estimate
    # The model's own tensors already on the device count as available: they are in use, but
    # by the very parameters the estimate counts.
    resident = _resident(model, device)
    available = free + resident
    allowance = ACTIVATION_ALLOWANCE + estimate.gradients
    need = estimate.total + allowance
    if need <= available:
        return estimate

    one = estimate.gradients  # one copy of the trainable parameters
    base = need - estimate.optimizer_state  # everything but the optimizer's state
    fixes: list[str] = []
    if estimate.kind == "LBFGS" and one:
        # state = fixed + 2 x history_size copies: find `fixed` from a history of 1
        shortest = estimate_memory(model, optimizer_name, factory, {**hparams, "history_size": 1})
        fixed = shortest.optimizer_state - 2 * one
        fits = math.floor((available - base - fixed) / (2 * one))
        if fits >= 1:
            fixes.append(f"--opt history_size={min(fits, 10)} (at most {fits} fits)")
    for other, copies in (("adamw", 2), ("sgd", 0)):
        if base + copies * one <= available:
            fixes.append(f"an optimizer with less state such as {other} (about {_gib(base + copies * one)})")
            break
    fixes.append("a smaller model (or frozen layers)")
    where = "CPU" if device.type == "cpu" else str(device)
    held = f" (free memory plus the {_gib(resident)} the model already holds)" if resident else ""
    raise WontFitError(
        f"'{optimizer_name}' on this model needs about {_gib(need)} of {where} memory but only "
        f"{_gib(available)} is available{held}: {estimate.breakdown}, plus {_gib(allowance)} for "
        f"activations and the step's temporaries. Try {', or '.join(fixes)}"
    )


# -- validation batch ------------------------------------------------------------------------------


def activation_bytes_per_sample(model: nn.Module, input_size: tuple[int, ...], device: torch.device) -> int:
    """Bytes of every leaf module's output for one sample in an inference-mode forward on
    ``device``: an upper bound of what validation holds per sample (it frees each activation
    once the next layer has used it)."""
    total = 0

    def count(module: nn.Module, inputs: Any, output: Any) -> None:
        nonlocal total
        if isinstance(output, torch.Tensor):
            total += _nbytes(output)

    leaves = [m for m in model.modules() if not any(True for _ in m.children())]
    handles = [m.register_forward_hook(count) for m in leaves]
    was_training = model.training
    try:
        model.eval()
        with torch.inference_mode():
            model(torch.zeros(1, *input_size, device=device))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return total


def validation_batch_size(per_sample: int, free: int | None, largest: int) -> int:
    """The validation batch: ``largest``, or less where its activations (``per_sample`` bytes a
    sample) would take more than half of the ``free`` bytes (None: not known, ``largest``)."""
    if free is None or per_sample <= 0:
        return largest
    return max(1, min(largest, free // 2 // per_sample))
