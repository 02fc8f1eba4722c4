"""Every ``torch.optim`` optimizer, as a zoo plugin.

The optimizers are discovered from the installed torch's source (the classes that
``torch.optim`` exports and that derive from ``Optimizer``), not hand-listed, and without
importing torch, so ``zoo list`` stays instant. Each is registered under its lower-case name
with the import path ``"torch.optim:Name"`` as its factory.
"""

from zoo import hookimpl
from zoo_optim.discover import torch_optimizers

# The seed's SGD: torch.optim.SGD(model.parameters(), lr=0.01).
DEFAULTS = {"sgd": {"lr": 0.01}}


@hookimpl
def register_optimizers(register):
    for class_name in torch_optimizers():
        name = class_name.lower()
        register(
            name,
            f"torch.optim:{class_name}",
            summary=f"torch.optim.{class_name}",
            defaults=DEFAULTS.get(name),
        )
