"""Loaders of the built-in datasets: ``loader(train, root, download) -> Dataset``.

torch, torchvision and scikit-learn are imported inside each loader, which runs only when a
run needs the data.
"""

from __future__ import annotations

import functools
import pickle
from pathlib import Path
from typing import Any

from zoo.errors import UsageError
from zoo_datasets import DIGITS_CLASSES, FAKE_CLASSES

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
CIFAR10_DIR = "cifar-10-batches-py"  # what the official archive extracts to


# -- cifar10 ---------------------------------------------------------------------------------


class _Refused(pickle.UnpicklingError):
    """A CIFAR-10 file that names a Python object its format never holds."""


class _CifarUnpickler(pickle.Unpickler):
    """Builds what CIFAR-10's pickles hold (dicts, lists, strings, numbers, uint8 arrays) and
    nothing else: any other global is refused, so a crafted file cannot run code. torchvision
    would call plain ``pickle.load`` here, trusting the md5 of the official archive; a directory
    given with --data-dir has no such guarantee."""

    ALLOWED = {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),  # numpy 1, and the official Python 2 files
        ("numpy._core.multiarray", "_reconstruct"),  # numpy 2
        ("_codecs", "encode"),  # bytes, as Python 3 pickles them at protocol 2
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.ALLOWED:
            raise _Refused(
                f"it pickles {module}.{name}, which no CIFAR-10 file holds: refused, as unpickling it would run code"
            )
        return super().find_class(module, name)


def _unpickle(path: Path) -> Any:
    with open(path, "rb") as f:
        return _CifarUnpickler(f, encoding="latin1").load()  # latin1: the official files are Python 2's


def _read_cifar10(base: Path, train: bool) -> tuple[Any, Any, list[str]]:
    """One split as torchvision's CIFAR10 reads it: images ``(N, 3, 32, 32)`` uint8, labels and
    class names. Every file of both splits must be there and non-empty (a half-written download).

    Each file's rows are copied into one growing uint8 array as the file is read, so the split is
    held once plus one file in flight (~30 MB), not the five files and their ``vstack``ed copy."""
    import numpy as np

    empty = _missing_or_empty(base)
    if empty:
        raise ValueError(f"{empty[0]} is missing or empty")
    images = np.empty((0, 3 * 32 * 32), dtype=np.uint8)
    labels: list[int] = []
    for name in _cifar10_files(train)[:-1]:
        entry = _unpickle(base / name)
        rows = np.asarray(entry["data"])
        if rows.ndim != 2 or rows.shape[1] != images.shape[1]:
            raise ValueError(f"{name}: 'data' has shape {rows.shape}, not (N, {images.shape[1]})")
        start = images.shape[0]
        # resize in place (refcheck off: nothing else refers to ``images``) then fill the new rows
        images.resize((start + rows.shape[0], images.shape[1]), refcheck=False)
        images[start:] = rows
        labels.extend(entry["labels"] if "labels" in entry else entry["fine_labels"])
        del entry, rows  # free this file's buffers before the next one is read
    classes = _unpickle(base / _cifar10_files(train)[-1])["label_names"]
    return images.reshape(-1, 3, 32, 32), np.asarray(labels, dtype=np.int64), classes


# The official archive's layout (torchvision's CIFAR10.train_list / test_list / meta, pinned by a
# test). Spelled out so that reading CIFAR-10 does not import torchvision (~2.8 s and 160 MiB:
# torchvision's import pulls in torch._dynamo); torchvision is imported for --download only.
CIFAR10_TRAIN_FILES = ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5")
CIFAR10_TEST_FILES = ("test_batch",)
CIFAR10_META_FILE = "batches.meta"


def _cifar10_files(train: bool | None = None) -> list[str]:
    """The files of one split plus the metadata (``None``: every file), in reading order."""
    split = {True: CIFAR10_TRAIN_FILES, False: CIFAR10_TEST_FILES, None: CIFAR10_TRAIN_FILES + CIFAR10_TEST_FILES}[
        train
    ]
    return [*split, CIFAR10_META_FILE]


