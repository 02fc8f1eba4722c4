"""``--device auto|cpu|cuda|cuda:N``: the seed's ``torch.device("cuda:0")``, checked up front."""

from __future__ import annotations

import re

import torch

from zoo.errors import UsageError

__all__ = ["available_devices", "resolve_device"]

_SPEC = re.compile(r"^(auto|cpu|cuda)(?::(\d+))?$")


def available_devices() -> list[str]:
    """The devices this machine can train on: ``cpu`` and one ``cuda:N`` per visible GPU."""
    found = ["cpu"]
    if torch.cuda.is_available():
        found += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    return found


def resolve_device(spec: str = "auto") -> torch.device:
    """The ``torch.device`` for a ``--device`` value; ``auto`` is the first GPU when there is one.

    An unknown spelling or a device this machine lacks is a :class:`UsageError` that lists what
    is available, so ``--device cuda:7`` fails before any data is loaded.
    """
    text = str(spec).strip().lower()
    match = _SPEC.match(text)
    if match is None or (match.group(1) != "cuda" and match.group(2) is not None):
        raise UsageError(f"unknown device '{spec}': expected auto, cpu, cuda or cuda:N (e.g. cuda:0)")
    kind, index = match.group(1), match.group(2)
    if kind == "auto":
        return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    if kind == "cpu":
        return torch.device("cpu")
    available = ", ".join(available_devices())
    if not torch.cuda.is_available():
        why = "this torch was built without CUDA" if torch.version.cuda is None else "no NVIDIA GPU is visible"
        raise UsageError(f"device '{spec}' is not available: {why}; available: {available} (use --device cpu)")
    if index is not None and int(index) >= torch.cuda.device_count():
        raise UsageError(
            f"device '{spec}' is not available: this machine has {torch.cuda.device_count()} GPU(s); "
            f"available: {available}"
        )
    return torch.device("cuda", int(index) if index is not None else torch.cuda.current_device())
