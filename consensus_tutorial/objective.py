"""The one-pass training objective (the book's method chapter)::

    L = CE + lambda_sp * R_sp + lambda_pol(step) * R_pol

* ``R_pol`` is the polarizer on ``pbar`` (per-unit batch means of the gate probabilities
  of all gated layers, concatenated);
* ``R_sp`` is the sparsity penalty on the keep vector: by default the batch means of the
  *hard* gates, whose gradient reaches ``p`` through the STE, so the hard mask itself is
  pulled to the target (the soft ``pbar`` can sit on target while the mask misses it);
  with FLOPs weights the target is a share of the whole network's FLOPs;
* ``lambda_pol(step)`` rises linearly from 0 over the first ``pol_warmup`` share of the
  steps, so gates explore before they polarize; ``lambda_sp`` is 0 for the first
  ``sparsity_start_steps`` steps (0 by default), so the weights can learn before the
  gates are asked to close.

How the budget is shared between the gated layers is the *allocation* (``ALLOCATIONS``).
With ``q_l`` the (FLOPs-weighted) keep ratio of the units of gate ``l`` and ``L`` gates:

* ``"global"``: one budget for the whole network, ``R_sp = (q - kappa)^2`` over all units
  at once: which layers shrink is left to the gates and their optimizer;
* ``"uniform"``: every gated layer keeps the same share,
  ``R_sp = (1/L) sum_l (q_l - kappa)^2`` (as the random and L1 baselines do).

A per-layer floor ``min_keep`` adds ``(1/L) sum_l max(0, min_keep - q_l)^2`` (also weighed
by ``lambda_sp``), so that no layer is squeezed below that share.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ._checks import check_choice
from .gates import GateRecord
from .costs import COSTS
from .models import ResNet
from .regularizers import POLARIZERS, keep_ratio, polarization, sparsity_penalty


def _global_allocation(keeps: Sequence[torch.Tensor], weights: Sequence[torch.Tensor | None],
                       kappa: float) -> torch.Tensor:
    """``(q - kappa)^2`` with ``q`` the keep ratio of all units together."""
    joined = None if weights[0] is None else torch.cat(list(weights))
    return sparsity_penalty(torch.cat(list(keeps)), 1.0 - kappa, joined)


def _uniform_allocation(keeps: Sequence[torch.Tensor], weights: Sequence[torch.Tensor | None],
                        kappa: float) -> torch.Tensor:
    """``(1/L) sum_l (q_l - kappa)^2``: every gated layer is held to the same share."""
    return torch.stack([(keep_ratio(k, w) - kappa) ** 2 for k, w in zip(keeps, weights)]).mean()


#: name -> penalty(keeps per gate, weights per gate (or None), kappa); the choices of
#: ``allocation`` (register a new one here and it is a setting of the trainer and the CLI)
ALLOCATIONS: dict[str, Callable[..., torch.Tensor]] = {
    "global": _global_allocation,
    "uniform": _uniform_allocation,
}


def floor_penalty(keeps: Sequence[torch.Tensor], weights: Sequence[torch.Tensor | None],
                  min_keep: float) -> torch.Tensor:
    """``(1/L) sum_l max(0, min_keep - q_l)^2``: zero while every layer keeps at least ``min_keep``."""
    short = [torch.clamp(min_keep - keep_ratio(k, w), min=0.0) ** 2 for k, w in zip(keeps, weights)]
    return torch.stack(short).mean()


def keep_target(model: ResNet, target_rate: float, flops_aware: bool, *, cost: str = "flops",
                latency_table=None) -> tuple[float, torch.Tensor | None]:
    """The keep ratio the gated units must reach, and the per-unit weights.

    Unit-count target: ``kappa = 1 - target_rate``, no weights. Cost target (FLOPs, or
    another ``cost`` of :data:`~consensus_tutorial.costs.COSTS`): the share of the *whole*
    network's cost to remove is ``target_rate``; with ``F_fixed`` the cost no gate can
    remove and ``F_gated`` the sum of the unit costs,
    ``kappa = ((1 - target_rate) F_dense - F_fixed) / F_gated``.
    """
    if not flops_aware:
        return 1.0 - target_rate, None
    model_cost = COSTS[cost](model, latency_table)
    costs = torch.cat(list(model_cost.unit_costs().values())).double()
    dense = model_cost.dense(model)
    gated = float(costs.sum())
    fixed = dense - gated
    kappa = ((1.0 - target_rate) * dense - fixed) / gated
    if kappa <= 0.0:
        reachable = gated / dense
        raise ValueError(
            f"target_rate={target_rate} cannot be reached: only {reachable:.1%} of this model's {cost} "
            f"sit behind its gates (gating={model.gating!r}, position={model.position!r}). "
            f"Choose a target below {reachable:.2f}, or another gating position."
        )
    return kappa, (costs / costs.sum()).float()


@dataclass
class Objective:
    """Computes the loss terms after a forward pass of a gated model in training mode."""

    target_rate: float = 0.5
    lambda_sp: float = 5.0
    lambda_pol: float = 1.0
    polarizer: str = "bimodal"
    zhuang_t: float | None = None
    pol_warmup_steps: int = 0
    flops_aware: bool = True
    cost: str = "flops"
    latency_table: str | None = None
    sparsity_on: str = "hard"
    allocation: str = "global"
    min_keep: float = 0.0
    sparsity_start_steps: int = 0
    #: the mean of a tensor over all processes of a multi-process run, differentiable (the batch
    #: means are reduced before the non-linear penalties see them); None for one process
    reduce_mean: Callable[[torch.Tensor], torch.Tensor] | None = None

    def __post_init__(self) -> None:
        check_choice("sparsity_on", self.sparsity_on, ("hard", "soft"))
        check_choice("allocation", self.allocation, tuple(ALLOCATIONS))
        if not 0.0 <= self.min_keep < 1.0:
            raise ValueError(f"min_keep (the per-layer floor) must lie in [0, 1); got {self.min_keep!r}.")
        self._kappa: float | None = None
        self._weights: torch.Tensor | None = None

    def attach(self, model: ResNet) -> "Objective":
        """Compute the keep target and FLOPs weights for ``model`` (once, before training)."""
        self._kappa, self._weights = keep_target(model, self.target_rate, self.flops_aware, cost=self.cost,
                                                 latency_table=self.latency_table)
        return self

    def lambda_pol_at(self, step: int) -> float:
        if self.pol_warmup_steps <= 0:
            return self.lambda_pol
        return self.lambda_pol * min(1.0, step / self.pol_warmup_steps)

    def __call__(self, model: ResNet, logits: torch.Tensor, labels: torch.Tensor, step: int,
                 record: GateRecord | None = None):
        """Returns (loss, {"ce", "sparsity", "polarization", "lambda_pol"}): the terms as
        detached tensors (read them with ``float``; the trainer does so once per epoch).

        ``record``: the :class:`~consensus_tutorial.gates.GateRecord` of the forward pass
        that made ``logits`` (None or empty: an ungated model, or every gate frozen, and
        the loss is the cross-entropy alone)."""
        ce = F.cross_entropy(logits.float(), labels)
        if record is None or not len(record):
            return ce, {"ce": ce.detach(), "sparsity": 0.0, "polarization": 0.0, "lambda_pol": 0.0}
        if self._kappa is None:
            self.attach(model)
        pbar = torch.cat([p.float().mean(0) for p in record.p])
        keeps = [h.float().mean(0) for h in (record.p if self.sparsity_on == "soft" else record.g)]
        if self.reduce_mean is not None:  # one all-reduce for all batch means
            joined = self.reduce_mean(torch.cat([pbar, *keeps]))
            pbar, keeps = joined[:pbar.numel()], list(torch.split(joined[pbar.numel():], [k.numel() for k in keeps]))
        weights = self._weights_per_gate(keeps)
        r_sp = pbar.new_zeros(())
        if self._kappa < 1.0:
            r_sp = ALLOCATIONS[self.allocation](keeps, weights, self._kappa)
        if self.min_keep > 0.0:
            r_sp = r_sp + floor_penalty(keeps, weights, self.min_keep)
        r_pol = polarization(pbar, self.polarizer, self.zhuang_t if POLARIZERS[self.polarizer].takes_t else None)
        lam_pol = self.lambda_pol_at(step)
        lam_sp = self.lambda_sp if step >= self.sparsity_start_steps else 0.0
        loss = ce + lam_sp * r_sp + lam_pol * r_pol
        terms = {"ce": ce.detach(), "sparsity": r_sp.detach(), "polarization": r_pol.detach(), "lambda_pol": lam_pol}
        return loss, terms

    def _weights_per_gate(self, keeps: list[torch.Tensor]) -> list[torch.Tensor | None]:
        """The FLOPs weights split into one (C_l,) tensor per gate (None when not FLOPs-aware)."""
        if self._weights is None:
            return [None] * len(keeps)
        weights = self._weights.to(keeps[0].device)
        return list(torch.split(weights, [k.numel() for k in keeps]))
