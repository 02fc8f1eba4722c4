"""The builders: ``zoo_timm.models:NAME`` is a function ``(num_classes) -> timm's model NAME``.

A module ``__getattr__`` makes one per name on demand, so that the registry can name each
model's builder by an import path without this module listing a thousand functions.
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    if name.startswith("__"):
        raise AttributeError(name)

    def build(num_classes: int) -> Any:
        import timm

        return timm.create_model(name, pretrained=False, num_classes=num_classes)

    build.__name__ = build.__qualname__ = name
    build.__doc__ = f"timm.create_model({name!r}, pretrained=False, num_classes=num_classes)"
    return build
