"""The built-in augmentations: what each does, per image, from the zoo's generator alone,
deterministic for a generator state, and batched (no Python loop over the images)."""

from __future__ import annotations

import pytest
import torch
from torch.overrides import TorchFunctionMode

from zoo.errors import UnknownNameError, UsageError
from zoo.recipe import build_augmentation

NAMES = ["flip", "crop", "cutout"]


@pytest.fixture
def registry(builtin_registry):
    return builtin_registry


def augment(registry, *specs: str):
    return build_augmentation(registry, list(specs))


def images(batch: int = 64, size: int = 8, channels: int = 3) -> torch.Tensor:
    # distinct, asymmetric images with no zero pixel: a flip, a shift or a hole always shows
    return torch.arange(batch * channels * size * size, dtype=torch.float32).reshape(batch, channels, size, size) + 1


def generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("name", NAMES)
def test_same_shape_and_dtype(registry, name):
    batch = images(5, size=12)
    out = augment(registry, name)(batch, generator())
    assert out.shape == batch.shape and out.dtype == batch.dtype


def test_flip_flips_left_to_right_with_probability_p(registry):
    batch = images()
    assert torch.equal(augment(registry, "flip:p=1")(batch, generator()), batch.flip(-1))
    assert torch.equal(augment(registry, "flip:p=0")(batch, generator()), batch)
    out = augment(registry, "flip")(batch, generator())
    flipped = [torch.equal(o, b.flip(-1)) for o, b in zip(out, batch)]
    assert all(f or torch.equal(o, b) for f, o, b in zip(flipped, out, batch))
    assert 16 < sum(flipped) < 48  # about half of 64, each image drawn on its own


def shift(image: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """``image`` translated by (dy, dx) pixels, zeros where it moved in from outside."""
    out = torch.zeros_like(image)
    h, w = image.shape[-2:]
    src = image[..., max(0, dy) : h + min(0, dy), max(0, dx) : w + min(0, dx)]
    out[..., max(0, -dy) : h + min(0, -dy), max(0, -dx) : w + min(0, -dx)] = src
    return out


def test_crop_translates_each_image_by_up_to_padding_pixels(registry):
    batch = images(32)
    out = augment(registry, "crop:padding=2")(batch, generator())
    shifts = []
    for o, b in zip(out, batch):
        found = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3) if torch.equal(o, shift(b, dy, dx))]
        assert len(found) == 1, "every output is its image translated by at most 2 pixels, zero-padded"
        shifts.append(found[0])
    assert len(set(shifts)) > 5  # drawn per image
    assert torch.equal(augment(registry, "crop:padding=0")(batch, generator()), batch)


def test_cutout_zeroes_one_square_per_image(registry):
    batch = images(32, size=12)
    out = augment(registry, "cutout:size=4")(batch, generator())
    holes = []
    for o, b in zip(out, batch):
        zero = o == 0
        assert torch.equal(o[~zero], b[~zero])  # the rest untouched
        rows = zero.any(0).any(1).nonzero().flatten()
        cols = zero.any(0).any(0).nonzero().flatten()
        assert 1 <= len(rows) <= 4 and 1 <= len(cols) <= 4  # a square, clipped at the borders
        assert zero.all(0)[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1].all()  # every channel, the whole box
        holes.append((int(rows[0]), int(cols[0])))
    assert len(set(holes)) > 10  # drawn per image


@pytest.mark.parametrize("name", NAMES)
def test_the_same_generator_state_gives_the_same_output(registry, name):
    batch = images()
    apply = augment(registry, name)
    first = apply(batch, generator(7))
    torch.manual_seed(123)  # the global RNG plays no part
    assert torch.equal(apply(batch, generator(7)), first)
    assert not torch.equal(apply(batch, generator(8)), first)
    shared = generator(7)
    assert not torch.equal(apply(batch, shared), apply(batch, shared))  # the generator moves on


@pytest.mark.parametrize("name", NAMES)
def test_the_global_rng_is_untouched(registry, name):
    torch.manual_seed(0)
    state = torch.get_rng_state()
    augment(registry, name)(images(), generator())
    assert torch.equal(torch.get_rng_state(), state)


class TorchCalls(TorchFunctionMode):
    """Counts torch function and tensor method calls while active."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.count += 1
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("spec", ["flip", "crop", "cutout", "flip,crop,cutout"])
def test_the_work_is_batched(registry, spec):
    apply = augment(registry, *spec.split(","))

    def calls(batch: int) -> int:
        with TorchCalls() as counter:
            apply(images(batch, size=16), generator())
        return counter.count

    assert calls(256) == calls(2) > 0  # no Python loop over the images


def test_composition_is_in_order_and_recorded(registry):
    both = augment(registry, "cutout:size=3", "flip:p=1")
    assert both.specs == [("cutout", {"size": 3}), ("flip", {"p": 1.0})]
    assert both.as_json() == [{"name": "cutout", "hparams": {"size": 3}}, {"name": "flip", "hparams": {"p": 1.0}}]
    batch = images(4)
    expected = augment(registry, "cutout:size=3")(batch, generator(3)).flip(-1)
    assert torch.equal(both(batch, generator(3)), expected)
    assert build_augmentation(registry, []) is None


@pytest.mark.parametrize(
    "spec, message",
    [
        ("flip:p=2", "augmentation 'flip' (built-in plugin 'augment') cannot be built with p=2.0: ValueError: p must"),
        ("crop:padding=-1", "padding must be >= 0, got -1"),
        ("cutout:size=0", "size must be a positive number of pixels"),
        ("crop:pad=2",
         "augmentation 'crop' has no parameter 'pad'; did you mean 'padding'? valid: padding (zoo show crop)"),
        ("crop:padding=two", "augmentation 'crop': padding must be an integer, got 'two'"),
        ("flip:p", "--augment 'flip:p': 'p' is not KEY=VALUE"),
    ],
)  # fmt: skip
def test_bad_hyper_parameters_name_the_augmentation(registry, spec, message):
    with pytest.raises(UsageError) as caught:
        augment(registry, spec)
    assert message in str(caught.value)


def test_unknown_augmentation_suggests_the_closest(registry):
    with pytest.raises(UnknownNameError) as caught:
        augment(registry, "crpo:padding=2")
    assert str(caught.value) == "unknown augmentation 'crpo'; did you mean 'crop'? (zoo list augmentations)"


def test_a_plugin_returning_another_shape_is_refused(monkeypatch, plugin_dist):
    source = """
    from zoo import hookimpl

    @hookimpl
    def register_augmentations(register):
        register("shrink", lambda: (lambda images, generator: images[:, :, 1:, 1:]))
    """
    monkeypatch.syspath_prepend(str(plugin_dist("shrinker", source)))
    from zoo.registry import get_registry

    apply = build_augmentation(get_registry(), ["shrink"])
    with pytest.raises(UsageError, match=r"augmentation 'shrink' returned torch.Size\(\[2, 3, 7, 7\]\) for a batch"):
        apply(images(2), generator())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", NAMES)
def test_on_cuda_with_a_cuda_generator(registry, name):
    batch = images().cuda()
    apply = augment(registry, name)
    first = apply(batch, torch.Generator(device="cuda").manual_seed(1))
    assert first.device == batch.device and first.shape == batch.shape
    assert torch.equal(apply(batch, torch.Generator(device="cuda").manual_seed(1)), first)
