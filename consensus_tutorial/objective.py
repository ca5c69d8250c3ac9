"""The one-pass training objective (DESIGN.md section 2):

    L = CE + lambda_sp * R_sp + lambda_pol(step) * R_pol

* ``R_pol`` is the polarizer on ``pbar`` (per-unit batch means of the gate probabilities
  of all gated layers, concatenated);
* ``R_sp`` is the sparsity penalty on the keep vector: by default the batch means of the
  *hard* gates, whose gradient reaches ``p`` through the STE, so the hard mask itself is
  pulled to the target (the soft ``pbar`` can sit on target while the mask misses it);
  with FLOPs weights the target is a share of the whole network's FLOPs;
* ``lambda_pol(step)`` rises linearly from 0 over the first ``pol_warmup`` share of the
  steps, so gates explore before they polarize.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ._checks import check_choice
from .consensus import gate_modules
from .flops import count_flops, unit_flops
from .models import ResNet
from .regularizers import polarization, sparsity_penalty


def keep_target(model: ResNet, target_rate: float, flops_aware: bool) -> tuple[float, torch.Tensor | None]:
    """The keep ratio the gated units must reach, and the per-unit weights.

    Unit-count target: ``kappa = 1 - target_rate``, no weights. FLOPs target: the share of
    the *whole* network's FLOPs to remove is ``target_rate``; with ``F_fixed`` the FLOPs no
    gate can remove and ``F_gated`` the sum of the unit costs,
    ``kappa = ((1 - target_rate) F_dense - F_fixed) / F_gated``.
    """
    if not flops_aware:
        return 1.0 - target_rate, None
    costs = torch.cat(list(unit_flops(model).values())).double()
    dense = float(count_flops(_plain_copy(model)))
    gated = float(costs.sum())
    fixed = dense - gated
    kappa = ((1.0 - target_rate) * dense - fixed) / gated
    if kappa <= 0.0:
        reachable = gated / dense
        raise ValueError(
            f"target_rate={target_rate} cannot be reached: only {reachable:.1%} of this model's FLOPs "
            f"sit behind its gates (gating={model.gating!r}, position={model.position!r}). "
            f"Choose a target below {reachable:.2f}, or another gating position."
        )
    return kappa, (costs / costs.sum()).float()


def _plain_copy(model: ResNet) -> ResNet:
    from .models import build_model

    arch = model.architecture
    name = "resnet18" if arch["family"] == "tiny" else f"resnet{arch['depth']}"
    return build_model(name, arch["num_classes"])


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
    sparsity_on: str = "hard"

    def __post_init__(self) -> None:
        check_choice("sparsity_on", self.sparsity_on, ("hard", "soft"))
        self._kappa: float | None = None
        self._weights: torch.Tensor | None = None

    def attach(self, model: ResNet) -> "Objective":
        """Compute the keep target and FLOPs weights for ``model`` (once, before training)."""
        self._kappa, self._weights = keep_target(model, self.target_rate, self.flops_aware)
        return self

    def lambda_pol_at(self, step: int) -> float:
        if self.pol_warmup_steps <= 0:
            return self.lambda_pol
        return self.lambda_pol * min(1.0, step / self.pol_warmup_steps)

    def __call__(self, model: ResNet, logits: torch.Tensor, labels: torch.Tensor, step: int):
        """Returns (loss, {"ce", "sparsity", "polarization", "lambda_pol"} as floats)."""
        ce = F.cross_entropy(logits.float(), labels)
        gates = [g for g in gate_modules(model).values() if g.last_p is not None]
        if not gates:  # ungated, or every gate frozen
            return ce, {"ce": ce.item(), "sparsity": 0.0, "polarization": 0.0, "lambda_pol": 0.0}
        if self._kappa is None:
            self.attach(model)
        pbar = torch.cat([g.last_p.float().mean(0) for g in gates])
        keep = pbar if self.sparsity_on == "soft" else torch.cat([g.last_g.float().mean(0) for g in gates])
        weights = None if self._weights is None else self._weights.to(keep.device)
        r_sp = sparsity_penalty(keep, 1.0 - self._kappa, weights) if self._kappa < 1.0 else keep.new_zeros(())
        r_pol = polarization(pbar, self.polarizer, self.zhuang_t if self.polarizer == "zhuang" else None)
        lam_pol = self.lambda_pol_at(step)
        loss = ce + self.lambda_sp * r_sp + lam_pol * r_pol
        for g in gates:  # the graph is consumed once; do not keep it alive
            g.last_p = g.last_g = None
        terms = {"ce": ce.item(), "sparsity": r_sp.item(), "polarization": r_pol.item(), "lambda_pol": lam_pol}
        return loss, terms
