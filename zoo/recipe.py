"""``--sched`` and ``--augment``: a learning-rate schedule and the training-batch augmentations,
built from their registry names for one run.

A scheduler's hyper-parameters come from its entry (a preset's), then ``--sched-opt KEY=VALUE``
pairs checked against the factory's signature; what only the run knows is filled in when the
signature asks for it and nobody gave it (:data:`RUN_FILLED`). An augmentation is
``NAME[:KEY=VALUE,...]``, its pairs checked the same way; several compose in order. torch is
imported only by the factories, when a run builds them.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from zoo.entries import check_interval
from zoo.errors import UsageError, ZooError, one_line
from zoo.hparams import Param, check_hparams, check_required, factory_params

if TYPE_CHECKING:  # annotations only: the registry sits below this module, the runner above it
    from zoo.registry import Registry

__all__ = [
    "RUN_FILLED",
    "RUN_KEPT",
    "Schedule",
    "Augmentation",
    "parse_spec",
    "scheduler_params",
    "run_filled",
    "build_scheduler",
    "build_augmentation",
]

# Hyper-parameters only the run knows, filled in when a scheduler's signature asks for one and
# neither the user nor the preset gave it. The lengths are in the unit the scheduler steps in.
RUN_FILLED = {
    "epochs": "the run's epochs",
    "steps_per_epoch": "the run's optimizer steps per epoch",
    "total_steps": "the run's length in {unit}",
    "T_max": "the run's length in {unit}",
    "total_iters": "the run's length in {unit}",
    "max_lr": "the optimizer's learning rate",  # only where the factory requires it (OneCycleLR, CyclicLR)
}
_LENGTHS = ("total_steps", "T_max", "total_iters")
_UNITS = {"epoch": "epochs", "step": "optimizer steps (epochs x steps per epoch)"}
# A scheduler's position is the run's: set at the start, restored from the checkpoint on resume.
RUN_KEPT = ("last_epoch", "verbose")


# -- specs ----------------------------------------------------------------------------------------

# a comma that starts the next KEY=VALUE pair (so a value may hold commas: milestones=30,60)
_NEXT_PAIR = re.compile(r",(?=\s*[A-Za-z_][\w-]*\s*=)")


def parse_spec(text: str, flag: str = "--augment") -> tuple[str, dict[str, str]]:
    """``"crop:padding=4,p=0.5"`` -> ``("crop", {"padding": "4", "p": "0.5"})``: the
    ``NAME[:KEY=VALUE,...]`` syntax of ``--augment``. Keys are spelled with ``_`` (``-`` is
    accepted); values stay text, converted later against the factory's signature."""

    def bad(why: str) -> UsageError:
        return UsageError(f"{flag} '{text}': {why}; expected NAME[:KEY=VALUE,...] (e.g. {flag} crop:padding=4)")

    name, colon, rest = text.strip().partition(":")
    name = name.strip()
    if not name:
        raise bad("no name before ':'" if colon else "empty")
    if any(c in name for c in "=, \t"):
        raise bad(f"'{name}' is not a name")
    opts: dict[str, str] = {}
    if not colon:
        return name, opts
    if not rest.strip():
        raise bad("nothing after ':'")
    if rest.strip().endswith(","):
        raise bad("a ',' with no KEY=VALUE after it")
    for pair in _NEXT_PAIR.split(rest):
        key, eq, value = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not eq or not key.isidentifier() or not value.strip():
            raise bad(f"'{pair.strip()}' is not KEY=VALUE")
        if key in opts:
            raise bad(f"'{key}' is given twice")
        opts[key] = value.strip()
    return name, opts


def _plain(value: Any) -> Any:
    """``value`` as YAML and JSON write it (config.yaml, the checkpoint's spec): tuples as
    lists, a 0-d tensor as a float, anything else as its repr."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    try:
        return float(value)
    except (TypeError, ValueError, RuntimeError):
        return repr(value)


# -- schedulers -------------------------------------------------------------------------------------


def scheduler_params(factory: Any) -> tuple[list[Param], bool]:
    """A scheduler factory's hyper-parameters (after ``optimizer``; without :data:`RUN_KEPT`),
    and whether it also accepts ``**kwargs``."""
    params, var_kw = factory_params(factory, leading=1)
    return [p for p in params if p.name not in RUN_KEPT], var_kw


def run_filled(params: Iterable[Param], interval: str) -> dict[str, str]:
    """Which of ``params`` a run fills when nobody gives them, each with what it is filled
    with (``zoo show`` prints this)."""
    out = {}
    for p in params:
        if p.name in RUN_FILLED and (p.name != "max_lr" or p.required):
            out[p.name] = RUN_FILLED[p.name].format(unit=_UNITS[interval])
    return out


def _optimizer_lr(optimizer: Any) -> float | list[float]:
    """The optimizer's learning rate before any schedule (one number, or one per group)."""
    lrs = [float(group.get("initial_lr", group["lr"])) for group in optimizer.param_groups]
    return lrs[0] if len(set(lrs)) == 1 else lrs


