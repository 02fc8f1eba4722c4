"""Data files written by tests: a CIFAR-10-format directory, image folders, single images.

Nothing here downloads; everything is small and deterministic.
"""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _dump(path: Path, obj: dict) -> None:
    # Protocol 2 and str keys: what the official Python-2 pickles give torchvision, which
    # reads them with encoding="latin1" and indexes with "data"/"labels"/"label_names".
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def write_cifar10_dir(root: str | Path, n_train: int = 50, n_test: int = 20, seed: int = 0) -> Path:
    """Write ``root/cifar-10-batches-py`` in the official format; returns that directory.

    ``n_train`` images are spread over data_batch_1..5, ``n_test`` go to test_batch. Labels
    cycle through the 10 classes; pixels are random uint8, stored as rows of 3072 (R, G, B planes).
    """
    base = Path(root) / "cifar-10-batches-py"
    base.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)

    def batch(n: int, label: str) -> dict:
        return {
            "batch_label": label,
            "labels": [int(i % 10) for i in range(n)],
            "data": rng.integers(0, 256, size=(n, 3 * 32 * 32), dtype=np.uint8),
            "filenames": [f"img_{i}.png" for i in range(n)],
        }

    for i, n in enumerate(np.array_split(np.arange(n_train), 5), start=1):
        _dump(base / f"data_batch_{i}", batch(len(n), f"training batch {i} of 5"))
    _dump(base / "test_batch", batch(n_test, "testing batch 1 of 1"))
    _dump(base / "batches.meta", {"label_names": CIFAR10_NAMES, "num_cases_per_batch": 10000, "num_vis": 3072})
    return base


def read_cifar10_batch(path: str | Path) -> tuple[np.ndarray, list[int]]:
    """``(data (N, 3072) uint8, labels)`` of one batch file, to compare with what a loader gives."""
    with open(path, "rb") as f:
        entry = pickle.load(f, encoding="latin1")
    return entry["data"], entry["labels"]


def _colour(i: int) -> tuple[int, int, int]:
    return ((60 * i + 30) % 256, (110 * i + 90) % 256, (170 * i + 200) % 256)


def write_image_folder(
    root: str | Path,
    classes: Sequence[str] = ("cat", "dog", "frog"),
    per_class: int = 3,
    splits: Sequence[str] = ("train", "val"),
    size: tuple[int, int] = (40, 36),
) -> Path:
    """Write ``root/<split>/<class>/<i>.png``: RGB images of one colour per class (plus noise)."""
    root = Path(root)
    rng = np.random.default_rng(0)
    for split in splits:
        for k, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                pixels = np.empty((size[1], size[0], 3), dtype=np.int16)
                pixels[...] = _colour(k)
                pixels += rng.integers(-10, 11, size=pixels.shape, dtype=np.int16)
                Image.fromarray(pixels.clip(0, 255).astype(np.uint8), "RGB").save(folder / f"{i}.png")
    return root


def write_image(path: str | Path, mode: str = "RGB", size: tuple[int, int] = (48, 40), colour: int = 0) -> Path:
    """Write one image in a PIL ``mode`` (RGB, RGBA, L, P, LA, ...); the suffix picks the format.

    ``.jpg``/``.jpeg`` write JPEG (RGB or L only, as JPEG allows: other modes become RGB).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    w, h = size
    gradient = np.linspace(0, 255, w, dtype=np.float32)[None, :].repeat(h, axis=0)
    r, g, b = _colour(colour)
    rgb = np.stack([gradient * r / 255, gradient * g / 255, np.full((h, w), b, np.float32)], axis=-1)
    image = Image.fromarray(rgb.round().astype(np.uint8), "RGB")
    if mode == "RGBA":
        image = image.convert("RGBA")
        image.putalpha(Image.fromarray(np.full((h, w), 200, np.uint8), "L"))
    elif mode == "P":
        image = image.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    elif mode != "RGB":
        image = image.convert(mode)
    if path.suffix.lower() in (".jpg", ".jpeg") and image.mode not in ("RGB", "L"):
        image = image.convert("RGB")
    image.save(path)
    return path
