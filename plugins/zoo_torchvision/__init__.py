"""torchvision's classifiers as a zoo plugin: every model of
``torchvision.models.list_models(module=torchvision.models)``, under torchvision's names.

Listing reads ``catalogue.json`` (written from torchvision by ``python -m
zoo_torchvision.generate``): neither torch nor torchvision is imported until a model is built.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from zoo import hookimpl

CATALOGUE = Path(__file__).with_name("catalogue.json")


def load_catalogue() -> dict[str, Any]:
    """The models of catalogue.json: name -> ``{"input_size", "min_size", "params", "weights"}``."""
    return json.loads(CATALOGUE.read_text(encoding="utf-8"))["models"]


def _summary(name: str, info: dict[str, Any]) -> str:
    size, params = info["input_size"], info["params"]
    weights = info["weights"]
    pretrained = ""
    if weights:
        acc = weights[0].get("acc1")
        pretrained = "; ImageNet weights" + (f": acc@1 {acc:.1f}" if acc else "")
    return f"torchvision {name}: {params / 1e6:.1f}M parameters, input {size}x{size}{pretrained}"


@hookimpl
def register_models(register):
    for name, info in load_catalogue().items():
        register(
            name,
            f"zoo_torchvision.models:{name}",
            summary=_summary(name, info),
            input_size=(3, info["input_size"], info["input_size"]),
            default_dataset="cifar10",
            min_input_size=tuple(info["min_size"]),
            params=info["params"],
            weights=info["weights"],
        )
