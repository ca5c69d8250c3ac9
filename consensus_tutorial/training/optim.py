"""The optimizers and learning-rate schedules of a run: SGD on the weights, a registry
of gate optimizers (``GATE_OPTIMIZERS``) and of schedules (``SCHEDULES_BY_NAME``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ..consensus import gate_modules
from ..flops import unit_flops

if TYPE_CHECKING:
    from .config import TrainConfig


#: the gate parameters' own optimizer: name -> (param groups, config) -> optimizer.
#: Adam moves every parameter by about its learning rate whatever its gradient; SGD (with
#: the weights' momentum, a constant ``gate_lr``) moves it in proportion to its gradient,
#: so that the FLOPs weights of the sparsity term act.
GATE_OPTIMIZERS: dict[str, Callable[[list, Any], torch.optim.Optimizer]] = {
    "adam": lambda groups, config: torch.optim.Adam(groups, lr=config.gate_lr),
    "sgd": lambda groups, config: torch.optim.SGD(groups, lr=config.gate_lr, momentum=config.momentum),
}


def _gate_groups(model: nn.Module, config: TrainConfig) -> list[dict]:
    """One optimizer group per gate for its per-unit logits, and one for its input
    weights (``gate_input_lr_scale`` times the rate). With ``gate_lr_scale="cost"`` each
    gate's rate is ``gate_lr`` times its units' mean FLOPs over the mean of all gates."""
    gates = gate_modules(model)
    scale = {n: 1.0 for n in gates}
    if gates and config.gate_lr_scale == "cost":
        means = {n: float(c.mean()) for n, c in unit_flops(model).items()}
        overall = sum(means.values()) / len(means)
        scale = {n: means[n] / overall for n in gates}
    groups = []
    for name, gate in gates.items():
        lr = config.gate_lr * scale[name]
        inputs = gate.input_parameters()
        ids = {id(p) for p in inputs}
        groups.append({"params": [p for p in gate.parameters() if id(p) not in ids], "lr": lr})
        if inputs:
            groups.append({"params": inputs, "lr": lr * config.gate_input_lr_scale})
    return groups


#: the weights' learning-rate schedule: name -> (optimizer, total steps) -> scheduler
SCHEDULES_BY_NAME: dict[str, Callable[[torch.optim.Optimizer, int, Any], Any]] = {
    "cosine": lambda opt, total, config: torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total),
    "step": lambda opt, total, config: torch.optim.lr_scheduler.MultiStepLR(
        opt, [int(total * 0.5), int(total * 0.75)], 0.1),
    "onecycle": lambda opt, total, config: torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=config.lr, total_steps=total),
}


def make_weight_optimizer(params: list, config: TrainConfig, total_steps: int):
    """SGD (nesterov momentum, weight decay) over ``params`` and its schedule over
    ``total_steps``; returns (optimizer, scheduler)."""
    sgd = torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, nesterov=True,
                          weight_decay=config.weight_decay)
    return sgd, SCHEDULES_BY_NAME[config.schedule](sgd, total_steps, config)


def make_optimizers(model: nn.Module, config: TrainConfig, steps_per_epoch: int):
    """The weights' SGD with its schedule (:func:`make_weight_optimizer`), and the gate
    parameters on their own optimizer (``GATE_OPTIMIZERS[gate_optimizer]``, no weight
    decay, constant rate): under the weights' SGD the sparsity term's gradient is too
    small to move the gate scores within a short schedule.
    Returns (optimizers, scheduler of the SGD optimizer)."""
    gate_ids = {id(p) for g in gate_modules(model).values() for p in g.parameters()}
    weights = [p for p in model.parameters() if id(p) not in gate_ids]
    sgd, scheduler = make_weight_optimizer(weights, config, config.epochs * steps_per_epoch)
    optimizers = [sgd]
    if gate_ids:
        optimizers.append(GATE_OPTIMIZERS[config.gate_optimizer](_gate_groups(model, config), config))
    return optimizers, scheduler

