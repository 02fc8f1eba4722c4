"""zoo: a plugin-based PyTorch model zoo.

The public API for plugin authors is ``hookimpl``; the hooks are in ``zoo.hookspecs``.
Nothing here imports torch: ``zoo list`` must stay instant.
"""

from __future__ import annotations

import pluggy

__version__ = "0.1.0"

hookimpl = pluggy.HookimplMarker("zoo")
"""Marker for plugin hook implementations: ``@hookimpl def register_models(register): ...``."""

__all__ = ["__version__", "hookimpl"]
