"""Builders for torchvision's classifiers, looked up by name: ``"zoo_torchvision.models:resnet18"``
is ``functools.partial(build, "resnet18")``, made when the registry first builds that model."""

from __future__ import annotations

import functools
import warnings
from collections.abc import Sequence
from typing import Any

# Models whose constructor fixes the input size (position embeddings, attention partitions):
# they are built for the run's size, as torchvision builds them for their weights' size.
_SIZE_ARGUMENT = {"vit_": "image_size", "maxvit_": "input_size"}
# Auxiliary heads that make a training forward return a tuple; torchvision drops them too when
# it loads the ImageNet weights (their weights still hold them: the zoo leaves those out).
_NO_AUX = {
    "googlenet": {"aux_logits": False, "init_weights": True},
    "inception_v3": {"aux_logits": False, "init_weights": True},
}


def build(name: str, num_classes: int, input_size: Sequence[int] | None = None) -> Any:
    """torchvision's ``name`` with fresh weights, ``num_classes`` outputs, built for
    ``input_size`` ``(C, H, W)`` where its constructor depends on it; ImageNet weights come from
    ``zoo run --weights imagenet``."""
    from torchvision import models

    kwargs: dict[str, Any] = dict(_NO_AUX.get(name, {}))
    for prefix, argument in _SIZE_ARGUMENT.items():
        if name.startswith(prefix) and input_size is not None:
            height, width = input_size[-2], input_size[-1]
            kwargs[argument] = height if argument == "image_size" else (height, width)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # inception_v3's scipy and init notices
        return models.get_model(name, weights=None, num_classes=num_classes, **kwargs)


def __getattr__(name: str) -> Any:
    if name.startswith("__"):
        raise AttributeError(name)
    return functools.partial(build, name)
