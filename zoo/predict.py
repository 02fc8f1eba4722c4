"""``zoo predict``: the seed's section 32 (classify your own image files with a trained model).

Each image goes through what the training data went through: PIL opens it, ``convert`` gives
the dataset's channels (RGBA PNGs have 4, the seed's trap), it is resized to the dataset's
size, normalised with the training mean and std recorded in the checkpoint, then brought to
the model's input size exactly as the training batches were. The model runs in ``eval()``
under ``no_grad()``, and softmax gives probabilities for the checkpoint's class names.
"""

from __future__ import annotations

import os
import re
import sys
import warnings
from collections.abc import Sequence
from typing import Any

import torch

from zoo.checkpoint import load_checkpoint
from zoo.devices import resolve_device
from zoo.errors import UsageError
from zoo.registry import get_registry, model_from_checkpoint

__all__ = ["predict", "load_image"]

BATCH = 64  # images per forward pass
_QUIET = (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning)


def load_image(
    path: str | os.PathLike[str], size: Sequence[int], mean: Sequence[float], std: Sequence[float]
) -> torch.Tensor:
    """One image file as a normalised ``(C, H, W)`` float tensor; any PIL format and mode.

    Raises :class:`UsageError` naming the file when it is missing or not a readable image.
    """
    import numpy as np
    from PIL import Image

    channels, height, width = size
    if channels not in (1, 3):
        raise UsageError(f"{path}: cannot make a {channels}-channel input from an image file")
    try:
        # PIL warns through `warnings` (a raw line naming its own source file): record them and
        # say them as zoo warnings once the image is read.
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with Image.open(path) as image:
                pixels_wide, pixels_high = image.size
                image.load()  # decode now: a truncated file fails here, not later
                if image.mode == "P" and "transparency" in image.info:
                    image = image.convert("RGBA")  # PIL's own advice for palettes with transparency
                image = image.convert("RGB" if channels == 3 else "L")
                image = image.resize((width, height), Image.Resampling.BILINEAR)
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise UsageError(f"{path}: is a directory, expected an image file") from None
    except Image.DecompressionBombError as exc:
        raise UsageError(f"{path}: {_too_large(exc)}") from None
    except Exception as exc:  # UnidentifiedImageError, truncated data
        text = " ".join(str(exc).split()) or type(exc).__name__
        raise UsageError(f"{path}: not a readable image ({text})") from None
    said: set[str] = set()
    for warning in caught:
        if issubclass(warning.category, _QUIET):
            continue  # hidden by Python's default filters too: not news for the user
        if issubclass(warning.category, Image.DecompressionBombWarning):
            line = (
                f"{path} is {pixels_wide}x{pixels_high} ({pixels_wide * pixels_high:,} pixels), over PIL's "
                f"decompression-bomb warning limit of {Image.MAX_IMAGE_PIXELS:,} pixels: read anyway, "
                f"which takes time and memory; above {2 * Image.MAX_IMAGE_PIXELS:,} an image is refused"
            )
        else:
            line = f"{path}: {' '.join(str(warning.message).split())}"
        if line not in said:
            said.add(line)
            print(f"zoo: warning: {line}", file=sys.stderr)
    pixels = torch.from_numpy(np.array(image, dtype=np.uint8))
    pixels = pixels.unsqueeze(-1) if pixels.dim() == 2 else pixels
    x = pixels.permute(2, 0, 1).to(torch.float32).div_(255.0)
    mean_t = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)
    return (x - mean_t) / std_t


def _too_large(exc: Exception) -> str:
    """PIL's DecompressionBombError, said plainly: the image's pixels and the limit."""
    match = re.search(r"\((\d+) pixels\) exceeds limit of (\d+) pixels", str(exc))
    if match is None:
        return f"too large to decode safely ({' '.join(str(exc).split())})"
    pixels, limit = (int(n) for n in match.groups())
    return (
        f"too large to decode safely: {pixels:,} pixels, over the limit of {limit:,} "
        f"(twice PIL's decompression-bomb warning limit)"
    )


def predict(
    checkpoint: str | os.PathLike[str],
    images: Sequence[str | os.PathLike[str]],
    *,
    device: str = "auto",
    top: int = 1,
    trust: bool = False,
    registry_files: Sequence[str] = (),
) -> tuple[list[dict[str, Any]], list[str]]:
    """Classify ``images`` with a checkpoint's model, rebuilt from the registry with
    ``registry_files`` (``--registry``) layered over it, as ``zoo validate`` does.

    Returns one result per readable image, ``{"image", "label", "index", "probability",
    "top": [{"label", "probability"}, ...]}`` (``top`` best classes), and one error line per
    image that could not be read; the others are still classified.
    """
    from zoo.data import IMAGENET_MEAN, IMAGENET_STD, adapt

    if not isinstance(top, int) or top < 1:
        raise UsageError(f"--top must be a positive integer, got {top!r}")
    target = resolve_device(device)
    registry = get_registry(registry_files)  # a missing or bad file: exit 2 before any loading
    ckpt = load_checkpoint(checkpoint, trust=trust)
    spec = ckpt["spec"]
    model = model_from_checkpoint(ckpt, source=str(checkpoint), registry=registry).to(target).eval()
    classes = list(spec.get("classes") or [])
    if len(classes) != spec["num_classes"]:
        classes = [str(i) for i in range(spec["num_classes"])]
    input_size = tuple(spec["input_size"])
    data_size = tuple(spec.get("data_input_size") or input_size)
    mean = spec.get("mean") or IMAGENET_MEAN[: data_size[0]]
    std = spec.get("std") or IMAGENET_STD[: data_size[0]]

    names: list[str] = []
    tensors: list[torch.Tensor] = []
    errors: list[str] = []
    for path in images:
        try:
            tensors.append(load_image(path, data_size, mean, std))
            names.append(str(path))
        except UsageError as exc:
            errors.append(str(exc))

    k = min(top, len(classes))
    results: list[dict[str, Any]] = []
    with torch.no_grad():
        for start in range(0, len(tensors), BATCH):
            inputs = adapt(torch.stack(tensors[start : start + BATCH]).to(target), input_size)
            probabilities = model(inputs).float().softmax(dim=1)
            best_p, best_i = (t.tolist() for t in probabilities.topk(k, dim=1))
            for name, ps, indices in zip(names[start : start + BATCH], best_p, best_i):
                results.append(
                    {
                        "image": name,
                        "label": classes[indices[0]],
                        "index": indices[0],
                        "probability": ps[0],
                        "top": [{"label": classes[i], "probability": p} for i, p in zip(indices, ps)],
                    }
                )
    return results, errors
