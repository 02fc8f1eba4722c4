"""The augmentations themselves. Each factory checks its hyper-parameters and returns
``apply(images, generator) -> images``: a float batch ``(B, C, H, W)`` in, the same shape out,
every random draw made per image in one call for the whole batch, from ``generator`` (which
lives on the images' device), never from torch's global RNG."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

Augment = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


def flip(p: float = 0.5) -> Augment:
    """Flip each image left to right with probability ``p``."""
    if not 0 <= p <= 1:
        raise ValueError(f"p must be between 0 and 1, got {p}")

    def apply(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        flipped = torch.rand(images.shape[0], device=images.device, generator=generator) < p
        return torch.where(flipped[:, None, None, None], images.flip(-1), images)

    return apply


def crop(padding: int = 4) -> Augment:
    """Pad each image with ``padding`` zeros on every side, then take a window of the image's
    size at a random offset: a random translation by up to ``padding`` pixels each way."""
    if padding < 0:
        raise ValueError(f"padding must be >= 0, got {padding}")

    def apply(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if padding == 0:
            return images
        b, c, h, w = images.shape
        span = 2 * padding + 1
        offsets = torch.randint(0, span, (2, b), device=images.device, generator=generator)
        padded = F.pad(images, (padding, padding, padding, padding))
        rows = offsets[0, :, None] + torch.arange(h, device=images.device)  # (B, H) rows of the window
        cols = offsets[1, :, None] + torch.arange(w, device=images.device)  # (B, W) its columns
        out = padded.gather(2, rows[:, None, :, None].expand(b, c, h, w + 2 * padding))
        return out.gather(3, cols[:, None, None, :].expand(b, c, h, w))

    return apply


def cutout(size: int = 8) -> Augment:
    """Zero a ``size`` x ``size`` square of each image, centred at a random pixel (clipped at
    the borders, as in DeVries & Taylor, 2017)."""
    if size < 1:
        raise ValueError(f"size must be a positive number of pixels, got {size}")

    def apply(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        b, _, h, w = images.shape
        rows = torch.randint(0, h, (b, 1), device=images.device, generator=generator) - size // 2
        cols = torch.randint(0, w, (b, 1), device=images.device, generator=generator) - size // 2
        y = torch.arange(h, device=images.device)
        x = torch.arange(w, device=images.device)
        inside_rows = (y >= rows) & (y < rows + size)  # (B, H)
        inside_cols = (x >= cols) & (x < cols + size)  # (B, W)
        square = inside_rows[:, :, None] & inside_cols[:, None, :]
        return images.masked_fill(square[:, None], 0.0)

    return apply