def _missing_or_empty(base: Path) -> list[str]:
    return [name for name in _cifar10_files() if not (base / name).is_file() or (base / name).stat().st_size == 0]


def _cifar10_file_problem(path: Path) -> str | None:
    """Why one CIFAR-10 pickle cannot be used, or ``None`` when it looks right."""
    import numpy as np

    if not path.is_file():
        return "missing"
    if path.stat().st_size == 0:
        return "empty"
    try:
        entry = _unpickle(path)
    except _Refused as exc:
        return str(exc)
    except Exception as exc:  # truncated or not a pickle: EOFError, UnpicklingError, ...
        return f"unreadable: {type(exc).__name__}"
    if not isinstance(entry, dict):
        return f"a pickled {type(entry).__name__}, not a dict"
    if path.name == "batches.meta":
        names = entry.get("label_names")
        return None if isinstance(names, list) and len(names) == 10 else "no list of 10 'label_names'"
    data, labels = entry.get("data"), entry.get("labels")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        shape = getattr(data, "shape", None)
        return f"'data' is not a uint8 array of rows of 3x32x32 pixels (shape {shape})"
    if labels is None or len(labels) != data.shape[0]:
        return f"{data.shape[0]} images but {None if labels is None else len(labels)} labels"
    if len(labels) and not all(0 <= int(label) < 10 for label in labels):
        return "labels outside 0..9"
    return None


def _cifar10_corrupt(base: Path, train: bool, error: BaseException | None) -> UsageError:
    remedy = f"delete {base} and download again with --download (or copy an intact {CIFAR10_DIR} there)"
    for name in _cifar10_files(train) + _cifar10_files(not train)[:-1]:
        problem = _cifar10_file_problem(base / name)
        if problem:
            return UsageError(f"CIFAR-10 file {base / name} is corrupt ({problem}); {remedy}")
    reason = f": {type(error).__name__}: {' '.join(str(error).split())[:200]}" if error else ""
    return UsageError(f"CIFAR-10 in {base} is corrupt{reason}; {remedy}")


def _download_cifar10(root: Path) -> None:
    from torchvision.datasets import CIFAR10
    from torchvision.datasets.utils import download_and_extract_archive

    try:
        download_and_extract_archive(CIFAR10.url, str(root), filename=CIFAR10.filename, md5=CIFAR10.tgz_md5)
    except Exception as exc:  # offline (URLError), refused, a bad archive: all end the same way
        reason = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise UsageError(
            f"could not download CIFAR-10 into {root} ({reason}); offline, copy an extracted "
            f"{CIFAR10_DIR} folder into a directory and pass --data-dir DIR, or train on real "
            f"data that needs no download with --data digits"
        ) from exc


def load_cifar10(train: bool, root: str, download: bool) -> Any:
    """CIFAR-10 from ``<root>/cifar-10-batches-py`` (downloaded there with ``download``)."""
    import numpy as np
    import torch

    from zoo.data import TensorImageDataset

    root_path = Path(root).expanduser()
    base = root_path / CIFAR10_DIR
    missing = [name for name in _cifar10_files() if not (base / name).exists()]
    if missing and download:
        _download_cifar10(root_path)
        missing = [name for name in _cifar10_files() if not (base / name).exists()]
    if missing:
        what = "no CIFAR-10" if len(missing) == len(_cifar10_files()) else f"CIFAR-10 incomplete (no {missing[0]})"
        raise UsageError(
            f"{what} in {base}; get it with --download (needs internet), point --data-dir DIR at a "
            f"directory holding {CIFAR10_DIR}, or train offline on real data with --data digits"
        )
    try:
        data, targets, classes = _read_cifar10(base, train)
    except Exception as exc:  # a half-written or crafted directory: truncated pickle, wrong sizes
        raise _cifar10_corrupt(base, train, exc) from exc
    if (
        data.dtype != np.uint8
        or targets.shape != data.shape[:1]
        or (targets.size and not (0 <= targets.min() and targets.max() < 10))
        or not isinstance(classes, list)
        or len(classes) != 10
    ):
        raise _cifar10_corrupt(base, train, None)
    return TensorImageDataset(
        torch.from_numpy(np.ascontiguousarray(data)),
        torch.from_numpy(targets),
        mean=CIFAR10_MEAN,
        std=CIFAR10_STD,
        classes=[str(name) for name in classes],
    )


