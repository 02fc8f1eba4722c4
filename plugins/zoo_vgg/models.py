"""Builders for torchvision's VGG models."""

from torch import nn


def vgg16(num_classes: int) -> nn.Module:
    """torchvision's ``vgg16`` with fresh weights; ImageNet weights come from ``--weights``."""
    from torchvision.models import vgg16 as tv_vgg16

    return tv_vgg16(weights=None, num_classes=num_classes)
