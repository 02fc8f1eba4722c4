"""Data for the runner: in-memory image tensors, batches on the device, normalisation.

Two paths lead to the same batches, ``(float32 inputs normalised, int64 labels)`` on the device:

* a :class:`TensorImageDataset` (CIFAR-10, digits, fake) is one uint8 tensor moved to the
  device once and shuffled there with ``randperm`` index slices, as airbench does: no
  DataLoader, no workers, no per-item Python;
* any other ``torch.utils.data.Dataset`` (a plugin's, ``imagefolder``) goes through a
  ``DataLoader``.

Either way a batch is then brought to the model's input size (1 -> 3 channels, spatial
resize) only when the two differ. Only the runner, ``validate`` and ``predict`` import this
module, so importing torch at the top costs ``zoo list`` nothing.
"""

from __future__ import annotations

import math
import signal
import weakref
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Subset
from torch.utils.data.dataloader import _MultiProcessingDataLoaderIter

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "TensorImageDataset",
    "Batches",
    "iterate_batches",
    "adapt",
    "adapt_error",
    "limit",
    "normalisation",
    "dataset_classes",
    "dataset_input_size",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

Size = tuple[int, int, int]


class TensorImageDataset(Dataset):
    """Images held in memory as one tensor, normalised on the fly.

    :param images: ``(N, C, H, W)``, uint8 (0..255) or float already in [0, 1].
    :param labels: ``(N,)`` class indices.
    :param mean: per-channel mean, in [0, 1] units (the scale of ``ToTensor``).
    :param std: per-channel standard deviation, same units.
    :param classes: class names, index ``i`` naming label ``i``.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor | Sequence[int],
        *,
        mean: Sequence[float],
        std: Sequence[float],
        classes: Sequence[str] | None = None,
    ):
        images = torch.as_tensor(images)
        labels = torch.as_tensor(labels, dtype=torch.int64)
        if images.dim() != 4:
            raise ValueError(f"images must be (N, C, H, W), got shape {tuple(images.shape)}")
        if images.dtype != torch.uint8 and not images.is_floating_point():
            raise ValueError(f"images must be uint8 or float in [0, 1], got {images.dtype}")
        if images.is_floating_point():
            images = images.to(torch.float32)
        if labels.shape != images.shape[:1]:
            raise ValueError(f"{images.shape[0]} images but labels of shape {tuple(labels.shape)}")
        channels = images.shape[1]
        if len(mean) != channels or len(std) != channels:
            raise ValueError(f"mean and std need {channels} values (one per channel), got {len(mean)} and {len(std)}")
        if any(s <= 0 for s in std):
            raise ValueError(f"std must be positive, got {tuple(std)}")
        self.images = images
        self.labels = labels
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.classes = list(classes) if classes is not None else None
        # (x - mean * scale) / (std * scale) is (x / scale - mean) / std in one pass fewer;
        # __getitem__ and the batches use these same two tensors, so they agree exactly.
        scale = 255.0 if images.dtype == torch.uint8 else 1.0
        self._shift = torch.tensor(self.mean, dtype=torch.float32).view(-1, 1, 1) * scale
        self._divisor = torch.tensor(self.std, dtype=torch.float32).view(-1, 1, 1) * scale
        self._on_device: dict[torch.device, tuple[torch.Tensor, ...]] = {}

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        # Out of place: float images would otherwise be normalised in the dataset itself.
        # uint8 - float32 promotes to float32, so this is also the conversion.
        return (self.images[index] - self._shift).div_(self._divisor), int(self.labels[index])

    def __repr__(self) -> str:
        c, h, w = self.input_size
        return f"TensorImageDataset({len(self)} images, {c}x{h}x{w}, {self.images.dtype})"

    @property
    def input_size(self) -> Size:
        """``(C, H, W)`` of one image."""
        _, c, h, w = self.images.shape
        return (c, h, w)

    def subset(self, n: int) -> TensorImageDataset:
        """The first ``n`` samples (all of them when ``n`` is larger), sharing memory."""
        return TensorImageDataset(self.images[:n], self.labels[:n], mean=self.mean, std=self.std, classes=self.classes)

    def to_device(self, device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(images, labels, shift, divisor)`` on ``device``, copied there once and cached."""
        device = _resolve(device)
        cached = self._on_device.get(device)
        if cached is None:
            # A plain copy, not pin_memory() first: that would make a second, pinned host copy of
            # the whole set, which torch's pinned-memory cache keeps for the life of the process
            # (rounded up to a power of two: 256 MiB for CIFAR-10's training images), to speed
            # up one copy made at start-up.
            cached = tuple(t.to(device) for t in (self.images, self.labels, self._shift, self._divisor))
            self._on_device[device] = cached
        return cached  # type: ignore[return-value]

    def release(self) -> None:
        """Forget the device copies (frees GPU memory held by the cache)."""
        self._on_device.clear()


