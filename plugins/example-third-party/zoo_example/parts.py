"""The example plugin's model, optimizer and dataset (imported only when used)."""

import torch
from torch import nn


def mlp(num_classes: int) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(16 * 16, 32), nn.ReLU(), nn.Linear(32, num_classes))


class SignSGD(torch.optim.Optimizer):
    """p <- p - lr * sign(grad): a complete torch.optim.Optimizer is a valid zoo factory."""

    def __init__(self, params, lr: float = 0.01):
        if not lr > 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        super().__init__(params, {"lr": lr})

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.add_(p.grad.sign(), alpha=-group["lr"])
        return loss


def stripes(train: bool, root: str, download: bool):
    """Generated stripes: class 0 horizontal, class 1 vertical, with noise."""
    from zoo.data import TensorImageDataset

    generator = torch.Generator().manual_seed(1 if train else 2)
    n = 256 if train else 64
    labels = torch.randint(0, 2, (n,), generator=generator)
    phase = torch.randint(0, 4, (n, 1, 1), generator=generator)
    ramp = torch.arange(16).view(1, 16, 1)
    rows = (((ramp + phase) // 2) % 2).expand(n, 16, 16).float()
    images = torch.where(labels.view(n, 1, 1).bool(), rows.transpose(1, 2), rows)
    noise = torch.rand(n, 16, 16, generator=generator) * 0.3
    pixels = ((images * 0.7 + noise).clamp(0, 1) * 255).to(torch.uint8).unsqueeze(1)
    return TensorImageDataset(pixels, labels, mean=(0.5,), std=(0.25,), classes=["horizontal", "vertical"])
