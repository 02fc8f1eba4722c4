"""Training-batch augmentations: flip, crop and cutout, each drawn per image and batched on the
device (no Python loop over images), all randomness from the zoo's generator."""

from zoo import hookimpl


@hookimpl
def register_augmentations(register):
    register("flip", "zoo_augment.ops:flip", summary="horizontal flip of each image with probability p (0.5)")
    register(
        "crop",
        "zoo_augment.ops:crop",
        summary="random translation of each image by up to padding pixels (4), zero-padded",
    )
    register("cutout", "zoo_augment.ops:cutout", summary="a random size x size square of each image zeroed (8)")
