"""Builders for torchvision's classifiers, looked up by name: ``"zoo_torchvision.models:resnet18"``
is ``functools.partial(build, "resnet18")``, made when the registry first builds that model."""

from __future__ import annotations

import functools
import re
import warnings
from collections.abc import Callable, Sequence
from typing import Any

from zoo.errors import UsageError

# Models whose constructor fixes the input size (position embeddings, attention partitions):
# they are built for the run's size, as torchvision builds them for their weights' size.
_SIZE_ARGUMENT = {"vit_": "image_size", "maxvit_": "input_size"}
# Auxiliary heads that make a training forward return a tuple; torchvision drops them too when
# it loads the ImageNet weights (their weights still hold them: the zoo leaves those out).
_NO_AUX = {
    "googlenet": {"aux_logits": False, "init_weights": True},
    "inception_v3": {"aux_logits": False, "init_weights": True},
}
# Models whose ImageNet weights expect inputs re-scaled inside the model: torchvision builds them
# with transform_input=True whenever it loads those weights, so the zoo does too.
_TRANSFORM_INPUT = frozenset(_NO_AUX)
_MAXVIT_PARTITION, _MAXVIT_BLOCKS = 7, 4  # maxvit_t's partition_size and number of blocks


def _vit_fits(name: str, size: int) -> bool:
    """torchvision's ViTs cut the image into patches: the size must be a multiple of the patch's."""
    patch = int(re.findall(r"\d+", name)[-1])  # vit_b_16: 16
    return size % patch == 0


def _maxvit_fits(name: str, size: int) -> bool:
    """torchvision's check in MaxVit.__init__: after the stem, each block halves the size (a
    3x3 convolution of stride 2, padding 1) and the size entering each must divide into partitions."""
    size = (size - 1) // 2 + 1  # the stem
    for _ in range(_MAXVIT_BLOCKS):
        size = (size - 1) // 2 + 1
        if size % _MAXVIT_PARTITION:
            return False
    return True


_FITS: dict[str, Callable[[str, int], bool]] = {"vit_": _vit_fits, "maxvit_": _maxvit_fits}
_RULE = {
    "vit_": "a multiple of its patch size",
    "maxvit_": "a size whose feature maps all divide into 7x7 partitions (a multiple of 224 does)",
}


def check_size(name: str, height: int, width: int) -> None:
    """Refuse (a UsageError naming the model, the size and the nearest sizes that work) a size
    the constructor of ``name`` would reject, before anything is built."""
    for prefix, fits in _FITS.items():
        if not name.startswith(prefix):
            continue
        bad = [s for s in dict.fromkeys((height, width)) if not fits(name, s)]
        if bad:
            below = next((s for s in range(bad[0] - 1, 0, -1) if fits(name, s)), None)
            above = next(s for s in range(bad[0] + 1, 8 * bad[0] + 64) if fits(name, s))
            near = f"{below} or {above}" if below else str(above)
            raise UsageError(
                f"model '{name}' cannot be built for input size {height}x{width}: torchvision builds it only for "
                f"{_RULE[prefix]}; the nearest that work are {near}"
            )


def build(name: str, num_classes: int, input_size: Sequence[int] | None = None, imagenet: bool = False) -> Any:
    """torchvision's ``name`` with fresh weights, ``num_classes`` outputs, built for
    ``input_size`` ``(C, H, W)`` where its constructor depends on it (a size it rejects is a
    UsageError), and as torchvision builds it for its ImageNet weights when ``imagenet`` says they
    will be loaded (``zoo run --weights imagenet``)."""
    from torchvision import models

    kwargs: dict[str, Any] = dict(_NO_AUX.get(name, {}))
    if name in _TRANSFORM_INPUT:
        kwargs["transform_input"] = imagenet
    for prefix, argument in _SIZE_ARGUMENT.items():
        if name.startswith(prefix) and input_size is not None:
            height, width = input_size[-2], input_size[-1]
            check_size(name, height, width)
            kwargs[argument] = height if argument == "image_size" else (height, width)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # inception_v3's scipy and init notices
        return models.get_model(name, weights=None, num_classes=num_classes, **kwargs)


def __getattr__(name: str) -> Any:
    if name.startswith("__"):
        raise AttributeError(name)
    return functools.partial(build, name)
