"""The zoo's built-in datasets, registered exactly as a third-party plugin would.

Loaders are import paths, resolved only when a run loads the data, so ``zoo list`` never
imports torch, torchvision or scikit-learn.
"""

from __future__ import annotations

from zoo import hookimpl

CIFAR10_CLASSES = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
]
DIGITS_CLASSES = [str(i) for i in range(10)]
FAKE_CLASSES = [f"class{i}" for i in range(10)]


@hookimpl
def register_datasets(register):
    register(
        "cifar10",
        "zoo_datasets.loaders:load_cifar10",
        summary="CIFAR-10: 50,000 train / 10,000 test colour images, 10 classes (--download once)",
        num_classes=10,
        input_size=(3, 32, 32),
        classes=CIFAR10_CLASSES,
    )
    register(
        "digits",
        "zoo_datasets.loaders:load_digits",
        summary="1,797 real 8x8 handwritten digits from scikit-learn, upsampled: offline, no download",
        num_classes=10,
        input_size=(3, 32, 32),
        classes=DIGITS_CLASSES,
    )
    register(
        "fake",
        "zoo_datasets.loaders:load_fake",
        summary="synthetic CIFAR-shaped images with learnable class patterns, for smoke runs",
        num_classes=10,
        input_size=(3, 32, 32),
        classes=FAKE_CLASSES,
    )
    register(
        "imagefolder",
        "zoo_datasets.loaders:load_imagefolder",
        summary="your own images: DIR/train/<class>/*.png and DIR/val/<class>/*.png (--data-dir DIR)",
        num_classes=None,
        input_size=(3, 32, 32),
    )
