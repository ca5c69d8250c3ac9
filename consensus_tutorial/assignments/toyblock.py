"""The small residual block of assignment 3.

``ToyBlock(channels, hidden)`` computes

    y = relu(x + bn2(conv2(relu(bn1(conv1(x))))))

with 3x3 convolutions (padding 1, no bias), ``conv1: channels -> hidden`` and
``conv2: hidden -> channels``, and an identity shortcut: the package's basic block
without stride or gate, small enough to cut by hand. Students subclass it to add a
channel gate, and write the surgery that removes the closed channels; the checks of
:func:`~consensus_tutorial.assignments.check_extraction` compare their cut block with
the gated one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ToyBlock(nn.Module):
    """A residual block of two 3x3 convolutions with batch norm and an identity shortcut.

    Shapes: (B, channels, H, W) -> (B, channels, H, W). The hidden width is ``hidden``.
    """

    def __init__(self, channels: int, hidden: int):
        super().__init__()
        if channels < 1 or hidden < 1:
            raise ValueError(f"channels and hidden must be positive; got {channels}, {hidden}.")
        self.channels, self.hidden = channels, hidden
        self.conv1 = nn.Conv2d(channels, hidden, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(hidden)
        self.conv2 = nn.Conv2d(hidden, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(h))
        return F.relu(x + y)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, hidden={self.hidden}"


def randomize_batchnorm(module: nn.Module, generator: torch.Generator | None = None) -> nn.Module:
    """Give every BatchNorm2d of ``module`` random affine parameters and running
    statistics (in place), so that a cut that forgets a BN tensor shows in the output."""
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.weight.copy_(torch.randn(n, generator=generator) * 0.5 + 1.0)
                m.bias.copy_(torch.randn(n, generator=generator) * 0.5)
                m.running_mean.copy_(torch.randn(n, generator=generator) * 0.5)
                m.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
    return module
