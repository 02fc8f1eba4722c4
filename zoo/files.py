"""Atomic file writes: a crash at any moment leaves either the old file or the new one.

A write goes to a temporary file in the same directory (``.NAME.XXXXXXXX.tmp``), is flushed
and fsynced, then ``os.replace``d onto the final name, and the directory is fsynced so that
the rename itself is durable. A writer killed half way leaves only its temporary file, which
:func:`remove_stale_temp_files` clears on the next start.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, BinaryIO

import torch

from zoo import testhooks
from zoo.errors import RunError

__all__ = ["TMP_SUFFIX", "atomic_write", "atomic_save", "remove_stale_temp_files", "fsync_directory"]

TMP_SUFFIX = ".tmp"


def fsync_directory(directory: str | os.PathLike[str]) -> None:
    """Make a rename in ``directory`` durable (a no-op where a directory cannot be opened: Windows)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike[str], write: Callable[[BinaryIO], None]) -> Path:
    """Call ``write(file)`` on a temporary file beside ``path``, then move it onto ``path``.

    Any failure (a full disk, an exception, a second Ctrl-C) removes the temporary file and
    leaves whatever was at ``path`` untouched. I/O errors become a :class:`RunError`.
    """
    path = Path(path)
    directory = path.parent
    try:
        fd, tmp_name = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=TMP_SUFFIX)
    except OSError as exc:
        raise RunError(f"cannot write {path}: {exc.strerror or exc}") from exc
    tmp = Path(tmp_name)
    pause = testhooks.write_pause(path, tmp)  # None unless a test asked for slow writes
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; the final file gets the usual mode
        with os.fdopen(fd, "wb") as f:
            write(pause.wrap(f) if pause else f)
            f.flush()
            os.fsync(f.fileno())
        if pause:
            pause.at("complete")  # complete and durable, but not yet in place
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            kept = " (the previous file is intact)" if path.exists() else ""
            raise RunError(f"cannot write {path}: {exc.strerror or exc}{kept}") from exc
        raise
    fsync_directory(directory)
    return path


def atomic_save(obj: Any, path: str | os.PathLike[str]) -> Path:
    """``torch.save(obj, path)``, atomically (see :func:`atomic_write`)."""
    return atomic_write(path, lambda f: torch.save(obj, f))


def remove_stale_temp_files(directory: str | os.PathLike[str], names: Iterable[str]) -> list[Path]:
    """Delete temporary files a killed writer left for ``names`` (e.g. ``last.pt``)."""
    removed = []
    for name in names:
        for tmp in Path(directory).glob(f".{name}.*{TMP_SUFFIX}"):
            try:
                tmp.unlink()
                removed.append(tmp)
            except OSError:
                pass
    return removed
