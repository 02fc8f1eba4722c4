"""Instruments for the fast-path checks, shared by tests/test_fastpaths.py and bench/run.py."""

from __future__ import annotations

from typing import Any

from torch.overrides import TorchFunctionMode

# Tensor methods that read a value back to Python: on CUDA each one waits for the device.
HOST_READS = {
    "item",
    "tolist",
    "__bool__",
    "__float__",
    "__int__",
    "__index__",
    "nonzero",
    "numpy",
    "cpu",
    "is_nonzero",
}


class HostReads(TorchFunctionMode):
    """Counts the calls that read tensor values back to Python while it is active."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        if getattr(func, "__name__", None) in HOST_READS:
            self.count += 1
        return func(*args, **(kwargs or {}))