def _ctrl_c_to_the_main_process(worker_id: int) -> None:
    """In a DataLoader worker: SIGINT ignored, the main process decides.

    Ctrl-C at a terminal reaches every process of the foreground group. The main process then
    stops after its step and checkpoints, which needs the workers' batches until then; a worker
    that left on the KeyboardInterrupt (or, inheriting the run's handler, on a second Ctrl-C)
    would fail that step instead. SIGTERM keeps its default: it is how the DataLoader, and
    multiprocessing at exit, end a worker that did not stop when told."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _resolve(device: torch.device | str) -> torch.device:
    # "cuda" and "cuda:0" must share one cache entry.
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return device


# -- batches ---------------------------------------------------------------------------------


class Batches:
    """One epoch of batches per ``iter()``; ``len()`` is the number of batches.

    Yields ``(inputs, labels)`` on ``device``: float32 normalised inputs of shape
    ``(B, *input_size)`` and int64 labels. The last partial batch is kept.

    :param shuffle: draw a new order each epoch.
    :param generator: a CPU generator for the order, so a seed gives the same order on any
        device; ``None`` uses torch's global generator.
    :param input_size: the model's ``(C, H, W)``; ``None`` leaves the dataset's size.
    :param workers: DataLoader workers (datasets other than :class:`TensorImageDataset`).
    :param rank: this process's shard of each epoch, of ``world`` (distributed training).
        Every rank draws the same order (the same seeded generator) and takes every
        ``world``-th sample of each global batch of ``batch_size * world``, so one step of all
        ranks together covers the samples of one single-process batch of that size. A shuffled
        epoch then uses ``n - n % world`` samples (a different few are left out each epoch), so
        that every rank takes the same number of equal-size steps: DDP waits for all ranks at
        every step. An unshuffled one (validation) is split into ``world`` contiguous ranges
        that may differ by one sample, for a caller that adds up over the ranks.
    """

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int,
        *,
        shuffle: bool,
        generator: torch.Generator | None = None,
        device: torch.device | str = "cpu",
        input_size: Size | None = None,
        workers: int = 0,
        rank: int = 0,
        world: int = 1,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if not 0 <= rank < world:
            raise ValueError(f"rank must be in [0, world), got rank {rank} of {world}")
        if shuffle and world > 1 and len(dataset) < world:
            raise ValueError(f"{len(dataset)} samples cannot be shared out among {world} processes")
        self.dataset = dataset
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.generator = generator
        self.device = _resolve(device)
        self.input_size = tuple(input_size) if input_size is not None else None
        self.rank, self.world = rank, world
        self._loader: DataLoader | None = None
        if isinstance(dataset, TensorImageDataset):
            # Copy to the device now, so the one-time copy is start-up, not the first step.
            dataset.to_device(self.device)
        else:
            # Built once so persistent workers survive from one epoch to the next. The order
            # comes from the run's generator, through shards(); the DataLoader draws its workers'
            # seeds from a generator of its own whenever it makes an iterator (with persistent
            # workers: only in a process's first epoch), which must not move the run's: a resumed
            # run would then draw another order than the uninterrupted one.
            seed = generator.initial_seed() if generator is not None else 0
            self._loader = DataLoader(
                dataset,
                batch_sampler=_Shards(self),
                num_workers=workers,
                pin_memory=self.device.type == "cuda",
                persistent_workers=workers > 0,
                generator=torch.Generator().manual_seed(seed),
                worker_init_fn=_ctrl_c_to_the_main_process,
            )

    def __enter__(self) -> Batches:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """End the DataLoader's workers now (as Lightning does), not whenever the garbage collector
        frees them: an interrupted run's traceback keeps the epoch's iterator in a reference cycle,
        and the cyclic collector ends workers badly (see :class:`_Shards`)."""
        loader = self._loader
        iterator = getattr(loader, "_iterator", None)  # DataLoader keeps it with persistent workers
        if isinstance(iterator, _MultiProcessingDataLoaderIter):
            iterator._shutdown_workers()
        if loader is not None:
            loader._iterator = None

    def __len__(self) -> int:
        if self.shuffle:
            return math.ceil(self.samples / (self.batch_size * self.world))
        low, high = self._range()
        return math.ceil((high - low) / self.batch_size)

    @property
    def samples(self) -> int:
        """Samples in one epoch, all ranks together."""
        n = len(self.dataset)
        return n - n % self.world if self.shuffle else n

    def step_sizes(self) -> list[int]:
        """Samples in each step of a shuffled epoch, all ranks together (the last may be short)."""
        size = self.batch_size * self.world
        return [min(size, self.samples - start) for start in range(0, self.samples, size)]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if self._loader is not None:
            return self._from_loader()
        if self.world > 1:
            return self._from_shards()
        return self._from_tensors()

    def _range(self) -> tuple[int, int]:
        n = len(self.dataset)
        return n * self.rank // self.world, n * (self.rank + 1) // self.world

    def shards(self) -> Iterator[torch.Tensor]:
        """This rank's sample indices for each step of one epoch (all of them in one process)."""
        if not self.shuffle:
            low, high = self._range()
            for start in range(low, high, self.batch_size):
                yield torch.arange(start, min(start + self.batch_size, high))
            return
        order = torch.randperm(len(self.dataset), generator=self.generator)[: self.samples]
        size = self.batch_size * self.world
        for start in range(0, self.samples, size):
            yield order[start + self.rank : start + size : self.world]

    def _resize_to(self) -> Size | None:
        """The size :func:`adapt` brings batches to; None when in-memory images already have it
        (one test an epoch instead of one a batch)."""
        if isinstance(self.dataset, TensorImageDataset) and self.dataset.input_size == self.input_size:
            return None
        return self.input_size

    def _from_shards(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        images, labels, shift, divisor = self.dataset.to_device(self.device)
        size = self._resize_to()
        steps = list(self.shards())
        if not steps:
            return
        # The epoch's indices go to the device in one copy, as in _from_tensors: a copy from
        # pageable memory at every step would wait for the GPU at every step.
        indices = torch.cat(steps).to(self.device)
        for index in indices.split([len(step) for step in steps]):
            x = (images.index_select(0, index) - shift).div_(divisor)  # as in TensorImageDataset.__getitem__
            yield (x if size is None else adapt(x, size)), labels.index_select(0, index)

    def _from_tensors(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        images, labels, shift, divisor = self.dataset.to_device(self.device)
        n, size = images.shape[0], self._resize_to()
        # The order is drawn on the CPU, whatever the device, so a seed means one order.
        order = torch.randperm(n, generator=self.generator).to(self.device) if self.shuffle else None
        for start in range(0, n, self.batch_size):
            if order is None:
                x, y = images[start : start + self.batch_size], labels[start : start + self.batch_size]
            else:
                index = order[start : start + self.batch_size]
                # index_select, not images[index]: the same rows, gathered 2-3x faster on CPU.
                x, y = images.index_select(0, index), labels.index_select(0, index)
            x = (x - shift).div_(divisor)  # as in TensorImageDataset.__getitem__
            yield (x if size is None else adapt(x, size)), y

    def _from_loader(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for x, y in self._loader:
            x = x.to(self.device, dtype=torch.float32, non_blocking=True)
            y = torch.as_tensor(y).to(self.device, dtype=torch.int64, non_blocking=True)
            yield adapt(x, self.input_size), y


class _Shards:
    """A DataLoader ``batch_sampler`` over :meth:`Batches.shards`: one list of indices per step.

    It holds its :class:`Batches` weakly: a reference back would make a cycle (Batches, its
    DataLoader, this sampler), and a DataLoader freed by the cyclic collector ends its workers
    badly. The collector may run multiprocessing's finalizers first, which stop the queue that
    would tell the workers to exit, and each worker is then waited for in vain (seconds) and
    killed. Freed when the last reference goes, it ends them at once."""

    def __init__(self, batches: Batches):
        self._batches = weakref.ref(batches)

    @property
    def batches(self) -> Batches:
        batches = self._batches()
        assert batches is not None, "the DataLoader outlived its Batches"
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        for index in self.batches.shards():
            yield index.tolist()

    def __len__(self) -> int:
        return len(self.batches)


def iterate_batches(
    dataset: Dataset,
    batch_size: int,
    *,
    shuffle: bool,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
    input_size: Size | None = None,
    workers: int = 0,
    rank: int = 0,
    world: int = 1,
) -> Batches:
    """The batches of ``dataset``: see :class:`Batches`. Iterate once per epoch."""
    return Batches(
        dataset,
        batch_size,
        shuffle=shuffle,
        generator=generator,
        device=device,
        input_size=input_size,
        workers=workers,
        rank=rank,
        world=world,
    )


# -- input size --------------------------------------------------------------------------------


def adapt(inputs: torch.Tensor, input_size: Sequence[int] | None) -> torch.Tensor:
    """Bring a ``(B, C, H, W)`` batch to ``input_size``: 1 -> 3 channels, bilinear resize.

    Returns ``inputs`` itself when it already fits. Check :func:`adapt_error` first.
    """
    if input_size is None:
        return inputs
    channels, height, width = input_size
    if inputs.shape[-2:] != (height, width):
        # Resize before widening the channels: a third of the work.
        inputs = F.interpolate(inputs, size=(height, width), mode="bilinear", align_corners=False, antialias=False)
    if inputs.shape[1] != channels:
        if inputs.shape[1] != 1:
            raise ValueError(adapt_error(tuple(inputs.shape[1:]), tuple(input_size)))
        inputs = inputs.repeat(1, channels, 1, 1)
    return inputs


def adapt_error(dataset_input_size: Sequence[int], model_input_size: Sequence[int]) -> str | None:
    """``None`` when the dataset's images can be brought to the model's input size, else why not.

    Any spatial size can be resized; channels must match, or go from 1 to 3.
    """
    data_c, data_h, data_w = dataset_input_size
    model_c, model_h, model_w = model_input_size
    if data_c == model_c or (data_c == 1 and model_c == 3):
        return None
    return (
        f"the dataset's images have {data_c} channel(s) ({data_c}x{data_h}x{data_w}) but the model "
        f"expects {model_c} ({model_c}x{model_h}x{model_w}); only 1-channel images can be widened "
        f"to 3 channels: choose a dataset with {model_c}-channel images or another model"
    )


# -- dataset helpers ---------------------------------------------------------------------------


def limit(dataset: Dataset, n: int | None) -> Dataset:
    """The first ``n`` samples (``--limit-train``/``--limit-val``); ``None`` keeps them all."""
    if n is None:
        return dataset
    if n < 0:
        raise ValueError(f"a limit must be 0 or more, got {n}")
    if isinstance(dataset, TensorImageDataset):
        return dataset.subset(n)
    return Subset(dataset, range(min(n, len(dataset))))


def _unwrap(dataset: Dataset) -> Dataset:
    # limit() wraps plain datasets in Subset; their attributes are on the inner one.
    while isinstance(dataset, Subset):
        dataset = dataset.dataset
    return dataset


def normalisation(dataset: Dataset) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``(mean, std)`` the dataset's inputs were normalised with, for ``zoo predict`` to reuse.

    A dataset may say so with ``mean``/``std`` attributes; otherwise ImageNet's are assumed.
    """
    inner = _unwrap(dataset)
    mean, std = getattr(inner, "mean", None), getattr(inner, "std", None)
    if mean is None or std is None or callable(mean) or callable(std):
        return IMAGENET_MEAN, IMAGENET_STD
    return tuple(float(m) for m in mean), tuple(float(s) for s in std)


def dataset_classes(dataset: Dataset) -> list[str] | None:
    """The dataset's class names (its ``classes`` attribute), or ``None``."""
    classes = getattr(_unwrap(dataset), "classes", None)
    return [str(c) for c in classes] if classes is not None else None


def dataset_input_size(dataset: Dataset) -> Size:
    """``(C, H, W)`` of the dataset's inputs: its ``input_size``, else its first item's shape."""
    inner = _unwrap(dataset)
    size = getattr(inner, "input_size", None)
    if size is not None:
        return tuple(size)
    return tuple(dataset[0][0].shape)


# -- image folders -----------------------------------------------------------------------------


def unreadable_images(dataset: Dataset) -> list[str]:
    """The files of an image-folder dataset (one with torchvision's ``samples``: a list of
    ``(path, class_index)``) that PIL cannot open. ``verify()`` reads headers, not pixels, so
    checking every file before training costs little next to a run that fails half way."""
    samples = getattr(_unwrap(dataset), "samples", None)
    if not isinstance(samples, list):
        return []
    from PIL import Image

    bad = []
    for path, _ in samples:
        try:
            with Image.open(path) as image:
                image.verify()
        except Exception:  # PIL raises many kinds (UnidentifiedImageError, SyntaxError, OSError, ...)
            bad.append(str(path))
    return bad


def without_files(dataset: Dataset, paths: set[str]) -> Dataset:
    """``dataset`` (an image folder, see :func:`unreadable_images`) without the files ``paths``."""
    inner = _unwrap(dataset)
    kept = [sample for sample in inner.samples if str(sample[0]) not in paths]
    inner.samples = kept
    if hasattr(inner, "imgs"):
        inner.imgs = kept
    if hasattr(inner, "targets"):
        inner.targets = [target for _, target in kept]
    return dataset
