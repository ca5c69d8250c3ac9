"""Hand training over from a gated model with frozen gates to its extracted network.

Once every gate is frozen, the gated model computes its sub-network but still pays for
every channel: the gates multiply, they do not skip. The extracted network computes the
same function with fewer channels, in training mode too (batch norm normalises each
channel on its own, so cutting a channel does not change the others). Handing over
means: extract the network, give its optimizer the running schedule and the momentum of
the parameters it kept, and train it from there. The kept parameters then follow
exactly the updates they would have had inside the gated model, and every step costs
what the smaller network costs.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping

import torch
from torch import nn

from .extraction import PrunedResNet, extract_subnetwork
from .models import ResNet

#: parameters of an extracted network that are computed from batch-norm statistics
#: (a block whose channels all closed), not cut from one parameter: their momentum restarts
_COMPUTED = ("branch_bias", "hidden")


def slice_like_parameters(model: ResNet, masks: Mapping[str, torch.Tensor],
                          tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Cut tensors shaped like ``model``'s parameters (e.g. momentum buffers, keyed by
    parameter name) exactly as :func:`~consensus_tutorial.extract_subnetwork` cuts the
    parameters; returns them keyed by the extracted network's parameter names. Missing
    entries count as zeros."""
    shadow = copy.deepcopy(model)
    with torch.no_grad():
        for name, p in shadow.named_parameters():
            p.copy_(tensors[name] if name in tensors else torch.zeros_like(p))
    cut = extract_subnetwork(shadow, masks)
    return {name: torch.zeros_like(p) if name.rsplit(".", 1)[-1] in _COMPUTED else p.detach().clone()
            for name, p in cut.named_parameters()}


def hand_over(
    model: ResNet,
    masks: Mapping[str, torch.Tensor],
    optimizer: torch.optim.SGD,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    build: Callable[[list[nn.Parameter]], tuple[torch.optim.SGD, torch.optim.lr_scheduler.LRScheduler]],
) -> tuple[PrunedResNet, torch.optim.SGD, torch.optim.lr_scheduler.LRScheduler]:
    """The extracted network of ``model`` (training mode), with an optimizer and scheduler
    that continue ``optimizer`` / ``scheduler`` (the weights' SGD) where they stand.

    Args:
        model: a gated model whose gates are frozen to ``masks``.
        build: params -> (optimizer, scheduler) of the same kind as the running ones.
    """
    subnet = extract_subnetwork(model, masks).train()
    new_optimizer, new_scheduler = build(list(subnet.parameters()))
    new_optimizer.param_groups[0].update({k: v for k, v in optimizer.param_groups[0].items() if k != "params"})
    names = {id(p): n for n, p in model.named_parameters()}
    buffers = {names[id(p)]: s["momentum_buffer"] for p, s in optimizer.state.items()
               if s.get("momentum_buffer") is not None}
    if buffers:
        sliced = slice_like_parameters(model, masks, buffers)
        for name, p in subnet.named_parameters():
            new_optimizer.state[p]["momentum_buffer"] = sliced[name]
    new_scheduler.load_state_dict(scheduler.state_dict())
    return subnet, new_optimizer, new_scheduler
