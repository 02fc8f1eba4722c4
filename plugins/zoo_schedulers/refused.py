"""torch's schedulers that take Python objects a command line cannot give.

They are registered, so that ``zoo list`` shows them and ``zoo show`` says why, and refused
with the reason when a run builds one (as Muon is refused for a model it cannot train).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from zoo.errors import UsageError

_CALLABLE = (
    "it needs lr_lambda, a Python function of the epoch, which a command line cannot give; "
    "register a factory that builds it in a plugin (register_schedulers, docs/plugins.md)"
)
_SCHEDULERS = (
    "it chains other schedulers built on the same optimizer, which a command line cannot give; "
    "for a warm-up then cosine use 'warmup-cosine' (it resumes exactly, where SequentialLR restores "
    "the wrong learning rate: PyTorch #180200), or register a factory that builds the chain in a plugin"
)
SHORT = {  # for zoo list
    "LambdaLR": "needs a Python callable",
    "MultiplicativeLR": "needs a Python callable",
    "SequentialLR": "needs other schedulers",
    "ChainedScheduler": "needs other schedulers",
}
REASONS = {
    "LambdaLR": _CALLABLE,
    "MultiplicativeLR": _CALLABLE,
    "SequentialLR": _SCHEDULERS,
    "ChainedScheduler": _SCHEDULERS,
}


def _refuser(class_name: str) -> Callable[..., Any]:
    def factory(optimizer: Any, **hparams: Any) -> Any:
        raise UsageError(f"scheduler '{class_name.lower()}' cannot be built by zoo run: {REASONS[class_name]}")

    factory.__name__ = factory.__qualname__ = class_name
    factory.__doc__ = f"torch.optim.lr_scheduler.{class_name}, refused: {REASONS[class_name]}"
    return factory


LambdaLR = _refuser("LambdaLR")
MultiplicativeLR = _refuser("MultiplicativeLR")
SequentialLR = _refuser("SequentialLR")
ChainedScheduler = _refuser("ChainedScheduler")