# -- digits ----------------------------------------------------------------------------------


def digits_arrays() -> tuple[Any, Any]:
    """scikit-learn's digits as ``sklearn.datasets.load_digits`` gives them: ``(images, target)``,
    ``(1797, 8, 8)`` float64 and ``(1797,)`` int. Its CSV ships inside scikit-learn; read here
    as scikit-learn reads it, without importing scikit-learn and SciPy (about 1 s of every
    digits run); through scikit-learn where the file is not where it was."""
    import importlib.util

    import numpy as np

    spec = importlib.util.find_spec("sklearn")
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    path = Path(folders[0], "datasets", "data", "digits.csv.gz") if folders else None
    if path is None or not path.is_file():
        try:
            from sklearn.datasets import load_digits as sklearn_digits
        except ImportError:
            raise UsageError("the 'digits' dataset needs scikit-learn: pip install 'tudui-zoo[digits]'") from None
        bunch = sklearn_digits()
        return bunch.images, bunch.target
    import gzip

    with gzip.open(path, mode="rt", encoding="utf-8") as f:
        data = np.loadtxt(f, delimiter=",")
    return data[:, :-1].reshape(-1, 8, 8), data[:, -1].astype(int, copy=False)


def load_digits(train: bool, root: str, download: bool) -> Any:
    """scikit-learn's 1,797 8x8 digits: a fixed 80/20 split, upsampled to 3x32x32 uint8."""
    from zoo.data import TensorImageDataset

    images, labels, train_index, val_index, mean, std = _digits()
    index = train_index if train else val_index
    return TensorImageDataset(
        images[index].expand(-1, 3, -1, -1).contiguous(),  # copies: the cached tensors stay as they are
        labels[index],
        mean=(mean,) * 3,
        std=(std,) * 3,
        classes=DIGITS_CLASSES,
    )


@functools.lru_cache(maxsize=1)
def _digits() -> tuple[Any, Any, Any, Any, float, float]:
    """Both splits' source, read and upsampled once a process (a run loads both splits)."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    digits, target = digits_arrays()  # ships inside scikit-learn: no download, nothing cached
    pixels = torch.from_numpy(digits).to(torch.float32).unsqueeze(1) * (255.0 / 16.0)
    pixels = F.interpolate(pixels, size=(32, 32), mode="bilinear", align_corners=False)
    images = pixels.round_().clamp_(0, 255).to(torch.uint8)
    labels = torch.from_numpy(target).to(torch.int64)

    order = torch.from_numpy(np.random.default_rng(0).permutation(len(labels)))
    n_train = len(labels) * 4 // 5
    train_index, val_index = order[:n_train], order[n_train:]
    # Normalise both splits with the train split's statistics, as a real pipeline would.
    std, mean = torch.std_mean(images[train_index].to(torch.float64) / 255.0, correction=0)
    return images, labels, train_index, val_index, float(mean), float(std)


# -- fake ------------------------------------------------------------------------------------

_FAKE_NOISE = 0.2  # per-pixel noise, in [0, 1] units: enough that an epoch is not trivial


def _fake_patterns() -> Any:
    """One fixed 3x32x32 pattern per class: a colour plus stripes of a class's own angle."""
    import math

    import torch

    g = torch.Generator().manual_seed(20240601)  # the same patterns for train and val
    colours = 0.2 + 0.6 * torch.rand(10, 3, 1, 1, generator=g)
    ys, xs = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    angles = torch.arange(10.0) * (math.pi / 10)
    freqs = 2.0 + torch.arange(10.0) % 3
    waves = torch.sin(
        2 * math.pi * freqs.view(10, 1, 1) / 32 * (xs * angles.cos().view(10, 1, 1) + ys * angles.sin().view(10, 1, 1))
    )
    return colours + 0.15 * waves.unsqueeze(1)  # (10, 3, 32, 32), within [0.05, 0.95]


