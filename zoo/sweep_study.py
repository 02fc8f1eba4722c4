"""The sweep's side of Optuna: storage, the study, and claiming trials so that each runs once.

Optuna is an optional extra, imported here only (and in :mod:`zoo.sweep_trial`), and only by
``zoo sweep`` and the trials it starts. Several processes (or machines) may share one study:

* The process that creates the study enqueues every planned trial (a grid's configurations x
  seeds) and then records how many in the study's ``zoo_queued`` attribute; a process that
  joins waits for that record, so no one starts before the queue is complete.
* A trial is claimed by moving it from WAITING to RUNNING in the storage, which lets exactly one
  process succeed (a journal file replays its log in order; other RDBs lock the row). SQLite
  does not lock a row between the read and the write, so a SQLite study is also guarded by a
  ``flock`` on a file beside it.
* The claimer writes ``zoo_owner`` (host, pid, start time) on the trial, and the trial process
  it starts ``zoo_child`` (pid, start time): ``--resume`` takes back only the RUNNING trials of a
  process of this host that is gone, and waits for their ``zoo run`` to be gone too.
* ``random`` and ``tpe`` draw each configuration from a sampler seeded by the sweep's ``--seed``
  and how many trials the study holds, so the same command draws the same values.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zoo.errors import UsageError, one_line
from zoo.processes import alive, process_stamp
from zoo.sweep_space import Choices, Range, Space

__all__ = [
    "INSTALL_HINT",
    "require_optuna",
    "storage_url",
    "storage_file",
    "open_storage",
    "make_pruner",
    "Study",
    "Claimed",
    "process_stamp",
    "child_record",
    "alive",
]

INSTALL_HINT = "pip install 'tudui-zoo[sweep]'"
SPEC_ATTR = "zoo_sweep"  # study user attribute: what the sweep explores (a joiner must match it)
QUEUED_ATTR = "zoo_queued"  # study user attribute: how many trials the creator enqueued
OWNER_ATTR = "zoo_owner"  # trial user attribute: {"host", "pid", "started"} of the sweep running it
CHILD_ATTR = "zoo_child"  # trial user attribute: {"pid", "started"} of the trial's zoo run process
JOIN_WAIT_S = 120.0  # how long a joining process waits for the creator to finish enqueueing
_POLL_S = 0.05


def require_optuna() -> Any:
    """The optuna module, or the one-line error saying how to install it (exit 2)."""
    try:
        import optuna
    except ImportError:
        raise UsageError(f"zoo sweep needs Optuna, an optional extra: {INSTALL_HINT}") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def storage_url(text: str | None, sweep_dir: Path) -> str:
    """``--storage`` as a URL: an RDB URL as given, ``journal:PATH`` (or a ``.log``/``.journal``
    file) for a journal file, a ``.db``/``.sqlite`` file as SQLite; default ``SWEEP_DIR/study.db``."""
    if text is None:
        return f"sqlite:///{(sweep_dir / 'study.db').resolve()}"
    if "://" in text:
        return text
    path = text.removeprefix("journal:")
    if text.startswith("journal:") or path.endswith((".log", ".journal")):
        return f"journal:{Path(path).expanduser().resolve()}"
    if path.endswith((".db", ".sqlite", ".sqlite3")):
        return f"sqlite:///{Path(path).expanduser().resolve()}"
    raise UsageError(
        f"--storage {text!r}: expected an Optuna RDB URL (sqlite:///PATH, postgresql://...), "
        "a SQLite file (.db) or a journal file (journal:PATH or a .log file)"
    )


def storage_file(url: str) -> Path | None:
    """The file a SQLite or journal storage lives in; None for a database server's."""
    return Path(url.removeprefix("journal:")) if url.startswith("journal:") else _sqlite_path(url)


def _sqlite_path(url: str) -> Path | None:
    if url.startswith("sqlite:///") and ":memory:" not in url:
        return Path(url.removeprefix("sqlite:///").partition("?")[0])
    return None


