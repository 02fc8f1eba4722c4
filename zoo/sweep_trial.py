"""Inside a sweep's trial: each validated epoch goes to the Optuna trial, which may prune the run.

``zoo sweep`` starts every trial as an ordinary ``zoo run`` with these environment variables set;
``zoo run`` then registers :class:`TrialReporter` (and only then). After each epoch the reporter
reports the epoch's value to the trial; when the pruner says the trial is worse than the median,
it marks the trial and sends this process SIGINT, so the run stops through its own signal path:
the epoch's checkpoint is kept, the run exits 130, and the sweep records the trial as pruned.
The trial process itself decides, so no clock and no polling parent races the run's end.

On Linux a trial also stops with its sweep (:func:`die_with_sweep`): a sweep killed even by SIGKILL
leaves no trial training on, unseen, in a directory that ``zoo sweep --resume`` would reuse.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Any

from zoo import hookimpl

__all__ = ["ENV_STORAGE", "ENV_STUDY", "ENV_TRIAL", "ENV_PRUNE", "ENV_METRIC", "ENV_PARENT", "PRUNED_ATTR", "attach",
           "die_with_sweep", "epoch_value"]  # fmt: skip

ENV_STORAGE = "ZOO_SWEEP_STORAGE"  # the study's storage URL (zoo.sweep_study.storage_url)
ENV_STUDY = "ZOO_SWEEP_STUDY"  # the study's name
ENV_TRIAL = "ZOO_SWEEP_TRIAL"  # the trial's number
ENV_PRUNE = "ZOO_SWEEP_PRUNE"  # median | none
ENV_METRIC = "ZOO_SWEEP_METRIC"  # best_val_accuracy | val_loss
ENV_PARENT = "ZOO_SWEEP_PARENT"  # the pid of the sweep that started this trial process
_PR_SET_PDEATHSIG = 1  # linux/prctl.h
_SWEEP_GONE = threading.Event()  # set by the first parent-death signal
PRUNED_ATTR = "zoo_pruned_epoch"  # trial user attribute: the epoch after which the run was pruned


def epoch_value(metric: str, line: dict[str, Any]) -> float:
    """What an epoch reports for ``metric``: its val_accuracy, or its val_loss."""
    return float(line["val_loss" if metric == "val_loss" else "val_accuracy"])


class TrialReporter:
    """The event-hook plugin of one trial process."""

    def __init__(self, url: str, study_name: str, number: int, prune: str, metric: str):
        self.url, self.study_name, self.number = url, study_name, number
        self.prune, self.metric = prune, metric
        self._trial: Any = None

    def trial(self) -> Any:
        if self._trial is None:
            import optuna

            from zoo.sweep_study import make_pruner, open_storage

            storage = open_storage(self.url)
            study = optuna.load_study(study_name=self.study_name, storage=storage, pruner=make_pruner(self.prune))
            study_id = storage.get_study_id_from_name(self.study_name)
            trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, self.number)
            study.get_trials(deepcopy=False)  # Optuna's cache over an RDB learns the trials' ids
            self._trial = optuna.trial.Trial(study, trial_id)
        return self._trial

    @hookimpl
    def on_epoch_end(self, run: Any, epoch: int, metrics: dict) -> None:
        trial = self.trial()
        trial.report(epoch_value(self.metric, metrics), step=epoch)
        if self.prune != "none" and epoch < run.config.epochs and trial.should_prune():
            trial.set_user_attr(PRUNED_ATTR, epoch)
            # The runner's own stop: it finishes this epoch's bookkeeping and exits 130. A SIGINT
            # the process inherited as ignored would be lost; SIGTERM takes the same path then.
            ignored = signal.getsignal(signal.SIGINT) is signal.SIG_IGN
            signal.raise_signal(signal.SIGTERM if ignored else signal.SIGINT)


def die_with_sweep() -> None:
    """Linux: this trial process stops as on one SIGTERM when the sweep that started it dies, however
    (SIGKILL too): the run stops after its current step, checkpointed, and ``--resume`` continues it.
    The kernel's parent-death signal is SIGHUP, which may come once per thread of the dying sweep
    (the trial passes from thread to thread): only the first becomes a SIGTERM, since a second
    SIGTERM would stop the run at once. Only the process the sweep started asks (its ``--nproc``
    workers follow their launcher)."""
    parent = os.environ.pop(ENV_PARENT, None)
    if parent is None or not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return
    signal.signal(signal.SIGHUP, _sweep_gone)
    if prctl(_PR_SET_PDEATHSIG, int(signal.SIGHUP), 0, 0, 0) == 0 and str(os.getppid()) != parent:
        _sweep_gone()  # the sweep died before we asked: nothing trained yet


def _sweep_gone(*_: Any) -> None:
    if not _SWEEP_GONE.is_set():
        _SWEEP_GONE.set()
        signal.raise_signal(signal.SIGTERM)  # the run's own stop (zoo.events.StopControl)


def attach() -> None:
    """Register the reporter when this process is a sweep's trial (its variables are set)."""
    if not os.environ.get(ENV_TRIAL):
        return
    die_with_sweep()
    from zoo.plugins import PluginInfo, get_plugin_host

    reporter = TrialReporter(
        os.environ[ENV_STORAGE],
        os.environ[ENV_STUDY],
        int(os.environ[ENV_TRIAL]),
        os.environ.get(ENV_PRUNE, "none"),
        os.environ.get(ENV_METRIC, "best_val_accuracy"),
    )
    get_plugin_host().register(reporter, PluginInfo(name="sweep-trial", builtin=True))
