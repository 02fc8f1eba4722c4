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


def per_step(short: tuple[int, int], long: tuple[int, int]) -> float:
    """The cost of one more training step, from two runs' ``(count, steps)``: the difference of
    the counts over the difference of the steps. The steps are those the runs took (counted, not
    asked for): runs that took as many steps would difference to 0 whatever a step costs, so
    they are refused."""
    (count_short, steps_short), (count_long, steps_long) = short, long
    if steps_long <= steps_short:
        raise ValueError(
            f"the two runs took {steps_short} and {steps_long} steps: the longer must take more steps, "
            f"or the difference measures nothing (is the data set smaller than the longer run asks for?)"
        )
    return (count_long - count_short) / (steps_long - steps_short)
