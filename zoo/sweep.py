"""``zoo sweep``: compare optimizers and hyper-parameters as an Optuna study.

Each trial is an ordinary ``zoo run`` in its own process and run directory
(``SWEEP_DIR/trial-NNNN``), so plugins, checkpoints, ``--resume``, the NaN guard and ``--nproc``
hold inside a sweep. The study lives in Optuna storage (:mod:`zoo.sweep_study`): several
``zoo sweep`` processes, here or on other machines, share one by ``--storage`` and ``--study``.
A trial reports each epoch itself (:mod:`zoo.sweep_trial`) and stops itself when pruned.

Every input is checked before anything is created or trained (:func:`plan_from_args`); then
:func:`run_sweep` runs ``--parallel`` slots, each a thread that starts one trial process at a time.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zoo.config import check_config
from zoo.entries import too_small
from zoo.errors import Interrupted, UsageError
from zoo.hparams import check_hparams, optimizer_params, parse_hparams
from zoo.recipe import build_augmentation, build_scheduler
from zoo.runs import read_metrics
from zoo.sweep_report import DIRECTIONS, best_row, summary_table, sweep_object, trial_line, write_text
from zoo.sweep_space import Choices, Space, parse_opt_values, parse_values
from zoo.sweep_study import CHILD_ATTR, Claimed, Study, alive, child_record, require_optuna, storage_file, storage_url
from zoo.sweep_trial import (
    ENV_METRIC,
    ENV_PARENT,
    ENV_PRUNE,
    ENV_STORAGE,
    ENV_STUDY,
    ENV_TRIAL,
    PRUNED_ATTR,
    epoch_value,
)

__all__ = ["SweepPlan", "plan_from_args", "check_trials", "run_sweep", "run_flags", "device_slots", "threads_per_trial"]

# The sweep's own options: every other attribute of its namespace is a `zoo run` option for each trial.
SWEEP_OPTIONS = frozenset(
    {"model", "optimizers", "lr", "opt", "sched", "seeds", "seed", "sampler", "trials", "prune", "parallel", "metric",
     "storage", "study", "out", "resume", "json", "quiet", "func", "argv", "command"}
)  # fmt: skip


@dataclass
class SweepPlan:
    """A checked ``zoo sweep`` command line."""

    model: str
    space: Space
    seeds: list[int]
    sampler: str
    trials: int | None  # configurations to draw (random, tpe); None for a grid
    prune: str
    parallel: int
    metric: str
    sweep_dir: Path
    storage: str | None  # as given; None: SQLite in the sweep directory
    study: str
    resume: bool
    run_flags: list[str]
    quiet: bool = False
    device: str | None = None
    nproc: int = 1

    @property
    def total(self) -> int:
        """Trials in all: configurations x seeds."""
        return (self.trials or self.space.size() or 0) * len(self.seeds)

    def spec(self) -> dict[str, Any]:
        """What a process joining the study must agree with."""
        return {"model": self.model, "space": self.space.as_json(), "seeds": self.seeds, "sampler": self.sampler,
                "trials": self.trials, "metric": self.metric}  # fmt: skip


def run_flags(args: argparse.Namespace) -> list[str]:
    """The ``zoo run`` options of a sweep's command line, as flags for each trial."""
    flags: list[str] = []
    for name, value in vars(args).items():
        if name in SWEEP_OPTIONS or value is None or value is False:
            continue
        flag = "--" + name.replace("_", "-")
        if value is True:
            flags.append(flag)
        elif isinstance(value, (list, tuple)):
            flags += [part for item in value for part in (flag, str(item))]
        else:
            flags += [flag, str(value)]
    return flags


def _optimizers(registry: Any, text: str) -> list[str]:
    names: list[str] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            raise UsageError(f"OPTIMIZERS {text!r}: expected names or globs separated by commas (sgd,adam*)")
        if any(c in part for c in "*?["):
            found = registry.names("optimizer", part)
            if not found:
                raise UsageError(f"no optimizer matches '{part}' (zoo list optimizers)")
            names += found
        else:
            names.append(registry.shown_name(registry.optimizer(part)))
    return list(dict.fromkeys(names))