def _fill(
    params: list[Param], given: Mapping[str, Any], interval: str, epochs: int, steps_per_epoch: int, optimizer: Any
) -> dict[str, Any]:
    """The run-known hyper-parameters the signature asks for and ``given`` lacks. A length
    follows a given ``epochs`` or ``steps_per_epoch`` (OneCycleLR(epochs=5) gets 5 epochs of
    steps), else the run's."""

    def count(key: str, default: int) -> int:
        value = given.get(key)
        return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else default

    run_epochs, run_steps = count("epochs", epochs), count("steps_per_epoch", steps_per_epoch)
    length = run_epochs * run_steps if interval == "step" else run_epochs
    values: dict[str, Any] = {"epochs": epochs, "steps_per_epoch": steps_per_epoch}
    values.update(dict.fromkeys(_LENGTHS, length))
    filled = {}
    for name in run_filled(params, interval):
        if name not in given:
            filled[name] = _optimizer_lr(optimizer) if name == "max_lr" else values[name]
    return filled


def _needs_metric(scheduler: Any) -> bool:
    """Whether ``scheduler.step`` takes a value (ReduceLROnPlateau's ``metrics``)."""
    from torch.optim.lr_scheduler import ReduceLROnPlateau

    if isinstance(scheduler, ReduceLROnPlateau):
        return True
    try:
        signature = inspect.signature(scheduler.step)
    except (TypeError, ValueError):
        return False
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return any(p.default is p.empty and p.kind in positional for p in signature.parameters.values())


@dataclass
class Schedule:
    """A built scheduler and how the run steps it.

    ``interval``: ``"epoch"`` (:meth:`step` after each epoch) or ``"step"`` (after each
    optimizer step). ``needs_metric``: step it with the epoch's ``val_loss``
    (ReduceLROnPlateau; always per epoch). ``hparams``: what the factory was given, as plain
    values (for config.yaml and the checkpoint's spec); ``filled``: which of them the run filled.
    """

    scheduler: Any
    interval: str
    name: str
    hparams: dict[str, Any]
    needs_metric: bool = False
    filled: tuple[str, ...] = ()

    def step(self, metric: float | None = None) -> None:
        if self.needs_metric:
            if metric is None:
                raise ValueError(f"scheduler '{self.name}' is stepped with the epoch's validation loss")
            self.scheduler.step(metric)
        else:
            self.scheduler.step()

    def state_dict(self) -> dict[str, Any]:
        return self.scheduler.state_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.scheduler.load_state_dict(state)

    def as_json(self) -> dict[str, Any]:
        """``{"name", "interval", "hparams"}``: what config.yaml and the checkpoint record."""
        return {"name": self.name, "interval": self.interval, "hparams": dict(self.hparams)}


