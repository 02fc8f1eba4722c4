"""The builders: ``zoo_timm.models:NAME`` is a function ``(num_classes, input_size) -> timm's
model NAME``.

A module ``__getattr__`` makes one per name on demand, so that the registry can name each
model's builder by an import path without this module listing a thousand functions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from zoo_timm.cache import catalogue


def size_arguments(name: str, input_size: Sequence[int] | None) -> dict[str, Any]:
    """``img_size=`` for a model built for one fixed size (most ViTs: position embeddings for
    their patch grid) when the run's ``input_size`` ``(C, H, W)`` is another: timm builds it
    for that size, as for its own. Other models take any size as they are."""
    info = catalogue().get(name, {})
    if input_size is None or not info.get("fixed_input_size"):
        return {}
    height, width = input_size[-2], input_size[-1]
    if [height, width] == list(info["input_size"][-2:]):
        return {}
    return {"img_size": height if height == width else (height, width)}


def __getattr__(name: str) -> Any:
    if name.startswith("__"):
        raise AttributeError(name)

    def build(num_classes: int, input_size: Sequence[int] | None = None) -> Any:
        import timm

        return timm.create_model(name, pretrained=False, num_classes=num_classes, **size_arguments(name, input_size))

    build.__name__ = build.__qualname__ = name
    build.__doc__ = (
        f"timm.create_model({name!r}, pretrained=False, num_classes=num_classes), built for input_size "
        f"where timm fixes the size"
    )
    return build