def _space(registry: Any, args: argparse.Namespace) -> Space:
    dims: dict[str, Any] = {"optimizer": Choices(tuple(_optimizers(registry, args.optimizers)))}
    if args.lr is not None:
        dims["lr"] = parse_values(args.lr, "--lr", positive=True)
    dims.update(parse_opt_values(args.opt or []))
    if args.sched is not None:
        names = [n.strip() for n in args.sched.split(",")]
        for name in names:
            if name != "none":
                registry.scheduler(name)  # an unknown name: one line with the closest one
        dims["sched"] = Choices(tuple(dict.fromkeys(names)))
    return Space(dims)


def _sampler(space: Space, args: argparse.Namespace) -> tuple[str, int | None]:
    sampler = args.sampler or ("grid" if space.is_grid else "tpe")
    if sampler == "grid":
        if not space.is_grid:
            ranged = ", ".join(n for n, d in space.dims.items() if not isinstance(d, Choices))
            raise UsageError(f"--sampler grid needs comma lists, but {ranged} is a range: use --sampler random or tpe")
        if args.trials is not None:
            raise UsageError(
                f"--trials is for --sampler random or tpe: a grid runs each of its {space.size()} configurations"
            )
        return sampler, None
    if args.trials is None:
        raise UsageError(f"--sampler {sampler} draws configurations: say how many with --trials N")
    return sampler, args.trials


def _sweep_dir(args: argparse.Namespace) -> Path:
    if args.out is None:
        if args.resume:
            raise UsageError("--resume needs --out SWEEP_DIR: the sweep to continue")
        # a qualified name's / becomes -, as in a run's default directory (zoo.rundir.default_run_dir)
        name = f"{args.model.replace('/', '-')}-{_dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"
        base = Path("sweeps") / name
        return next(p for p in (base, *(base.with_name(f"{base.name}-{i}") for i in range(2, 1000))) if not p.exists())
    out = Path(args.out)
    if args.resume and not out.is_dir():
        raise UsageError(f"nothing to resume: {out} is not a sweep directory (drop --resume to start one there)")
    if args.resume and args.storage is None and not (out / "study.db").is_file():
        raise UsageError(
            f"nothing to resume: {out} holds no sweep (no study.db): give the --out of a sweep, its --storage "
            "if it kept its study elsewhere, or drop --resume to start one"
        )
    if not args.resume and args.study is None and out.exists():
        raise UsageError(f"sweep directory {out} already exists: pass --resume to continue it, or choose another --out")
    return out


def plan_from_args(args: argparse.Namespace, run_config: Callable[[argparse.Namespace], Any] | None = None,
                   ) -> SweepPlan:  # fmt: skip
    """Check a ``zoo sweep`` command line (names, VALUES, sampler, directory); nothing is written.
    ``run_config`` (``zoo.cli.run_config``): also dry-check the trials' ``zoo run`` options."""
    require_optuna()
    from zoo.registry import get_registry

    registry = get_registry(tuple(getattr(args, "registry", None) or ()))
    registry.model(args.model)
    if getattr(args, "data", None):
        registry.dataset(args.data)
    if getattr(args, "recipe", None):
        registry.recipe_options(args.recipe)  # its optimizer, scheduler and augmentations exist
    space = _space(registry, args)
    sampler, trials = _sampler(space, args)
    if run_config is not None:
        check_trials(registry, space, run_config(_trial_namespace(args, space)))
    sweep_dir = _sweep_dir(args)
    first = args.seed if args.seed is not None else 0
    return SweepPlan(
        model=args.model, space=space, seeds=list(range(first, first + args.seeds)), sampler=sampler, trials=trials,
        prune=args.prune, parallel=args.parallel, metric=args.metric, sweep_dir=sweep_dir, storage=args.storage,
        study=args.study or sweep_dir.name, resume=args.resume, run_flags=run_flags(args), quiet=args.quiet,
        device=getattr(args, "device", None), nproc=getattr(args, "nproc", None) or 1,
    )  # fmt: skip


def _trial_namespace(args: argparse.Namespace, space: Space) -> argparse.Namespace:
    """The sweep's command line as a trial's ``zoo run`` reads it, less what each trial sets itself."""
    first = space.dims["optimizer"].values[0]
    own = {"optimizer": first, "lr": None, "opt": None, "sched": None, "seed": None, "out": None, "resume": False}
    return argparse.Namespace(**{**vars(args), **own})


def _first(dim: Any) -> Any:
    """A value of a dimension that every trial's check may stand on: a list's first, a range's low end."""
    if dim is None:
        return None
    return dim.values[0] if isinstance(dim, Choices) else dim.low


