"""zoo.data (in-memory datasets, batches, input adaptation) and the built-in dataset loaders."""

from __future__ import annotations

import gc
import importlib
import importlib.util
import os
import signal
import subprocess
import sys
import urllib.error

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset, Subset

import datafiles
import zoo_datasets
from zoo.data import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    TensorImageDataset,
    adapt_error,
    dataset_classes,
    dataset_input_size,
    iterate_batches,
    limit,
    normalisation,
)
from zoo.errors import UsageError
from zoo_datasets import loaders


def numbered(n: int, channels: int = 3, size: int = 8) -> TensorImageDataset:
    """Images whose pixels and label both encode the sample's index, to track samples."""
    images = (torch.arange(n, dtype=torch.uint8) % 251).view(n, 1, 1, 1).expand(n, channels, size, size).clone()
    return TensorImageDataset(images, torch.arange(n), mean=(0.5,) * channels, std=(0.25,) * channels)


class PlainDataset(Dataset):
    """A dataset that is not a TensorImageDataset: the DataLoader path."""

    def __init__(self, n: int, channels: int = 3, size: int = 8):
        self.items = [(torch.full((channels, size, size), float(i)), i) for i in range(n)]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        return self.items[i]


# -- the plugin module -------------------------------------------------------------------------


def test_plugin_registers_four_datasets_with_resolvable_loaders():
    entries = {}

    def register(name, loader, **kwargs):
        entries[name] = (loader, kwargs)

    zoo_datasets.register_datasets(register=register)
    assert set(entries) == {"cifar10", "digits", "fake", "imagefolder"}
    for name, (loader, kwargs) in entries.items():
        module, _, attr = loader.partition(":")
        assert callable(getattr(importlib.import_module(module), attr)), name
        assert kwargs["input_size"] == (3, 32, 32)
        assert kwargs["summary"]
    assert entries["cifar10"][1]["classes"] == datafiles.CIFAR10_NAMES
    assert entries["imagefolder"][1]["num_classes"] is None


