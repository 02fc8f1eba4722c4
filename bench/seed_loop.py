"""The seed's training routine (the course's sections 27-32), the baseline of bench section 2.

    python bench/seed_loop.py --data-dir DIR [--epochs 1] [--out DIR]

As the course wrote it: torchvision's ``CIFAR10`` with ``ToTensor()``, ``DataLoader(batch_size=64)``
for both splits, Tudui, ``CrossEntropyLoss``, ``SGD(lr=1e-2)``; each epoch trains (the loss
printed every 100 steps), tests under ``no_grad`` and saves the whole model (method 1). Two
departures, neither of which changes the work timed: the md5 checks are skipped, since a
random-pixel CIFAR-10-format directory cannot match the official archive's digests (the seed's
``download=True`` would compute them, so this favours the seed), and there is no TensorBoard
writer (``zoo run`` without ``--tensorboard`` writes none either).

The last line on stdout is JSON with the phases' seconds, for the bench to read.
"""

from __future__ import annotations

import time

START = time.perf_counter()

import argparse  # noqa: E402  (the clock starts before the imports: they are part of the routine)
import json  # noqa: E402
import pickle  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
import torchvision  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from zoo_tudui.model import Tudui  # noqa: E402  (the same class the zoo registers)


class CIFAR10(torchvision.datasets.CIFAR10):
    """torchvision's CIFAR10 without its md5 checks: random pixels cannot match the official
    digests (see the module docstring). Everything else is torchvision's."""

    def _check_integrity(self) -> bool:
        return True

    def _load_meta(self) -> None:
        with open(Path(self.root) / self.base_folder / self.meta["filename"], "rb") as f:
            self.classes = pickle.load(f, encoding="latin1")[self.meta["key"]]
        self.class_to_idx = {name: i for i, name in enumerate(self.classes)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True, help="the directory holding cifar-10-batches-py")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--out", default=".", help="where tudui_<epoch>.pth is written")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    train_data = CIFAR10(root=args.data_dir, train=True, transform=torchvision.transforms.ToTensor(), download=False)
    test_data = CIFAR10(root=args.data_dir, train=False, transform=torchvision.transforms.ToTensor(), download=False)
    train_dataloader = DataLoader(train_data, batch_size=64)
    test_dataloader = DataLoader(test_data, batch_size=64)

    tudui = Tudui()
    loss_fn = nn.CrossEntropyLoss()
    learning_rate = 1e-2
    optimizer = torch.optim.SGD(tudui.parameters(), lr=learning_rate)
    setup_seconds = time.perf_counter() - START

    train_seconds = test_seconds = 0.0
    total_train_step = 0
    for i in range(args.epochs):
        print(f"-------epoch {i + 1} -------")
        started = time.perf_counter()
        tudui.train()
        for imgs, targets in train_dataloader:
            outputs = tudui(imgs)
            loss = loss_fn(outputs, targets)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total_train_step = total_train_step + 1
            if total_train_step % 100 == 0:
                print(f"train step: {total_train_step}, loss: {loss.item()}")
        train_seconds += time.perf_counter() - started

        started = time.perf_counter()
        tudui.eval()
        total_test_loss = 0
        total_accuracy = 0
        with torch.no_grad():
            for imgs, targets in test_dataloader:
                outputs = tudui(imgs)
                loss = loss_fn(outputs, targets)
                total_test_loss = total_test_loss + loss.item()
                accuracy = (outputs.argmax(1) == targets).sum()
                total_accuracy = total_accuracy + accuracy
        print(f"test loss: {total_test_loss}")
        print(f"test accuracy: {total_accuracy / len(test_data)}")
        torch.save(tudui, out / f"tudui_{i}.pth")
        test_seconds += time.perf_counter() - started

    print(
        json.dumps(
            {
                "setup_seconds": setup_seconds,
                "train_seconds": train_seconds,
                "test_seconds": test_seconds,
                "images_per_second": args.epochs * len(train_data) / train_seconds,
                "total_seconds": time.perf_counter() - START,
            }
        )
    )


if __name__ == "__main__":
    main()