@contextlib.contextmanager
def _file_lock(path: Path | None) -> Iterator[None]:
    """An exclusive ``flock`` on ``path`` (None: no lock)."""
    if path is None:
        yield
        return
    import fcntl

    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def open_storage(url: str) -> Any:
    """An Optuna storage for ``url``; a :class:`UsageError` naming it when it cannot be opened."""
    optuna = require_optuna()
    try:
        if url.startswith("journal:"):
            from optuna.storages.journal import JournalFileBackend, JournalStorage

            path = Path(url.removeprefix("journal:"))
            if not path.parent.is_dir():
                raise OSError(f"directory {path.parent} does not exist")
            return JournalStorage(JournalFileBackend(str(path)))
        sqlite = _sqlite_path(url)
        if sqlite is not None and not sqlite.parent.is_dir():
            raise OSError(f"directory {sqlite.parent} does not exist")
        kwargs = {"connect_args": {"timeout": 60}} if sqlite is not None else {}
        with _file_lock(_lock_path(url)):  # two processes creating the tables at once collide
            return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)
    except Exception as exc:  # sqlalchemy's and the drivers' errors have no common base we can name
        raise UsageError(f"cannot open the Optuna storage {url!r}: {one_line(exc)}") from None


def _lock_path(url: str) -> Path | None:
    sqlite = _sqlite_path(url)
    return sqlite.with_name(sqlite.name + ".lock") if sqlite is not None else None


def make_pruner(name: str) -> Any:
    """``--prune median``: Optuna's MedianPruner, from the first epoch once two trials completed
    (a trial whose epoch-N value is worse than the median of the completed trials' at epoch N
    stops); ``none``: never."""
    optuna = require_optuna()
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0)
    return optuna.pruners.NopPruner()


def _sampler(name: str, seed: int, draws: int = 0) -> Any:
    """The sampler of the ``draws``-th drawn trial: seeded by the sweep's ``seed`` and ``draws``, so
    the same command draws the same values, whichever process (or resumed sweep) asks."""
    optuna = require_optuna()
    mixed = int.from_bytes(hashlib.sha256(f"{seed}:{draws}".encode()).digest()[:4], "big")
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=mixed)
    return optuna.samplers.RandomSampler(seed=mixed)  # a grid's trials are all enqueued: never asked


def owner() -> dict[str, Any]:
    """This sweep process, as a trial's ``zoo_owner`` records it."""
    return {"host": socket.gethostname(), "pid": os.getpid(), "started": process_stamp(os.getpid())}


def child_record(pid: int) -> dict[str, Any]:
    """A trial's ``zoo run`` process, as its ``zoo_child`` records it."""
    return {"pid": pid, "started": process_stamp(pid)}


def _gone(claimed: Any) -> bool:
    """Whether the process that claimed a trial is a process of this host that no longer runs."""
    if not isinstance(claimed, dict):
        return True  # killed between claiming and writing its name
    if claimed.get("host") != socket.gethostname():
        return False
    if not alive(claimed):
        return True
    return claimed.get("pid") == os.getpid()  # our own pid, reused after a kill -9: ours to take


@dataclass(frozen=True)
class Claimed:
    """A trial this process runs: ``resumed`` when taken back from a process that is gone, then
    ``child`` the ``zoo_child`` record of the ``zoo run`` that process had started (if any)."""

    number: int
    trial_id: int
    params: dict[str, Any]
    seed: int
    resumed: bool
    child: dict[str, Any] | None = None