def test_importing_the_plugin_does_not_import_torch():
    code = (
        "import sys, zoo_datasets\n"
        "bad = {'torch', 'torchvision', 'sklearn', 'zoo.data'} & set(sys.modules)\n"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# -- cifar10 ---------------------------------------------------------------------------------


def test_cifar10_reads_a_cifar10_format_directory(tmp_path):
    base = datafiles.write_cifar10_dir(tmp_path, n_train=23, n_test=7)
    train = loaders.load_cifar10(True, str(tmp_path), False)
    val = loaders.load_cifar10(False, str(tmp_path), False)
    assert isinstance(train, TensorImageDataset)
    assert (len(train), len(val)) == (23, 7)
    assert train.images.dtype == torch.uint8 and train.images.shape == (23, 3, 32, 32)
    assert train.input_size == (3, 32, 32)
    assert train.classes == datafiles.CIFAR10_NAMES
    assert train.mean == loaders.CIFAR10_MEAN and train.std == loaders.CIFAR10_STD
    data, labels = datafiles.read_cifar10_batch(base / "data_batch_1")
    assert train.labels.dtype == torch.int64
    assert train.labels[: len(labels)].tolist() == labels
    # The file's rows are R, G and B planes: the first image must come back as CHW unchanged.
    assert torch.equal(train.images[0], torch.from_numpy(data[0].reshape(3, 32, 32)))
    test_data, test_labels = datafiles.read_cifar10_batch(base / "test_batch")
    assert torch.equal(val.images[-1], torch.from_numpy(test_data[-1].reshape(3, 32, 32)))
    assert val.labels.tolist() == test_labels
    # Every row of all five files, in file order (the reader copies them into one array).
    batches = [datafiles.read_cifar10_batch(base / f"data_batch_{i}") for i in range(1, 6)]
    every_row = np.concatenate([rows for rows, _ in batches]).reshape(-1, 3, 32, 32)
    assert torch.equal(train.images, torch.from_numpy(every_row))
    assert train.labels.tolist() == [label for _, file_labels in batches for label in file_labels]
    x, y = train[0]
    assert x.dtype == torch.float32 and x.shape == (3, 32, 32) and y == labels[0]
    expected = (
        torch.from_numpy(data[0].reshape(3, 32, 32)).float() / 255 - torch.tensor(loaders.CIFAR10_MEAN).view(3, 1, 1)
    ) / torch.tensor(loaders.CIFAR10_STD).view(3, 1, 1)
    torch.testing.assert_close(x, expected)


def test_cifar10_file_names_are_torchvisions():
    from torchvision.datasets import CIFAR10

    assert loaders._cifar10_files(True) == [name for name, _ in CIFAR10.train_list] + [CIFAR10.meta["filename"]]
    assert loaders._cifar10_files(False) == [name for name, _ in CIFAR10.test_list] + [CIFAR10.meta["filename"]]


def test_reading_cifar10_imports_no_torchvision(tmp_path):
    # torchvision's import costs ~2.8 s and 160 MiB (it imports torch._dynamo); the reader and
    # a checkpoint's provenance do without it.
    datafiles.write_cifar10_dir(tmp_path, n_train=10, n_test=5)
    code = (
        "import sys; from zoo_datasets import loaders; from zoo.checkpoint import provenance\n"
        f"assert len(loaders.load_cifar10(True, {str(tmp_path)!r}, False)) == 10\n"
        "assert provenance(zoo_version='0', plugins=[])['torchvision']\n"
        "print(sorted(m for m in sys.modules if m.startswith(('torchvision', 'torch._dynamo'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_cifar10_missing_directory_names_it_and_the_remedies(tmp_path):
    with pytest.raises(UsageError) as info:
        loaders.load_cifar10(True, str(tmp_path / "nowhere"), False)
    message = str(info.value)
    assert str(tmp_path / "nowhere" / "cifar-10-batches-py") in message
    for remedy in ("--download", "--data-dir", "--data digits"):
        assert remedy in message
    assert "\n" not in message and info.value.exit_code == 2


def test_cifar10_incomplete_directory_names_the_missing_file(tmp_path):
    base = datafiles.write_cifar10_dir(tmp_path)
    (base / "data_batch_4").unlink()
    with pytest.raises(UsageError, match="data_batch_4") as info:
        loaders.load_cifar10(False, str(tmp_path), False)
    assert str(base) in str(info.value)


@pytest.mark.parametrize(
    "damage, problem",
    [
        ("truncate", "unreadable"),
        ("empty", "empty"),
        ("wrong_shape", "3x32x32"),
        ("bad_labels", "labels"),
    ],
)
def test_cifar10_half_written_directory_names_the_corrupt_file(tmp_path, damage, problem):
    base = datafiles.write_cifar10_dir(tmp_path)
    target = base / "data_batch_3"
    if damage == "truncate":
        blob = target.read_bytes()
        target.write_bytes(blob[: len(blob) // 2])
    elif damage == "empty":
        target.write_bytes(b"")
    elif damage == "wrong_shape":
        datafiles._dump(target, {"data": np.zeros((10, 1000), np.uint8), "labels": [0] * 10})
    else:
        data, _ = datafiles.read_cifar10_batch(target)
        datafiles._dump(target, {"data": data, "labels": [12] * len(data)})
    with pytest.raises(UsageError) as info:
        loaders.load_cifar10(True, str(tmp_path), False)
    message = str(info.value)
    assert str(target) in message and "corrupt" in message and problem in message
    assert "delete" in message and "--download" in message


def test_cifar10_damaged_test_batch_is_reported_when_loading_train(tmp_path):
    # torchvision checks every file whatever the split: the message must still name the file.
    base = datafiles.write_cifar10_dir(tmp_path)
    (base / "test_batch").write_bytes(b"")
    with pytest.raises(UsageError, match="test_batch"):
        loaders.load_cifar10(True, str(tmp_path), False)


def test_cifar10_download_failure_offers_offline_remedies(tmp_path, monkeypatch):
    import torchvision.datasets.utils

    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torchvision.datasets.utils, "download_and_extract_archive", offline)
    with pytest.raises(UsageError) as info:
        loaders.load_cifar10(True, str(tmp_path), True)
    message = str(info.value)
    assert "could not download" in message and str(tmp_path) in message
    assert "--data-dir" in message and "--data digits" in message and "\n" not in message


def test_cifar10_download_skipped_when_files_are_there(tmp_path, monkeypatch):
    import torchvision.datasets.utils

    def must_not_download(*args, **kwargs):
        raise AssertionError("downloaded although the files were there")

    monkeypatch.setattr(torchvision.datasets.utils, "download_and_extract_archive", must_not_download)
    datafiles.write_cifar10_dir(tmp_path, n_train=10, n_test=5)
    assert len(loaders.load_cifar10(False, str(tmp_path), True)) == 5


# -- digits ----------------------------------------------------------------------------------


def test_digits_split_shape_labels_and_determinism():
    pytest.importorskip("sklearn")
    train = loaders.load_digits(True, "unused", False)
    val = loaders.load_digits(False, "unused", False)
    assert (len(train), len(val)) == (1437, 360)
    assert train.images.shape == (1437, 3, 32, 32) and train.images.dtype == torch.uint8
    assert torch.equal(train.images[:, 0], train.images[:, 2])  # grey replicated to 3 channels
    assert train.classes == [str(i) for i in range(10)]
    assert set(train.labels.tolist()) == set(range(10)) == set(val.labels.tolist())
    # Real data: the split is a partition of scikit-learn's 1,797 digits.
    from sklearn.datasets import load_digits

    counts = np.bincount(load_digits().target, minlength=10)
    together = torch.bincount(torch.cat([train.labels, val.labels]), minlength=10).numpy()
    assert (together == counts).all()
    assert int(train.images.max()) > 200 and int(train.images.min()) == 0
    # Normalised with the train split's statistics, on both splits.
    assert train.mean == val.mean and train.std == val.std and len(set(train.mean)) == 1
    inputs = (train.images.float() / 255 - train.mean[0]) / train.std[0]
    assert abs(inputs.mean().item()) < 1e-4 and abs(inputs.std().item() - 1) < 1e-3
    again = loaders.load_digits(True, "elsewhere", False)
    assert torch.equal(again.images, train.images) and torch.equal(again.labels, train.labels)


def test_digits_without_scikit_learn_says_how_to_install(monkeypatch):
    # Not installed: its package is not found (the CSV is read from there), and importing fails.
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "sklearn" else real(name, *a))
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)  # makes the import fail
    loaders._digits.cache_clear()  # read once a process: not yet in this one
    with pytest.raises(UsageError, match=r"pip install 'tudui-zoo\[digits\]'"):
        loaders.load_digits(True, "unused", False)


# -- fake ------------------------------------------------------------------------------------


def test_fake_is_deterministic_and_cifar_shaped():
    train, val = loaders.load_fake(True, "", False), loaders.load_fake(False, "", False)
    assert (len(train), len(val)) == (1000, 200)
    assert train.input_size == (3, 32, 32) and train.images.dtype == torch.uint8
    assert len(train.classes) == 10 and torch.bincount(train.labels).tolist() == [100] * 10
    again = loaders.load_fake(True, "", False)
    assert torch.equal(again.images, train.images) and torch.equal(again.labels, train.labels)
    assert not torch.equal(train.images[:200], val.images)  # another seed for val
    assert train.mean == val.mean and train.std == val.std


def test_fake_is_learnable():
    # Nearest class mean, fitted on train, scored on val: far above chance (10%).
    train, val = loaders.load_fake(True, "", False), loaders.load_fake(False, "", False)
    x = next(iter(iterate_batches(train, len(train), shuffle=False)))[0].flatten(1)
    means = torch.stack([x[train.labels == k].mean(0) for k in range(10)])
    xv = next(iter(iterate_batches(val, len(val), shuffle=False)))[0].flatten(1)
    accuracy = (torch.cdist(xv, means).argmin(1) == val.labels).float().mean().item()
    assert accuracy > 0.5
    # Its normalisation is close to zero mean, unit variance.
    assert x.mean().abs() < 0.05 and (x.std() - 1).abs() < 0.15


# -- imagefolder -----------------------------------------------------------------------------


def test_imagefolder_reads_written_pngs(tmp_path):
    datafiles.write_image_folder(tmp_path, classes=("cat", "dog", "frog"), per_class=2)
    # Other modes must come out as 3-channel images too.
    datafiles.write_image(tmp_path / "train" / "dog" / "rgba.png", "RGBA")
    datafiles.write_image(tmp_path / "train" / "frog" / "grey.png", "L")
    datafiles.write_image(tmp_path / "train" / "frog" / "palette.png", "P")
    datafiles.write_image(tmp_path / "train" / "cat" / "photo.jpg", "RGB")
    train = loaders.load_imagefolder(True, str(tmp_path), False)
    assert train.classes == ["cat", "dog", "frog"] and len(train) == 10
    assert train.mean == IMAGENET_MEAN and train.std == IMAGENET_STD and train.input_size == (3, 32, 32)
    for i in range(len(train)):
        x, y = train[i]
        assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and 0 <= y < 3
    assert normalisation(train) == (IMAGENET_MEAN, IMAGENET_STD)
    assert dataset_input_size(limit(train, 3)) == (3, 32, 32)
    batches = iterate_batches(train, 4, shuffle=True, generator=torch.Generator().manual_seed(0))
    assert [len(y) for _, y in batches] == [4, 4, 2] and len(batches) == 3


def test_imagefolder_val_keeps_train_class_indices(tmp_path):
    datafiles.write_image_folder(tmp_path, classes=("cat", "dog", "frog"), per_class=2, splits=("train",))
    datafiles.write_image_folder(tmp_path, classes=("frog",), per_class=2, splits=("val",))
    val = loaders.load_imagefolder(False, str(tmp_path), False)
    assert val.classes == ["cat", "dog", "frog"]
    assert [val[i][1] for i in range(len(val))] == [2, 2]


def test_imagefolder_errors_name_the_directory_and_layout(tmp_path):
    with pytest.raises(UsageError) as info:
        loaders.load_imagefolder(True, str(tmp_path), False)
    assert str(tmp_path / "train") in str(info.value) and "DIR/train/<class>/*.png" in str(info.value)
    datafiles.write_image_folder(tmp_path, classes=("cat",), per_class=1, splits=("train",))
    datafiles.write_image_folder(tmp_path, classes=("cat", "zebra"), per_class=1, splits=("val",))
    with pytest.raises(UsageError, match="zebra"):
        loaders.load_imagefolder(False, str(tmp_path), False)
    (tmp_path / "train" / "empty").mkdir()
    with pytest.raises(UsageError, match="empty"):
        loaders.load_imagefolder(True, str(tmp_path), False)


# -- TensorImageDataset ------------------------------------------------------------------------


def test_tensor_image_dataset_items_and_subset():
    data = numbered(10)
    assert len(data) == 10 and data.input_size == (3, 8, 8)
    x, y = data[3]
    assert y == 3 and isinstance(y, int)
    torch.testing.assert_close(x, torch.full((3, 8, 8), (3 / 255 - 0.5) / 0.25))
    part = data.subset(4)
    assert isinstance(part, TensorImageDataset) and len(part) == 4 and part.mean == data.mean
    assert len(data.subset(100)) == 10


def test_float_images_are_not_normalised_in_place():
    images = torch.rand(6, 3, 4, 4)
    data = TensorImageDataset(images.clone(), torch.zeros(6, dtype=torch.int64), mean=(0.5,) * 3, std=(0.5,) * 3)
    x, _ = data[0]
    torch.testing.assert_close(x, (images[0] - 0.5) / 0.5)
    list(iterate_batches(data, 4, shuffle=False))
    assert torch.equal(data.images, images)


@pytest.mark.parametrize(
    "images, labels, mean",
    [
        (torch.zeros(4, 3, 8), torch.zeros(4), (0.5,) * 3),  # not 4-D
        (torch.zeros(4, 3, 8, 8), torch.zeros(3), (0.5,) * 3),  # labels do not match
        (torch.zeros(4, 3, 8, 8), torch.zeros(4), (0.5,)),  # one mean for three channels
        (torch.zeros(4, 3, 8, 8, dtype=torch.int32), torch.zeros(4), (0.5,) * 3),
    ],
)
def test_tensor_image_dataset_rejects_bad_input(images, labels, mean):
    with pytest.raises(ValueError):
        TensorImageDataset(images, labels, mean=mean, std=(0.25,) * len(mean))


# -- batches -----------------------------------------------------------------------------------


def test_shuffled_batches_cover_every_sample_once_per_epoch():
    data = numbered(103)
    batches = iterate_batches(data, 10, shuffle=True, generator=torch.Generator().manual_seed(0))
    assert len(batches) == 11
    epochs = []
    for _ in range(2):
        seen = [(x, y) for x, y in batches]
        assert [len(y) for _, y in seen] == [10] * 10 + [3]  # the partial batch is kept
        labels = torch.cat([y for _, y in seen])
        assert sorted(labels.tolist()) == list(range(103))
        epochs.append(labels)
        for x, y in seen:
            assert x.dtype == torch.float32 and y.dtype == torch.int64 and x.shape[1:] == (3, 8, 8)
            # Each input is its own sample's, normalised exactly as __getitem__ does.
            torch.testing.assert_close(x, torch.stack([data[int(i)][0] for i in y]), rtol=0, atol=0)
    assert not torch.equal(epochs[0], epochs[1])  # a new order each epoch


def test_same_seed_same_order_and_no_shuffle_keeps_order():
    data = numbered(50)

    def order(seed):
        batches = iterate_batches(data, 7, shuffle=True, generator=torch.Generator().manual_seed(seed))
        return [torch.cat([y for _, y in batches]).tolist() for _ in range(2)]

    assert order(3) == order(3)
    assert order(3) != order(4)
    plain = iterate_batches(data, 7, shuffle=False)
    assert torch.cat([y for _, y in plain]).tolist() == list(range(50))


def test_batches_adapt_channels_and_size():
    grey = numbered(5, channels=1, size=8)
    ((x, y),) = iterate_batches(grey, 8, shuffle=False, input_size=(3, 32, 32))
    assert x.shape == (5, 3, 32, 32)
    assert torch.equal(x[:, 0], x[:, 1]) and torch.equal(x[:, 0], x[:, 2])
    # Constant images stay constant through a bilinear resize, at their normalised value.
    torch.testing.assert_close(x[2], torch.full((3, 32, 32), (2 / 255 - 0.5) / 0.25))
    ((same, _),) = iterate_batches(numbered(5), 8, shuffle=False, input_size=(3, 8, 8))
    assert same.shape == (5, 3, 8, 8)
    ((smaller, _),) = iterate_batches(numbered(5, size=40), 8, shuffle=False, input_size=(3, 32, 32))
    assert smaller.shape == (5, 3, 32, 32)


def test_dataloader_path_for_other_datasets():
    data = PlainDataset(23, channels=1, size=6)
    batches = iterate_batches(data, 5, shuffle=True, generator=torch.Generator().manual_seed(0), input_size=(3, 12, 12))
    assert len(batches) == 5
    seen = [(x, y) for x, y in batches]
    assert [len(y) for _, y in seen] == [5, 5, 5, 5, 3]
    assert sorted(torch.cat([y for _, y in seen]).tolist()) == list(range(23))
    for x, y in seen:
        assert x.shape[1:] == (3, 12, 12) and y.dtype == torch.int64
        torch.testing.assert_close(x[:, 0, 0, 0], y.float())
    again = iterate_batches(data, 5, shuffle=True, generator=torch.Generator().manual_seed(0))
    assert [y.tolist() for _, y in again] == [y.tolist() for _, y in seen]


def test_dataloader_path_with_persistent_workers():
    batches = iterate_batches(PlainDataset(12), 4, shuffle=False, workers=2)
    for _ in range(2):
        assert torch.cat([y for _, y in batches]).tolist() == list(range(12))


def _workers(batches) -> list:
    """The worker processes of ``batches``' DataLoader (started by its first epoch)."""
    return list(batches._loader._iterator._workers)


def test_workers_end_when_their_batches_are_dropped_not_when_the_collector_runs():
    # A reference cycle (batches, DataLoader, sampler) would leave them to the cyclic collector,
    # which may stop the queue that tells them to exit before it asks them to.
    batches = iterate_batches(PlainDataset(12), 4, shuffle=False, workers=2)
    next(iter(batches))  # mid-epoch, as a stopped run leaves them
    workers = _workers(batches)
    gc.disable()
    try:
        del batches
        assert [w.is_alive() for w in workers] == [False, False]
        assert [w.exitcode for w in workers] == [0, 0]  # they exited, not killed
    finally:
        gc.enable()


def test_close_ends_the_workers_however_the_epoch_was_left_and_a_later_epoch_starts_anew():
    batches = iterate_batches(PlainDataset(12), 4, shuffle=True, generator=torch.Generator().manual_seed(0), workers=2)
    epoch = iter(batches)
    next(epoch)  # left half-way, still referenced (as by an interrupted run's traceback)
    workers = _workers(batches)
    with batches:
        pass
    assert [w.exitcode for w in workers] == [0, 0]
    assert sorted(torch.cat([y for _, y in batches]).tolist()) == list(range(12))
    batches.close()


class CtrlCDataset(PlainDataset):
    """In a worker, item ``at`` sends the worker SIGINT, as Ctrl-C at a terminal reaches every
    process of the foreground group."""

    def __init__(self, n: int, at: int):
        super().__init__(n)
        self.at = at

    def __getitem__(self, i: int):
        if i == self.at:
            os.kill(os.getpid(), signal.SIGINT)
        return super().__getitem__(i)


def test_ctrl_c_leaves_the_workers_to_the_main_process():
    # The main process stops after its step (checkpointed): a worker gone on a KeyboardInterrupt
    # would fail the step before that.
    with iterate_batches(CtrlCDataset(12, at=5), 4, shuffle=False, workers=2) as batches:
        assert torch.cat([y for _, y in batches]).tolist() == list(range(12))
        assert torch.cat([y for _, y in batches]).tolist() == list(range(12))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_batches_match_cpu_batches():
    data = numbered(70)
    cpu = iterate_batches(data, 16, shuffle=True, generator=torch.Generator().manual_seed(1), input_size=(3, 16, 16))
    gpu = iterate_batches(
        data, 16, shuffle=True, generator=torch.Generator().manual_seed(1), device="cuda", input_size=(3, 16, 16)
    )
    for (xc, yc), (xg, yg) in zip(cpu, gpu):
        assert xg.is_cuda and yg.is_cuda
        assert torch.equal(yc, yg.cpu())
        torch.testing.assert_close(xc, xg.cpu())
    assert data.to_device("cuda")[0] is data.to_device("cuda:0")[0]  # copied once


def test_the_in_memory_set_goes_to_the_gpu_in_one_plain_copy_never_pinned(monkeypatch):
    """Pinning the whole set for its one copy would leave a pinned block its size (256 MiB for
    CIFAR-10's training images) in torch's host cache for the life of the process. Simulated
    on the CPU: a copy to a CUDA device is recorded and made on the CPU."""
    pinned, copied = [], []
    plain_to = torch.Tensor.to

    def to(self, *args, **kwargs):
        device = args[0] if args else kwargs.get("device")
        if isinstance(device, (torch.device, str)) and torch.device(device).type == "cuda":
            copied.append(self)
            return self.clone()
        return plain_to(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "to", to)
    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda self, *args, **kwargs: pinned.append(self) or self)
    data = numbered(10)
    batches = iterate_batches(data, 4, shuffle=False, device=torch.device("cuda", 0))
    images, labels, _, _ = data.to_device("cuda:0")
    assert pinned == []
    assert copied[0] is data.images and copied[1] is data.labels and len(copied) == 4  # and shift, divisor
    assert torch.equal(images, data.images) and torch.equal(labels, data.labels)
    assert len(batches) == 3
    # The DataLoader path keeps pinning each batch: its workers' batches then copy asynchronously.
    loader = iterate_batches(PlainDataset(8), 4, shuffle=False, device=torch.device("cuda", 0))
    assert loader._loader.pin_memory