def check_trials(registry: Any, space: Space, config: Any) -> None:
    """Refuse what would fail every trial, with the run's own checks: the options the trials share
    (``config``, a trial's RunConfig), and each optimizer and scheduler with the keys the sweep varies.
    A value the sweep varies is each trial's own: a bad one fails its trials only."""
    check_config(config)
    entry = registry.model(config.model)
    dataset = config.data or entry.default_dataset
    if dataset is not None:
        registry.dataset(dataset)
    if config.input_size is not None:
        size = (entry.input_size[0], config.input_size, config.input_size)
        problem = too_small(entry, size)
        if problem:
            raise UsageError(f"--input-size {config.input_size}: {problem}; pass a larger one, or leave it out")
        classes = registry.dataset(dataset).num_classes if dataset is not None else None
        registry.build_model(config.model, classes or 10, input_size=size)  # its dry forward pass at that size
    build_augmentation(registry, config.augment)
    varied = {k: d for k, d in space.dims.items() if k not in ("optimizer", "lr", "sched")}
    lr = _first(space.dims.get("lr"))
    for name in space.dims["optimizer"].values:
        _check_optimizer(registry, name, varied, config.opts, float(lr) if lr is not None else config.lr)
    scheds = space.dims["sched"].values if "sched" in space.dims else (config.sched,)
    _check_schedulers(registry, [s for s in scheds if s not in (None, "none")], config, lr or 0.1)


def _check_optimizer(registry: Any, name: str, varied: dict[str, Any], opts: dict[str, str], lr: float | None) -> None:
    """``name`` takes every key the sweep varies, and the options every trial gives it."""
    factory = registry.optimizer_factory(name)
    params, var_kw = optimizer_params(factory)
    unknown = {key: "" for key in varied if key not in {p.name for p in params}}
    if unknown and not var_kw:  # the runner's own "has no parameter" line
        check_hparams(f"optimizer '{name}'", params, var_kw, {}, unknown, show=f"zoo show {name}",
                      how="--opt {key}=VALUES", require=False)  # fmt: skip
    defaults = {**registry.optimizer(name).defaults, **{key: _first(dim) for key, dim in varied.items()}}
    parse_hparams(name, factory, defaults, lr=lr, opts=opts)


def _check_schedulers(registry: Any, names: list[str], config: Any, lr: float) -> None:
    """Each scheduler built as a trial builds it (``--sched-opt``, ``--sched-interval``), on a stand-in."""
    if not names:
        return
    import torch

    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=float(lr))
    for name in names:
        build_scheduler(registry, name, optimizer, opts=config.sched_opts, interval=config.sched_interval,
                        epochs=config.epochs, steps_per_epoch=1)  # fmt: skip


# -- sharing the machine ---------------------------------------------------------------------------


def threads_per_trial(parallel: int, cores: int | None = None) -> int:
    """CPU threads for each of ``parallel`` trials running at once."""
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cores // parallel)


def device_slots(gpus: list[str], parallel: int, per_trial: int = 1) -> list[str | None]:
    """``CUDA_VISIBLE_DEVICES`` for each slot: ``per_trial`` GPUs each (``--nproc``), round robin;
    None for every slot without GPUs."""
    if not gpus:
        return [None] * parallel
    return [",".join(gpus[(slot * per_trial + k) % len(gpus)] for k in range(per_trial)) for slot in range(parallel)]


def _visible_gpus(plan: SweepPlan) -> list[str]:
    """The GPUs to share out: only with ``--parallel`` > 1 and a device left to the zoo to choose."""
    if plan.parallel == 1 or (plan.device not in (None, "auto", "cuda")):
        return []
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [g.strip() for g in visible.split(",") if g.strip()]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


def _slot_env(plan: SweepPlan, gpus: str | None) -> dict[str, str]:
    env = {}
    if plan.parallel > 1 and "OMP_NUM_THREADS" not in os.environ:
        env["OMP_NUM_THREADS"] = str(threads_per_trial(plan.parallel))
    if gpus is not None:
        env["CUDA_VISIBLE_DEVICES"] = gpus
    return env


# -- running ---------------------------------------------------------------------------------------


@dataclass
class _Sweep:
    """The state the slots share."""

    plan: SweepPlan
    study: Study
    url: str
    lock: threading.Lock = field(default_factory=threading.Lock)
    children: set[subprocess.Popen] = field(default_factory=set)
    stopping: bool = False
    signalled: bool = False  # a SIGINT or SIGTERM came: trials it stops stay running
    done: int = 0
    bar: Any = None
    orphans: list[Claimed] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)

    def next_trial(self) -> Claimed | None:
        with self.lock:
            if self.stopping:
                return None
            if self.orphans:
                return self.orphans.pop(0)
        return self.study.claim()