def build_scheduler(
    registry: Registry,
    name: str,
    optimizer: Any,
    *,
    opts: Mapping[str, str],
    interval: str | None,
    epochs: int,
    steps_per_epoch: int,
) -> Schedule:
    """Build scheduler ``name`` (a preset: its base with its hyper-parameters) on ``optimizer``.

    ``opts``: the ``--sched-opt`` texts, checked against the factory's signature and converted;
    ``interval``: ``--sched-interval`` (None: the entry's); ``epochs``: the run's epochs in all;
    ``steps_per_epoch``: optimizer steps per epoch (batches / ``--accumulate``). Every
    problem is a UsageError naming the scheduler and what to do.
    """
    entry = registry.scheduler(name)
    owner = f"scheduler '{name}'"
    interval = entry.interval if interval is None else check_interval(interval, "--sched-interval")
    if not (isinstance(epochs, int) and epochs >= 1 and isinstance(steps_per_epoch, int) and steps_per_epoch >= 1):
        raise UsageError(f"{owner}: a run of {epochs} epochs of {steps_per_epoch} steps has nothing to schedule")
    for key in opts:
        if key in RUN_KEPT:
            raise UsageError(
                f"{owner}: {key} is the run's (a resumed run restores it from its checkpoint), not a hyper-parameter"
            )
    factory = registry.scheduler_factory(name)
    params, var_kw = scheduler_params(factory)
    known = {p.name for p in params}
    stray = [key for key in entry.defaults if key not in known and not var_kw]
    if stray:
        raise UsageError(
            f"{owner} ({registry.origin(entry)}) sets '{stray[0]}', which its factory does not take; "
            f"valid: {', '.join(sorted(known)) or 'none'}"
        )
    how = "--sched-opt {key}=VALUE"
    hparams = check_hparams(
        owner, params, var_kw, entry.defaults, dict(opts), show=f"zoo show {name}", how=how, require=False
    )
    filled = _fill(params, hparams, interval, epochs, steps_per_epoch, optimizer)
    hparams.update(filled)
    check_required(owner, params, hparams, how=how)
    from torch.optim.lr_scheduler import LRScheduler, ReduceLROnPlateau

    if interval == "step" and isinstance(factory, type) and issubclass(factory, ReduceLROnPlateau):
        raise UsageError(f"{owner} is stepped with the epoch's validation loss: its interval is 'epoch', not 'step'")
    try:
        scheduler = factory(optimizer, **hparams)
    except ZooError:
        raise
    except Exception as exc:  # the factory's own check of its values: the user's to fix
        shown = ", ".join(f"{k}={v!r}" for k, v in hparams.items()) or "no hyper-parameters"
        raise UsageError(
            f"{owner} ({registry.origin(entry)}) cannot be built with {shown}: {one_line(exc)} "
            f"(zoo show {name}; change them with {how.format(key='KEY')})"
        ) from exc
    if not isinstance(scheduler, LRScheduler):
        raise UsageError(
            f"{owner} ({registry.origin(entry)}): its factory returned {type(scheduler).__name__}, "
            "not a torch.optim.lr_scheduler.LRScheduler"
        )
    needs_metric = _needs_metric(scheduler)
    if needs_metric and interval == "step":
        raise UsageError(f"{owner} is stepped with the epoch's validation loss: its interval is 'epoch', not 'step'")
    return Schedule(scheduler, interval, name, _plain(hparams), needs_metric, tuple(filled))


# -- augmentations ------------------------------------------------------------------------------------


class Augmentation:
    """Augmentations composed in order: ``augmentation(images, generator) -> images``.

    ``specs``: ``(name, hparams)`` of each, hparams as plain values (for config.yaml and the
    checkpoint's spec); :meth:`as_json` gives them as ``[{"name", "hparams"}]``.
    """

    def __init__(self, steps: list[tuple[str, dict[str, Any], Callable[[Any, Any], Any]]]):
        self.steps = steps

    @property
    def specs(self) -> list[tuple[str, dict[str, Any]]]:
        return [(name, dict(hparams)) for name, hparams, _ in self.steps]

    def as_json(self) -> list[dict[str, Any]]:
        return [{"name": name, "hparams": dict(hparams)} for name, hparams, _ in self.steps]

    def __call__(self, images: Any, generator: Any) -> Any:
        for name, _, apply in self.steps:
            out = apply(images, generator)
            if getattr(out, "shape", None) != images.shape:
                raise UsageError(
                    f"augmentation '{name}' returned {getattr(out, 'shape', type(out).__name__)} for a batch "
                    f"shaped {tuple(images.shape)}: an augmentation returns the batch's shape"
                )
            images = out
        return images

    def __repr__(self) -> str:
        return f"Augmentation({self.specs!r})"


def build_augmentation(registry: Registry, specs: Iterable[str]) -> Augmentation | None:
    """The ``--augment`` specs (``NAME[:KEY=VALUE,...]``) built and composed in order; None
    when there is none."""
    steps = []
    for text in specs:
        name, opts = parse_spec(text)
        entry = registry.augmentation(name)
        factory = registry.augmentation_factory(name)
        params, var_kw = factory_params(factory, leading=0)
        owner = f"augmentation '{name}'"
        hparams = check_hparams(
            owner, params, var_kw, entry.defaults, opts, show=f"zoo show {name}", how=f"--augment {name}:{{key}}=VALUE"
        )
        try:
            apply = factory(**hparams)
        except ZooError:
            raise
        except Exception as exc:  # the factory's own check of its values
            shown = ", ".join(f"{k}={v!r}" for k, v in hparams.items()) or "no hyper-parameters"
            raise UsageError(
                f"{owner} ({registry.origin(entry)}) cannot be built with {shown}: {one_line(exc)} (zoo show {name})"
            ) from exc
        if not callable(apply):
            raise UsageError(
                f"{owner} ({registry.origin(entry)}): its factory returned {type(apply).__name__}, "
                "not a callable(images, generator)"
            )
        steps.append((name, _plain(hparams), apply))
    return Augmentation(steps) if steps else None