class Study:
    """One process's handle on the shared study: claim a trial, tell its result, list them all."""

    def __init__(self, study: Any, storage: Any, url: str, space: Space, seeds: list[int], target: int | None,
                 sampler: str = "random"):  # fmt: skip
        self.study, self.storage, self.url, self.space = study, storage, url, space
        self.seeds, self.target = seeds, target  # target: trials in all (random/tpe), None for a grid
        self.sampler = sampler
        self.study_id = storage.get_study_id_from_name(study.study_name)
        self._thread_lock = threading.Lock()

    @property
    def name(self) -> str:
        return self.study.study_name

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """This process's threads one at a time, and on SQLite every process of this machine."""
        with self._thread_lock, _file_lock(_lock_path(self.url)):
            yield

    @classmethod
    def open(cls, url: str, name: str, *, direction: str, sampler: str, prune: str, space: Space,
             seeds: list[int], target: int | None, spec: dict[str, Any], resume: bool) -> Study:  # fmt: skip
        """Create study ``name`` and enqueue the grid, or join the one that exists (same ``spec``);
        with ``resume``, only the one that exists."""
        optuna = require_optuna()
        storage = open_storage(url)
        options = {"storage": storage, "study_name": name, "sampler": _sampler(sampler, seeds[0]),
                   "pruner": make_pruner(prune)}  # fmt: skip
        with _file_lock(_lock_path(url)):
            try:
                if resume:
                    study = optuna.load_study(**options)
                else:
                    study = optuna.create_study(direction=direction, **options)
                created = not resume
            except optuna.exceptions.DuplicatedStudyError:
                study = optuna.load_study(**options)
                created = False
            except KeyError:  # --resume, and no study of that name
                raise _no_study(name, url, optuna.get_all_study_names(storage)) from None
        handle = cls(study, storage, url, space, seeds, target, sampler)
        if created:
            study.set_user_attr(SPEC_ATTR, spec)
            handle.fill()
        else:
            handle._join(spec, resume)
        return handle

    def _join(self, spec: dict[str, Any], resume: bool) -> None:
        """Wait until the creator has enqueued every trial, and check it is the same sweep."""
        deadline = time.monotonic() + JOIN_WAIT_S
        while QUEUED_ATTR not in (attrs := self.study.user_attrs) and not resume and time.monotonic() < deadline:
            time.sleep(_POLL_S)  # waits on the creator's enqueueing; decides nothing by the clock
        theirs = attrs.get(SPEC_ATTR)
        if theirs is not None and theirs != spec:
            differ = sorted(k for k in set(spec) | set(theirs) if spec.get(k) != theirs.get(k))
            raise UsageError(
                f"study '{self.name}' in {self.url} is another sweep (its {', '.join(differ)} differ): "
                "run the same command to join it, or choose another --study"
            )
        if QUEUED_ATTR not in attrs:
            if not resume:
                raise UsageError(
                    f"study '{self.name}' was created but never filled (its process stopped): "
                    "rerun with --resume to fill and continue it, or choose another --study"
                )
            if theirs is None:
                self.study.set_user_attr(SPEC_ATTR, spec)
            self.fill()

    def plan(self) -> list[tuple[dict[str, Any], int]]:
        """A grid's trials: every configuration with every seed (seeds vary fastest)."""
        if not self.space.is_grid or self.target is not None:
            return []
        return [(config, seed) for config in self.space.grid() for seed in self.seeds]

    def fill(self) -> None:
        """Enqueue the planned trials that the study does not hold yet, then record the count."""
        with self.locked():
            held = {_key(t.system_attrs.get("fixed_params", t.params), t.user_attrs.get("seed"))
                    for t in self.study.get_trials(deepcopy=False)}  # fmt: skip
            planned = self.plan()
            for params, seed in planned:
                if _key(params, seed) not in held:
                    self.study.enqueue_trial(params, user_attrs={"seed": seed})
            self.study.set_user_attr(QUEUED_ATTR, len(planned))

    # -- trials ---------------------------------------------------------------------------------

    def claim(self) -> Claimed | None:
        """The next trial to run, now RUNNING and owned by this process; None when none is left."""
        optuna = require_optuna()
        with self.locked():
            trial_id = self._pop_waiting()
            if trial_id is not None:
                trial = optuna.trial.Trial(self.study, trial_id)
            elif self.target is not None and (held := len(self.study.get_trials(deepcopy=False))) < self.target:
                self.study.sampler = _sampler(self.sampler, self.seeds[0], held)
                trial = self.study.ask()  # random/tpe: the sampler draws a new configuration
                trial_id = self.storage.get_trial_id_from_study_id_trial_number(self.study_id, trial.number)
            else:
                return None
            self.storage.set_trial_user_attr(trial_id, OWNER_ATTR, owner())
            params = self.suggest(trial)
            seed = trial.user_attrs.get("seed")
            if seed is None:  # a drawn configuration: its first seed here, the others queued
                seed = self.seeds[0]
                trial.set_user_attr("seed", seed)
                for other in self.seeds[1:]:
                    self.study.enqueue_trial(params, user_attrs={"seed": other})
            return Claimed(trial.number, trial_id, params, int(seed), resumed=False)

    def _pop_waiting(self) -> int | None:
        """A WAITING trial moved to RUNNING by this call (the storage lets one caller succeed)."""
        optuna = require_optuna()
        # Listed through the study: Optuna's cache over an RDB then knows these trials' ids.
        for frozen in self.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,)):
            trial_id = self.storage.get_trial_id_from_study_id_trial_number(self.study_id, frozen.number)
            try:
                if self.storage.set_trial_state_values(trial_id, state=optuna.trial.TrialState.RUNNING):
                    return trial_id
            except optuna.exceptions.UpdateFinishedTrialError:
                continue
        return None

    def suggest(self, trial: Any) -> dict[str, Any]:
        """The trial's parameters: its enqueued (or already suggested) values, else the sampler's."""
        params: dict[str, Any] = {}
        for name, dim in self.space.dims.items():
            if isinstance(dim, Choices):
                params[name] = trial.suggest_categorical(name, list(dim.values))
            elif isinstance(dim, Range) and dim.integer:
                params[name] = trial.suggest_int(name, int(dim.low), int(dim.high), log=dim.log)
            else:
                params[name] = trial.suggest_float(name, dim.low, dim.high, log=dim.log)
        return params

    def orphans(self) -> list[Claimed]:
        """``--resume``: the RUNNING trials of a process of this host that is gone, now ours."""
        optuna = require_optuna()
        taken = []
        with self.locked():
            for frozen in self.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
                if not _gone(frozen.user_attrs.get(OWNER_ATTR)):
                    continue
                trial_id = self.storage.get_trial_id_from_study_id_trial_number(self.study_id, frozen.number)
                self.storage.set_trial_user_attr(trial_id, OWNER_ATTR, owner())
                params = self.suggest(optuna.trial.Trial(self.study, trial_id))
                seed = int(frozen.user_attrs.get("seed", self.seeds[0]))
                child = frozen.user_attrs.get(CHILD_ATTR)
                taken.append(Claimed(frozen.number, trial_id, params, seed, resumed=True, child=child))
        return taken

    def set_attrs(self, claimed: Claimed, attrs: dict[str, Any]) -> None:
        for key, value in attrs.items():
            self.storage.set_trial_user_attr(claimed.trial_id, key, value)

    def finish(self, claimed: Claimed, state: str, value: float | None, attrs: dict[str, Any]) -> None:
        """Record a trial's end: ``state`` "complete" (with its ``value``), "pruned" or "failed"."""
        optuna = require_optuna()
        with self.locked():
            self.set_attrs(claimed, attrs)
            if state == "complete":
                self.study.tell(claimed.number, value)
            else:
                states = {"pruned": optuna.trial.TrialState.PRUNED, "failed": optuna.trial.TrialState.FAIL}
                self.study.tell(claimed.number, state=states[state])

    def rows(self) -> list[dict[str, Any]]:
        """Every trial but the queued ones, as ``sweep.json`` rows, by number."""
        optuna = require_optuna()
        names = {optuna.trial.TrialState.COMPLETE: "complete", optuna.trial.TrialState.PRUNED: "pruned",
                 optuna.trial.TrialState.FAIL: "failed", optuna.trial.TrialState.RUNNING: "running"}  # fmt: skip
        rows = []
        for t in self.study.get_trials(deepcopy=False):
            if t.state not in names:
                continue
            attrs = t.user_attrs
            params = {name: t.params.get(name, t.system_attrs.get("fixed_params", {}).get(name))
                      for name in self.space.dims}  # fmt: skip
            rows.append({
                "number": t.number, "state": names[t.state], "params": params, "seed": attrs.get("seed"),
                "run_dir": attrs.get("run_dir"), "value": attrs.get("value"), "epochs": attrs.get("epochs"),
                "seconds": attrs.get("seconds"), "error": attrs.get("error"),
            })  # fmt: skip
        return sorted(rows, key=lambda r: r["number"])


def _no_study(name: str, url: str, names: list[str]) -> UsageError:
    held = f"it holds {', '.join(repr(n) for n in sorted(names))}" if names else "it holds none"
    return UsageError(
        f"nothing to resume: no study '{name}' in {url} ({held}): check --study, or drop --resume to start one"
    )


def _key(params: dict[str, Any], seed: Any) -> tuple[Any, ...]:
    return (tuple(sorted(params.items())), seed)