def _value(x: Any) -> str:
    return repr(x) if isinstance(x, float) else str(x)


def trial_argv(plan: SweepPlan, claimed: Claimed, run_dir: Path, resume: bool) -> list[str]:
    """The ``zoo run`` command line of one trial."""
    params = claimed.params
    argv = ["run", plan.model, str(params["optimizer"])]
    if "lr" in params:
        argv += ["--lr", _value(params["lr"])]
    for key, value in params.items():
        if key not in ("optimizer", "lr", "sched"):
            argv += ["--opt", f"{key}={_value(value)}"]
    if params.get("sched") not in (None, "none"):
        argv += ["--sched", str(params["sched"])]
    argv += ["--seed", str(claimed.seed), "--out", str(run_dir), "--json", "--quiet", *plan.run_flags]
    return argv + (["--resume"] if resume else [])


def _trial_env(sweep: _Sweep, claimed: Claimed, slot_env: dict[str, str]) -> dict[str, str]:
    env = {**os.environ, **slot_env}
    env.update({ENV_STORAGE: sweep.url, ENV_STUDY: sweep.study.name, ENV_TRIAL: str(claimed.number),
                ENV_PRUNE: sweep.plan.prune, ENV_METRIC: sweep.plan.metric, ENV_PARENT: str(os.getpid())})  # fmt: skip
    return env


def _last_error(log: Path, offset: int) -> str | None:
    """The last ``zoo: error:`` line a trial wrote to its log (from ``offset`` on)."""
    try:
        with open(log, encoding="utf-8", errors="replace") as f:
            f.seek(offset)
            lines = [line.strip() for line in f if line.startswith(("zoo: error:", "zoo: stopped:"))]
    except OSError:
        return None
    return lines[-1].split(":", 2)[2].strip() if lines else None


def _epochs_and_best(run_dir: Path, metric: str) -> tuple[int, float | None]:
    """Epochs trained and the metric's value so far (best val_accuracy, or the last val_loss)."""
    try:
        lines = read_metrics(run_dir)
    except ValueError:
        return 0, None
    values = [epoch_value(metric, line) for line in lines if line.get("val_loss") is not None]
    if not values:
        return len(lines), None
    return len(lines), (values[-1] if metric == "val_loss" else max(values))


def _launch(sweep: _Sweep, claimed: Claimed, run_dir: Path, slot_env: dict[str, str]) -> tuple[int | None, str, int]:
    """Start the trial's ``zoo run`` and wait for it: (exit code, its stdout, where its log began)."""
    logs = sweep.plan.sweep_dir / "logs"
    logs.mkdir(exist_ok=True)
    log = logs / f"{run_dir.name}.log"
    argv = trial_argv(sweep.plan, claimed, run_dir, resume=claimed.resumed and run_dir.exists())
    with open(log, "a", encoding="utf-8") as err:
        offset = err.tell()
        err.write(f"$ zoo {' '.join(argv)}\n")
        err.flush()
        with sweep.lock:
            if sweep.stopping:
                return None, "", offset  # never started: left running, for --resume
            env = _trial_env(sweep, claimed, slot_env)
            command = [sys.executable, "-m", "zoo", *argv]
            # Its own session: a Ctrl-C at the terminal reaches the sweep alone, which passes it on
            # once (_stop_children); a second signal would stop the trial at once, unsaved.
            proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL, text=True,
                                    env=env, start_new_session=True)  # fmt: skip
            sweep.children.add(proc)
        try:
            sweep.study.set_attrs(claimed, {CHILD_ATTR: child_record(proc.pid)})  # --resume waits for it
            out, _ = proc.communicate()
        finally:
            with sweep.lock:
                sweep.children.discard(proc)
    return proc.returncode, out, offset


Outcome = tuple[str, "float | None", "str | None"]


