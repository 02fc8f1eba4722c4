"""A run directory: created once or reopened by ``--resume``, and the only place its files are written.

    RUN_DIR/config.yaml     everything needed to rebuild the run
    RUN_DIR/metrics.jsonl   one JSON object per epoch
    RUN_DIR/last.pt         after every epoch (and where a signal stopped an epoch)
    RUN_DIR/best.pt         the best val_accuracy so far
    RUN_DIR/status.json     running, finished, interrupted or failed, for ``zoo runs``

Every file is written atomically (:func:`zoo.files.atomic_write`): a crash leaves the old file or
the new one. In distributed training every rank holds a :class:`RunDir`, and only the writer
(rank 0) touches the disk: the other ranks' writes are no-ops, so callers need no rank checks.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from zoo.errors import RunError, UsageError
from zoo.files import atomic_save, atomic_write, remove_stale_temp_files
from zoo.processes import process_stamp

__all__ = ["RunDir", "CHECKPOINTS", "RUN_FILES", "default_run_dir", "exists_error", "resume_error"]

CHECKPOINTS = ("last.pt", "best.pt")
RUN_FILES = ("config.yaml", "metrics.jsonl", "status.json", *CHECKPOINTS)


def _now() -> str:
    return _dt.datetime.now().isoformat(timespec="seconds")


def exists_error(out: Path) -> UsageError:
    return UsageError(f"run directory {out} already exists: pass --resume to continue it, or choose another --out")


def resume_error(out: Path | None) -> UsageError | None:
    """Why ``--resume --out out`` has nothing to continue, or None when ``out`` is a directory."""
    if out is None:
        return UsageError("--resume needs --out DIR: the run directory to continue")
    if not out.exists():
        return UsageError(f"nothing to resume: {out} does not exist (drop --resume to start a new run there)")
    if not out.is_dir():
        return UsageError(f"nothing to resume: {out} is not a run directory")
    return None


def default_run_dir(model: str, optimizer: str) -> Iterator[Path]:
    """Candidate names ``runs/<model>-<optimizer>-<YYYYmmdd-HHMMSS>[-N]``, in the order to try them
    (a qualified name's ``/`` becomes ``-``: ``timm/resnet18`` runs in ``runs/timm-resnet18-...``)."""
    model, optimizer = model.replace("/", "-"), optimizer.replace("/", "-")
    base = Path("runs") / f"{model}-{optimizer}-{_dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"
    yield base
    yield from (base.with_name(f"{base.name}-{i}") for i in range(2, 100))


class RunDir:
    """One run's directory. ``writer`` is False on every process but the one that writes (rank 0)."""

    def __init__(self, path: Path, *, writer: bool = True, started: str | None = None):
        self.path = Path(path)
        self.writer = writer
        self.started = started or _now()  # kept across resumes, so `zoo runs` sorts by the first start
        self._process_started = process_stamp(os.getpid())

    @property
    def last(self) -> Path:
        return self.path / "last.pt"

    @property
    def best(self) -> Path:
        return self.path / "best.pt"

    # -- creating and reopening

    @classmethod
    def create(cls, out: str | os.PathLike[str] | None, model: str, optimizer: str) -> RunDir:
        """A new directory: ``out``, or the first free default name. Never an existing one."""
        candidates = iter([Path(out).expanduser()]) if out is not None else default_run_dir(model, optimizer)
        for path in candidates:
            if out is not None and path.exists():
                raise exists_error(path)
            try:
                path.mkdir(parents=True)
                return cls(path)
            except FileExistsError:
                if out is not None:  # created by someone else since we looked
                    raise exists_error(path) from None
            except OSError as exc:
                raise UsageError(f"cannot create run directory {path}: {exc.strerror or exc}") from exc
        raise UsageError("too many runs started this second: pass --out DIR")

    @classmethod
    def reopen(cls, out: str | os.PathLike[str] | None, *, writer: bool = True) -> RunDir:
        """The directory ``--resume`` continues. The writer first deletes what a killed write left
        (other ranks must not: their cleaning could race with the writer's first writes)."""
        path = Path(out).expanduser() if out is not None else None
        problem = resume_error(path)
        if problem is not None:
            raise problem
        assert path is not None
        if writer:
            remove_stale_temp_files(path, RUN_FILES)
        try:
            started = str(json.loads((path / "status.json").read_text())["started"])
        except (OSError, ValueError, KeyError, TypeError):
            started = None
        return cls(path, writer=writer, started=started)

    # -- writing

    def _write_text(self, name: str, text: str) -> None:
        if self.writer:
            atomic_write(self.path / name, lambda f: f.write(text.encode()))

    def write_config(self, doc: dict[str, Any]) -> None:
        import yaml

        self._write_text("config.yaml", yaml.safe_dump(doc, sort_keys=False))

    def write_metrics(self, history: list[dict[str, Any]]) -> None:
        """The whole ``metrics.jsonl``, rewritten atomically (one small line per epoch)."""
        self._write_text("metrics.jsonl", "".join(json.dumps(line) + "\n" for line in history))

    def write_status(self, status: str, *, epochs_done: int, error: str | None = None) -> None:
        """``status.json``; ``pid``, ``host`` and ``process_started`` (the process's start stamp,
        telling a reused pid apart) let a reader tell a live run from one killed by SIGKILL."""
        doc = {
            "status": status,
            "started": self.started,
            "updated": _now(),
            "epochs_done": epochs_done,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "process_started": self._process_started,
            "error": error,
        }
        self._write_text("status.json", json.dumps(doc, indent=2) + "\n")

    def save_checkpoint(self, path: Path, checkpoint: dict[str, Any]) -> bool:
        """Write ``checkpoint`` to ``path`` (``last`` or ``best``); False where this process does not write."""
        if self.writer:
            atomic_save(checkpoint, path)
        return self.writer

    def check_disk(self, checkpoint_bytes: int, files: int) -> None:
        """Refuse up front when the disk cannot hold ``files`` more checkpoints of this size."""
        if not self.writer:
            return
        need, free = files * checkpoint_bytes, shutil.disk_usage(self.path).free
        if free < need:
            raise RunError(
                f"not enough disk space in {self.path}: checkpoints need about {need / 2**20:.0f} MiB, "
                f"{free / 2**20:.0f} MiB free"
            )
