"""timm's model names and default input sizes, cached as JSON so that listing them is instant.

The cache is ``$ZOO_CACHE/zoo-timm-<timm version>.json`` (``$ZOO_CACHE`` defaults to
``$XDG_CACHE_HOME/zoo``, else ``~/.cache/zoo``). The timm version in its name is read from the
installed distribution's metadata (no import): upgrading timm starts a new file. Without a valid
file, timm is imported once (with torch, some seconds) to write it; an unwritable cache
directory only means that the next listing imports timm again.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

FORMAT = 1  # of the JSON file: {"format", "timm", "models": {name: {"input_size": [C, H, W], ...}}}


def cache_dir() -> Path:
    """``$ZOO_CACHE``, else ``$XDG_CACHE_HOME/zoo``, else ``~/.cache/zoo``."""
    if os.environ.get("ZOO_CACHE"):
        return Path(os.environ["ZOO_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path("~/.cache").expanduser())
    return Path(base) / "zoo"


def timm_version() -> str:
    try:
        return importlib.metadata.version("timm")
    except importlib.metadata.PackageNotFoundError:
        raise RuntimeError("the zoo-timm plugin needs timm, which is not installed: pip install timm") from None


def cache_path(version: str | None = None) -> Path:
    """Where the list of timm ``version`` (the installed one's by default) is cached."""
    return cache_dir() / f"zoo-timm-{version or timm_version()}.json"


def from_timm() -> dict[str, dict[str, Any]]:
    """Every ``timm.list_models()`` name with its pretrained config's input sizes (imports timm)."""
    import timm
    from timm.models import get_pretrained_cfg

    models: dict[str, dict[str, Any]] = {}
    for name in timm.list_models():
        cfg = get_pretrained_cfg(name)
        info: dict[str, Any] = {"input_size": list(cfg.input_size if cfg else (3, 224, 224))}
        if cfg is not None and cfg.min_input_size:
            info["min_input_size"] = list(cfg.min_input_size)
        if cfg is not None and cfg.fixed_input_size:
            info["fixed_input_size"] = True
        models[name] = info
    return models


def _read(path: Path, version: str) -> dict[str, dict[str, Any]] | None:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or doc.get("timm") != version:
        return None
    models = doc.get("models")
    return models if isinstance(models, dict) and models else None


def _write(path: Path, doc: dict[str, Any]) -> None:
    """Atomically (a temporary file renamed): a concurrent reader sees the old file or the new."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(doc, out, separators=(",", ":"))
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide it from the other users of a shared cache
        os.replace(tmp, path)
    except OSError as exc:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        print(f"zoo: warning: zoo-timm could not write its model list to {path}: {exc}", file=sys.stderr)


def catalogue() -> dict[str, dict[str, Any]]:
    """The models, from the cache, or from timm (then cached)."""
    version = timm_version()
    path = cache_path(version)
    models = _read(path, version)
    if models is None:
        models = from_timm()
        _write(path, {"format": FORMAT, "timm": version, "models": models})
    return models
