"""zoo: a plugin-based PyTorch model zoo.

The public API for plugin authors is ``hookimpl``; the hooks are in ``zoo.hookspecs``. For
scripts and notebooks: ``zoo.list_models``, ``zoo.create_model``, ``zoo.create_optimizer``,
``zoo.load_checkpoint``, ``zoo.train`` (``zoo.api``) and ``zoo.ZooError``.
Nothing here imports torch: ``zoo list`` must stay instant, and so must ``import zoo``.
"""

from __future__ import annotations

import importlib
from typing import Any

import pluggy

__version__ = "0.1.0"

hookimpl = pluggy.HookimplMarker("zoo")
"""Marker for plugin hook implementations: ``@hookimpl def register_models(register): ...``."""

_API = ("list_models", "list_optimizers", "list_datasets", "create_model", "create_optimizer", "load_checkpoint")
_API += ("train", "ZooError")

__all__ = ["__version__", "hookimpl", *_API]


def __getattr__(name: str) -> Any:
    """The Python API, imported on first use (PEP 562): ``import zoo`` loads neither torch nor
    the registry. By name through importlib, as ``zoo.api`` is the top layer and the modules
    below it import this package (``from zoo import hookimpl``)."""
    if name not in _API:
        raise AttributeError(f"module 'zoo' has no attribute {name!r}")
    value = getattr(importlib.import_module("zoo.api"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_API})