# -- helpers -----------------------------------------------------------------------------------


def test_adapt_error():
    assert adapt_error((3, 32, 32), (3, 32, 32)) is None
    assert adapt_error((1, 8, 8), (3, 32, 32)) is None
    assert adapt_error((3, 64, 48), (3, 224, 224)) is None
    message = adapt_error((3, 32, 32), (1, 28, 28))
    assert message and "3 channel" in message and "1x28x28" in message
    assert adapt_error((4, 32, 32), (3, 32, 32))


def test_limit_normalisation_and_classes():
    data = numbered(10)
    assert len(limit(data, 4)) == 4 and isinstance(limit(data, 4), TensorImageDataset)
    assert len(limit(data, 1000)) == 10 and limit(data, None) is data
    plain = PlainDataset(10)
    plain.mean, plain.std, plain.classes = (0.1, 0.2, 0.3), (0.4, 0.5, 0.6), ["a", "b"]
    part = limit(plain, 3)
    assert isinstance(part, Subset) and len(part) == 3 and len(limit(plain, 50)) == 10
    assert normalisation(part) == ((0.1, 0.2, 0.3), (0.4, 0.5, 0.6))
    assert dataset_classes(part) == ["a", "b"]
    assert dataset_input_size(part) == (3, 8, 8)
    assert normalisation(PlainDataset(2)) == (IMAGENET_MEAN, IMAGENET_STD)
    assert normalisation(data) == ((0.5,) * 3, (0.25,) * 3)
    with pytest.raises(ValueError):
        limit(data, -1)
