"""An extracted network the way users deploy it: batch norm folded into the convolutions,
channels-last memory, and compiled.

``deployed(net, mode)`` returns an inference-only copy of ``net`` (eval mode) for one of
the ``MODES``:

* ``"eager"``: the network as it is;
* ``"folded"``: every convolution followed by a batch norm becomes one convolution with a
  bias, ``W' = W * gamma / sqrt(var + eps)``, ``b' = beta - mu * gamma / sqrt(var + eps)``
  (per output channel), and the batch norm an identity; same logits in eval mode;
* ``"folded+channels_last"``: the folded network with its weights in channels-last memory
  format (NHWC), which CPU and GPU convolution kernels prefer (its first convolution then
  computes in that format whatever the input's);
* ``"compiled"``: the folded channels-last network through ``torch.compile`` (on a CPU it
  needs a C++ compiler; the first calls compile).

``benchmarks/deploy.py`` times each mode for the dense and the extracted networks side by
side.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

#: the (convolution, batch norm) attribute pairs of the package's networks and blocks
_PAIRS = (("conv1", "bn1"), ("conv2", "bn2"))


def fold_batchnorm(net: nn.Module) -> nn.Module:
    """A copy of ``net`` (eval mode) in which each ``convK`` followed by ``bnK`` is one
    convolution with a bias and ``bnK`` an identity; the logits are the same in eval mode.
    Option-B shortcuts (a 1x1 convolution and a batch norm in a ``Sequential``) fold too."""
    folded = copy.deepcopy(net).eval()
    for module in folded.modules():
        for conv_name, bn_name in _PAIRS:
            conv, bn = getattr(module, conv_name, None), getattr(module, bn_name, None)
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                setattr(module, conv_name, fuse_conv_bn_eval(conv, bn))
                setattr(module, bn_name, nn.Identity())
        if isinstance(module, nn.Sequential) and len(module) == 2 and isinstance(module[0], nn.Conv2d) \
                and isinstance(module[1], nn.BatchNorm2d):
            module[0], module[1] = fuse_conv_bn_eval(module[0], module[1]), nn.Identity()
    return folded


def _channels_last(net: nn.Module) -> nn.Module:
    return fold_batchnorm(net).to(memory_format=torch.channels_last)


def _compiled(net: nn.Module) -> nn.Module:
    return torch.compile(_channels_last(net))


#: mode -> (network -> deployable copy); a channels-last network takes either memory format
MODES: dict[str, Callable[[nn.Module], nn.Module]] = {
    "eager": lambda net: copy.deepcopy(net).eval(),
    "folded": fold_batchnorm,
    "folded+channels_last": _channels_last,
    "compiled": _compiled,
}


def deployed(net: nn.Module, mode: str = "folded") -> nn.Module:
    """An inference copy of ``net`` for ``mode`` (see ``MODES``); the original is untouched."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(map(repr, MODES))}; got {mode!r}.")
    return MODES[mode](net).eval()