def _outcome(sweep: _Sweep, claimed: Claimed, run_dir: Path, code: int | None, out: str) -> Outcome:
    """How a trial process ended: ("complete"|"pruned"|"failed"|"running", value, error); a
    ``code`` of None: it never started."""
    metric = sweep.plan.metric
    if code is None:
        return "running", None, None
    if code == 0:
        try:
            value = json.loads(out.strip().splitlines()[-1])[metric]
        except (ValueError, IndexError, KeyError, TypeError):
            return "failed", None, "the trial's zoo run printed no JSON summary"
        if not isinstance(value, (int, float)) or value != value:
            return "failed", None, f"the trial's {metric} is {value}"
        return "complete", float(value), None
    if code in (130, 143):
        pruned = sweep.study.storage.get_trial(claimed.trial_id).user_attrs.get(PRUNED_ATTR)
        if pruned is not None:
            return "pruned", _epochs_and_best(run_dir, metric)[1], None
        if sweep.signalled:  # the sweep is stopping: the trial stays running, --resume continues it
            return "running", None, None
    return "failed", None, None  # a signal to this trial alone stopped it: its error says which


def _say(sweep: _Sweep, line: str) -> None:
    """A notice on stderr, above the progress bar when there is one (even with --quiet)."""
    if sweep.bar is not None:
        sweep.bar.write(line, file=sys.stderr)
    else:
        print(line, file=sys.stderr, flush=True)


def _wait_for_child(sweep: _Sweep, claimed: Claimed) -> None:
    """A trial taken back from a killed sweep: wait until the ``zoo run`` that sweep had started
    is gone (it stops after its current step: zoo.sweep_trial.die_with_sweep), or this sweep stops."""
    if not (claimed.resumed and claimed.child and alive(claimed.child)):
        return
    _say(sweep, f"zoo: trial {claimed.number}: its zoo run (pid {claimed.child.get('pid')}) from the killed sweep "
                "is still running; waiting for it to stop before continuing the trial")  # fmt: skip
    while alive(claimed.child) and not sweep.stopping:
        time.sleep(0.2)  # a process that is not our child: no wait() to block on


def _run_trial(sweep: _Sweep, claimed: Claimed, slot_env: dict[str, str]) -> None:
    recorded = sweep.study.storage.get_trial(claimed.trial_id).user_attrs
    run_dir = sweep.plan.sweep_dir / f"trial-{claimed.number:04d}"  # a resumed trial: its own, on this host
    sweep.study.set_attrs(claimed, {"run_dir": str(run_dir)})
    started = time.monotonic()
    if claimed.resumed and recorded.get(PRUNED_ATTR) is not None:  # pruned, then killed before it was told
        code, out, offset = 130, "", 0
    else:
        _wait_for_child(sweep, claimed)
        code, out, offset = _launch(sweep, claimed, run_dir, slot_env)
    seconds = round((recorded.get("seconds") or 0.0) + time.monotonic() - started, 1)
    state, value, error = _outcome(sweep, claimed, run_dir, code, out)
    if state == "running":
        with sweep.lock:
            sweep.stopping = True
        sweep.study.set_attrs(claimed, {"seconds": seconds})
        return
    if state == "failed" and error is None:
        error = _last_error(sweep.plan.sweep_dir / "logs" / f"{run_dir.name}.log", offset) or f"exit code {code}"
    epochs = _epochs_and_best(run_dir, sweep.plan.metric)[0]
    sweep.study.finish(claimed, state, value, {"value": value, "epochs": epochs, "seconds": seconds, "error": error})
    _report(sweep, claimed.number)


def _report(sweep: _Sweep, number: int | None) -> list[dict[str, Any]]:
    """Rewrite sweep.json and summary.md; with a trial ``number``, print its progress line."""
    plan = sweep.plan
    with sweep.lock:
        rows = sweep.study.rows()
        write_text(plan.sweep_dir / "sweep.json", json.dumps(_object(sweep, rows), indent=2) + "\n")
        write_text(plan.sweep_dir / "summary.md", _summary_md(plan, sweep.study.name, rows))
        if number is None:
            return rows
        sweep.done += 1
        row = next(r for r in rows if r["number"] == number)
        line = trial_line(row, plan.metric, best_row(rows, plan.metric), sweep.done, plan.total)
        if sweep.bar is not None:
            sweep.bar.update(1)
            sweep.bar.write(line, file=sys.stderr)
        elif not plan.quiet:
            print(line, file=sys.stderr, flush=True)
    return rows


def _object(sweep: _Sweep, rows: list[dict[str, Any]]) -> dict[str, Any]:
    plan = sweep.plan
    return sweep_object(plan.sweep_dir, sweep.study.name, plan.metric, rows, sampler=plan.sampler, seed=plan.seeds[0])