def load_fake(train: bool, root: str, download: bool) -> Any:
    """Deterministic synthetic CIFAR-shaped data: 1,000 train / 200 val, 10 learnable classes."""
    import torch

    from zoo.data import TensorImageDataset

    n = 1000 if train else 200
    g = torch.Generator().manual_seed(0 if train else 1)
    patterns = _fake_patterns()
    labels = torch.randperm(n, generator=g) % 10  # balanced classes in a shuffled order
    # One noise plane shared by the channels: a third of the random numbers, which dominate the time.
    noise = torch.randn(n, 1, 32, 32, generator=g) * _FAKE_NOISE
    images = (patterns[labels] + noise).clamp_(0, 1).mul_(255).round_().to(torch.uint8)
    # Statistics of the distribution itself, so train and val share them without generating both.
    mean = patterns.mean(dim=(0, 2, 3))
    std = (patterns.var(dim=(0, 2, 3), correction=0) + _FAKE_NOISE**2).sqrt()
    return TensorImageDataset(images, labels, mean=mean.tolist(), std=std.tolist(), classes=FAKE_CLASSES)


# -- imagefolder -----------------------------------------------------------------------------

_LAYOUT = "expected DIR/train/<class>/*.png and DIR/val/<class>/*.png, DIR given with --data-dir DIR"


def load_imagefolder(train: bool, root: str, download: bool) -> Any:
    """The user's images under ``root/train`` or ``root/val``, one folder per class, at 32x32."""
    from torchvision import transforms
    from torchvision.datasets import ImageFolder
    from torchvision.datasets.folder import find_classes

    from zoo.data import IMAGENET_MEAN, IMAGENET_STD

    base = Path(root).expanduser()
    split = base / ("train" if train else "val")
    if not split.is_dir():
        raise UsageError(f"no image folder at {split}: {_LAYOUT}")

    class FixedClassesFolder(ImageFolder):
        # val must use train's class indices: a val folder lacking a class would otherwise
        # shift every later label by one.
        def find_classes(self, directory: str) -> tuple[list[str], dict[str, int]]:
            return classes, {name: i for i, name in enumerate(classes)}

    transform = transforms.Compose(
        [transforms.Resize((32, 32)), transforms.ToTensor(), transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    )
    try:
        train_dir = base / "train"
        classes = find_classes(train_dir)[0] if train_dir.is_dir() else find_classes(split)[0]
        if not train:
            unknown = sorted(set(find_classes(split)[0]) - set(classes))
            if unknown:
                raise UsageError(f"class folder '{unknown[0]}' in {split} has no counterpart in {train_dir}: {_LAYOUT}")
        # allow_empty: a val split may lack some classes; a train class with no images may not.
        dataset = FixedClassesFolder(str(split), transform=transform, allow_empty=not train)
    except FileNotFoundError as exc:  # no class folders, or a class folder with no images
        text = " ".join(str(exc).split())
        where = "" if str(split) in text else f"{split}: "
        raise UsageError(f"{where}{text} ({_LAYOUT})") from None
    dataset.mean, dataset.std, dataset.input_size = IMAGENET_MEAN, IMAGENET_STD, (3, 32, 32)
    return dataset
