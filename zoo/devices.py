"""``--device auto|cpu|cuda|cuda:N``: the seed's ``torch.device("cuda:0")``, checked up front,
and what a CUDA device can do (bfloat16 at full speed for ``--amp``)."""

from __future__ import annotations

import re

import torch

from zoo.errors import UsageError

__all__ = ["available_devices", "resolve_device", "bf16_problem", "BF16_CAPABILITY"]

_SPEC = re.compile(r"^(auto|cpu|cuda)(?::(\d+))?$")

# bfloat16 arithmetic in hardware: Ampere (8.0) and later. Older cards (Volta 7.0, Turing 7.5)
# accept bfloat16 tensors, and torch.cuda.is_bf16_supported() says yes for them, but emulate
# the arithmetic: --amp would then be slower than float32, not faster.
BF16_CAPABILITY = (8, 0)


def available_devices() -> list[str]:
    """The devices this machine can train on: ``cpu`` and one ``cuda:N`` per visible GPU."""
    found = ["cpu"]
    if torch.cuda.is_available():
        found += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    return found


def resolve_device(spec: str = "auto") -> torch.device:
    """The ``torch.device`` for a ``--device`` value; ``auto`` is the first GPU when there is one.

    An unknown spelling or a device this machine lacks is a :class:`UsageError` that lists what
    is available, so ``--device cuda:7`` fails before any data is loaded. ``cuda:N`` also becomes
    the process's current CUDA device (``torch.cuda.set_device``): whatever asks "the" GPU
    (``device="cuda"``, ``torch.cuda.synchronize()``, memory queries, bf16 checks) then means
    the one that trains, and no CUDA context is created on cuda:0 for nothing.
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
    if index is None:
        return torch.device("cuda", torch.cuda.current_device())
    torch.cuda.set_device(int(index))
    return torch.device("cuda", int(index))


def bf16_problem(device: torch.device) -> str | None:
    """Why ``--amp`` (bfloat16 autocast) should not train on ``device``, or ``None`` when it may.

    A CUDA device needs compute capability 8.0 or later (:data:`BF16_CAPABILITY`): asked of
    ``device`` itself, not of the current device as ``torch.cuda.is_bf16_supported()`` does, and
    without counting emulation, which that function does. Other devices are not CUDA's to judge:
    ``None`` (the runner says that ``--amp`` applies on CUDA only).
    """
    if device.type != "cuda":
        return None
    if torch.version.hip:  # ROCm: torch counts bfloat16 as supported on every AMD GPU, as before
        return None
    major, minor = torch.cuda.get_device_capability(device)
    if (major, minor) >= BF16_CAPABILITY:
        return None
    name = torch.cuda.get_device_name(device)
    need = ".".join(map(str, BF16_CAPABILITY))
    return (
        f"--amp trains in bfloat16, which {device} ({name}, compute capability {major}.{minor}) only "
        f"emulates, more slowly than float32: it needs compute capability {need} or later (Ampere: "
        f"A100, RTX 30xx, or newer); drop --amp to train in float32"
    )
