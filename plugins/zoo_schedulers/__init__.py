"""Every ``torch.optim.lr_scheduler`` scheduler, and the zoo's resumable warm-up + cosine.

The schedulers are discovered from the installed torch's source (the classes that
``torch.optim.lr_scheduler`` exports and that derive from ``LRScheduler``), not hand-listed, and
without importing torch, so ``zoo list`` stays instant. Each is registered under its lower-case
name with the import path ``"torch.optim.lr_scheduler:Name"`` as its factory, stepped per
optimizer step for the cyclic ones and per epoch for the rest. The four that need Python
objects (a callable, other schedulers) are registered and refused when built, with the reason.
"""

from zoo import hookimpl
from zoo_schedulers.discover import torch_schedulers
from zoo_schedulers.refused import SHORT

PER_STEP = {"OneCycleLR", "CyclicLR"}  # their cycle is measured in optimizer steps


@hookimpl
def register_schedulers(register):
    for class_name in torch_schedulers():
        refused = class_name in SHORT
        register(
            class_name.lower(),
            f"zoo_schedulers.refused:{class_name}" if refused else f"torch.optim.lr_scheduler:{class_name}",
            summary=f"torch.optim.lr_scheduler.{class_name}"
            + (f" (refused by zoo run: {SHORT[class_name]})" if refused else ""),
            interval="step" if class_name in PER_STEP else "epoch",
        )
    register(
        "warmupcosinelr",
        "zoo_schedulers.warmup:WarmupCosineLR",
        summary="linear warm-up for warmup_epochs, then cosine to the end of the run; resumes exactly",
        interval="step",
    )