def _summary_md(plan: SweepPlan, study: str, rows: list[dict[str, Any]]) -> str:
    seeds = f"seeds {plan.seeds[0]}..{plan.seeds[-1]}" if len(plan.seeds) > 1 else f"seed {plan.seeds[0]}"
    head = f"# Sweep {study}: {plan.model}, {plan.sampler}, {seeds}, {plan.metric} ({DIRECTIONS[plan.metric]})\n\n"
    return head + summary_table(rows, plan.metric)


def _slot(sweep: _Sweep, slot_env: dict[str, str]) -> None:
    try:
        while (claimed := sweep.next_trial()) is not None:
            _run_trial(sweep, claimed, slot_env)
    except BaseException as exc:  # reported by the main thread, which stops the other slots
        with sweep.lock:
            sweep.errors.append(exc)
            sweep.stopping = True


def _open(plan: SweepPlan) -> tuple[Study, str]:
    """The study, joined or created, and the sweep directory; a storage that cannot be opened is
    refused before the directory is made."""
    url = storage_url(plan.storage, plan.sweep_dir)
    if plan.resume and (file := storage_file(url)) is not None and not file.is_file():
        raise UsageError(f"nothing to resume: the storage {file} does not exist: check --storage, or drop --resume")
    options = dict(direction=DIRECTIONS[plan.metric], sampler=plan.sampler, prune=plan.prune, space=plan.space,
                   seeds=plan.seeds, target=plan.total if plan.trials else None, spec=plan.spec(),
                   resume=plan.resume)  # fmt: skip
    study = Study.open(url, plan.study, **options) if plan.storage is not None else None
    try:
        plan.sweep_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create the sweep directory {plan.sweep_dir}: {exc.strerror or exc}") from None
    return study or Study.open(url, plan.study, **options), url


def _stop_children(sweep: _Sweep, signum: int) -> None:
    """Pass a signal on to the running trials, whoever sent it: each stops after its current step.
    (They run in sessions of their own, so a Ctrl-C at the terminal reaches the sweep alone.)"""
    with sweep.lock:
        sweep.stopping = sweep.signalled = True
        children = list(sweep.children)
    for proc in children:
        if proc.poll() is None:
            proc.send_signal(signum)
    name = signal.Signals(signum).name
    print(f"zoo: {name}: stopping; the running trials stop after their current step, checkpointed "
          f"({name} again stops them at once)", file=sys.stderr, flush=True)  # fmt: skip


def run_sweep(plan: SweepPlan) -> dict[str, Any]:
    """Run the sweep to its end (or join others in it); returns the ``--json`` object."""
    study, url = _open(plan)
    sweep = _Sweep(plan, study, url)
    if plan.resume:
        sweep.orphans = study.orphans()
    rows = _report(sweep, None)
    sweep.done = sum(r["state"] in ("complete", "pruned", "failed") for r in rows)
    if sys.stderr.isatty() and not plan.quiet:
        from tqdm import tqdm

        sweep.bar = tqdm(total=plan.total, initial=sweep.done, unit="trial", file=sys.stderr, dynamic_ncols=True)
    slots = device_slots(_visible_gpus(plan), plan.parallel, plan.nproc)
    threads = [threading.Thread(target=_slot, args=(sweep, _slot_env(plan, g)), daemon=True) for g in slots]
    signum = _wait(sweep, threads)
    if sweep.bar is not None:
        sweep.bar.close()
    rows = _report(sweep, None)
    if sweep.errors:
        raise sweep.errors[0]
    if signum is not None:
        name = signal.Signals(signum).name
        how = f"the same command with --resume --out {plan.sweep_dir} continues"
        raise Interrupted(f"stopped by {name}; the running trials keep their checkpoints: {how}", signum)
    return _object(sweep, rows)


def _wait(sweep: _Sweep, threads: list[threading.Thread]) -> int | None:
    """Run the slots until they finish; a SIGINT or SIGTERM stops them (returned)."""
    received: list[int] = []

    def handle(signum: int, frame: Any) -> None:
        received.append(signum)
        _stop_children(sweep, signum)

    main = threading.current_thread() is threading.main_thread()  # signal.signal's rule
    previous = {s: signal.signal(s, handle) for s in (signal.SIGINT, signal.SIGTERM)
                if main and signal.getsignal(s) is not signal.SIG_IGN}  # fmt: skip
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            while thread.is_alive():
                thread.join(0.5)  # wakes the main thread for the signal handler
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    return received[0] if received else None
