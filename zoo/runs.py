"""Run directories as data: ``zoo runs`` lists them, ``zoo plot`` draws them.

Only ``config.yaml``, ``metrics.jsonl`` and ``status.json`` are read (YAML and JSON, no torch),
so listing a hundred runs takes a fraction of a second. A run the runner did not finish
cleanly is reported, never a crash: a missing or unreadable file makes that one run
``failed`` with the reason, and so does an empty directory (a run killed before its first file).
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import re
from pathlib import Path
from typing import Any

import yaml

from zoo.errors import UsageError
from zoo.processes import pid_alive

__all__ = [
    "RUN_FILES",
    "STATUSES",
    "is_run_dir",
    "read_config",
    "read_metrics",
    "read_status",
    "run_row",
    "list_runs",
    "sweep_trials",
    "SWEEP_FILE",
]

# Any of these marks a directory as a run directory, even a broken one.
RUN_FILES = ("config.yaml", "metrics.jsonl", "status.json", "last.pt", "best.pt")
STATUSES = ("running", "finished", "interrupted", "failed")


def is_run_dir(path: Path) -> bool:
    """Whether ``path`` holds a run file (``config.yaml``, ``metrics.jsonl``, ...)."""
    return path.is_dir() and any((path / name).exists() for name in RUN_FILES)


def _leftover_of_a_run(path: Path) -> bool:
    """An empty directory, or one holding only what a killed write of a run file leaves
    (``.config.yaml.XXXX.tmp``): a run stopped before its first file was in place."""
    try:
        return all(
            entry.name.endswith(".tmp") and any(entry.name.startswith(f".{name}.") for name in RUN_FILES)
            for entry in path.iterdir()
        )
    except OSError:
        return False


def _listed(path: Path) -> bool:
    """Whether ``zoo runs`` lists this directory under its root: a run directory, however broken,
    including an empty one; not a hidden directory, not one that only holds other files."""
    if path.name.startswith(".") or not path.is_dir():
        return False
    return is_run_dir(path) or _leftover_of_a_run(path)


def read_config(run_dir: Path) -> dict[str, Any]:
    """``config.yaml`` as a dict; ``ValueError`` saying what is wrong when it is missing or bad."""
    path = Path(run_dir) / "config.yaml"
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError("no config.yaml") from None
    except yaml.MarkedYAMLError as exc:
        where = f" at line {exc.problem_mark.line + 1}" if exc.problem_mark else ""
        raise ValueError(f"unreadable config.yaml: {exc.problem or exc.context}{where}") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ValueError(f"unreadable config.yaml: {' '.join(str(exc).split())}") from None
    if not isinstance(config, dict):
        raise ValueError(f"config.yaml holds {type(config).__name__}, not a mapping")
    return config


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """The ``metrics.jsonl`` lines, one per epoch in epoch order; ``ValueError`` when unusable.

    A resumed run may repeat an epoch (the one a signal interrupted): the last line wins.
    A final line without its newline is the torn write of a killed process and is skipped;
    any other bad line makes the file unusable.
    """
    path = Path(run_dir) / "metrics.jsonl"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ValueError("no metrics.jsonl") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"unreadable metrics.jsonl: {exc}") from None
    lines = text.split("\n")
    by_epoch: dict[int, dict[str, Any]] = {}
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            epoch = int(row["epoch"])
        except (ValueError, TypeError, KeyError):
            if number == len(lines):  # no newline after it: torn, not corrupt
                continue
            raise ValueError(f"metrics.jsonl line {number} is not a JSON object with an 'epoch'") from None
        by_epoch[epoch] = row
    return [by_epoch[e] for e in sorted(by_epoch)]


def read_status(run_dir: Path) -> dict[str, Any] | None:
    """``status.json`` when present and well-formed, else None (the status is then inferred)."""
    try:
        status = json.loads((Path(run_dir) / "status.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    if not isinstance(status, dict) or status.get("status") not in STATUSES:
        return None
    return status


def _best_accuracy(metrics: list[dict[str, Any]]) -> float | None:
    values = [m.get("val_accuracy") for m in metrics]
    finite = [float(v) for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    return max(finite) if finite else None


# zoo run's default directory name ends in the start time: runs/<model>-<optimizer>-<YYYYmmdd-HHMMSS>
_NAME_TIME = re.compile(r"(\d{8}-\d{6})$")


def _started(run_dir: Path, config: dict[str, Any], status: dict[str, Any] | None) -> str:
    # Recorded start times first. The files' mtimes come last because resuming rewrites every
    # file in the directory, which would move an old run to the bottom of the list.
    for value in ((status or {}).get("started"), config.get("started"), config.get("created")):
        if isinstance(value, _dt.datetime):
            return value.isoformat(timespec="seconds")
        if isinstance(value, str) and value:
            return value
    match = _NAME_TIME.search(run_dir.name)
    if match:
        try:
            named = _dt.datetime.strptime(match.group(1), "%Y%m%d-%H%M%S")
            return named.astimezone().isoformat(timespec="seconds")  # the name is in local time
        except ValueError:
            pass
    times = [(run_dir / n).stat().st_mtime for n in RUN_FILES if (run_dir / n).exists()]
    stamp = min(times) if times else run_dir.stat().st_mtime
    return _dt.datetime.fromtimestamp(stamp).astimezone().isoformat(timespec="seconds")


def _sort_key(started: str) -> float:
    try:
        # Python 3.10's fromisoformat does not read the "Z" suffix
        moment = _dt.datetime.fromisoformat(started.replace("Z", "+00:00"))
    except ValueError:
        return math.inf  # an unparseable time sorts last rather than breaking the listing
    if moment.tzinfo is None:
        moment = moment.astimezone()  # a naive time is the local time
    return moment.timestamp()


def run_row(run_dir: Path) -> dict[str, Any]:
    """One ``zoo runs`` row for one run directory; never raises for a broken run."""
    run_dir = Path(run_dir)
    row: dict[str, Any] = {
        "run_dir": str(run_dir),
        "model": None,
        "optimizer": None,
        "dataset": None,
        "epochs": None,
        "epochs_done": 0,
        "best_val_accuracy": None,
        "status": "failed",
        "started": None,
        "error": None,
    }
    config: dict[str, Any] = {}
    problems = []
    empty = not is_run_dir(run_dir)
    if empty:
        problems.append(
            "empty: no config.yaml, metrics.jsonl or status.json (it stopped before writing its first file)"
        )
    else:
        try:
            config = read_config(run_dir)
        except ValueError as exc:
            problems.append(str(exc))
    row["model"] = config.get("model")
    row["optimizer"] = config.get("optimizer")
    row["dataset"] = config.get("dataset", config.get("data"))
    epochs = config.get("epochs")
    row["epochs"] = epochs if isinstance(epochs, int) and not isinstance(epochs, bool) else None
    status = read_status(run_dir)
    row["started"] = _started(run_dir, config, status)
    try:
        metrics = read_metrics(run_dir)
    except ValueError as exc:
        metrics = []
        # Before its first epoch a run has no metrics.jsonl yet; status.json says so.
        if not (str(exc) == "no metrics.jsonl" and (status is not None or empty)):
            problems.append(str(exc))
    done = (status or {}).get("epochs_done")
    fallback = done if isinstance(done, int) and not isinstance(done, bool) else 0
    row["epochs_done"] = max((int(m["epoch"]) for m in metrics), default=fallback)
    row["best_val_accuracy"] = _best_accuracy(metrics)

    if problems:
        row["status"], row["error"] = "failed", "; ".join(problems)
    elif (
        status is not None
        and status["status"] == "running"
        and not pid_alive(status.get("pid"), host=status.get("host"), started=status.get("process_started"))
    ):
        # SIGKILL (or a power cut) leaves "running" behind: nothing is running it any more
        row["status"], row["error"] = (
            "interrupted",
            "its process is gone (it was killed); --resume continues from its last checkpoint",
        )
    elif status is not None:
        row["status"], row["error"] = status["status"], status.get("error") or None
    elif row["epochs"] is not None and row["epochs_done"] >= row["epochs"]:
        row["status"] = "finished"
    else:
        row["status"] = "interrupted"
    return row


SWEEP_FILE = "sweep.json"  # what zoo sweep writes in its directory, beside the trial-NNNN run directories


def sweep_trials(sweep_dir: Path) -> dict[str, dict[str, Any]] | None:
    """A sweep directory's trials by run directory name (``trial-0003``), from its ``sweep.json``:
    ``{"number", "state", "params", "seed", "value"}``; None when ``sweep_dir`` is no sweep's."""
    try:
        sweep = json.loads((Path(sweep_dir) / SWEEP_FILE).read_text(encoding="utf-8"))
        trials = sweep["trials"]
        return {
            Path(t["run_dir"]).name: {k: t.get(k) for k in ("number", "state", "params", "seed", "value")}
            for t in trials
            if t.get("run_dir")
        }
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError):
        return None


def list_runs(root: str | Path = "runs") -> list[dict[str, Any]]:
    """Every run directory directly under ``root`` (or ``root`` itself when it is one),
    oldest first, as ``zoo runs --json`` rows. In a sweep's directory each row also has
    ``"sweep"``: its trial's number, state (``pruned``, ...), parameters, seed and value."""
    root = Path(root)
    if not root.is_dir():
        what = "is not a directory" if root.exists() else "does not exist"
        raise UsageError(f"run directory root '{root}' {what} (zoo run writes runs/; or give DIR)")
    if is_run_dir(root):
        candidates = [root]
    else:
        try:
            candidates = [p for p in root.iterdir() if _listed(p)]
        except OSError as exc:
            raise UsageError(f"cannot read '{root}': {exc.strerror}") from None
    trials = sweep_trials(root)
    if trials is not None:  # a sweep's directory: its trials, not its logs/
        candidates = [p for p in candidates if p.name.startswith("trial-")]
    rows = [run_row(p) for p in candidates]
    if trials is not None:
        for row in rows:
            row["sweep"] = trials.get(Path(row["run_dir"]).name)
    rows.sort(key=lambda r: (_sort_key(r["started"]), r["run_dir"]))
    return rows
