"""Settle, then train: freeze the gates once their consensus mask has stopped changing.

One-pass training has two phases in one run with one learning-rate schedule:

1. **search**: live gates, the STE and both regularizers choose the sub-network. The
   consensus mask ``m_j = 1[r_j >= threshold]`` is read from the running firing rates
   every ``window / 4`` steps.
2. **train**: once the mask removes about the target share of FLOPs (within
   ``tolerance``) and, over the last ``window`` steps, no reading changed more than a
   share ``max_flips`` of the units since the one before (the mask distance of You et
   al.'s early-bird tickets, ICLR 2020), the gates are frozen, and the rest of the run
   trains the fixed sub-network on cross-entropy alone.

At the freeze, the mask is cut to the budget exactly: the units with the highest firing
rates that fit it (``budget_masks``), so that a pruned network is compared with others
at the FLOPs it was asked for. With ``round_to``, the cut rounds every layer's kept
channels up to a multiple before it checks the budget, so that the rounded widths still
meet it; the readings before the cut are the gates' own, unrounded masks. If the mask
has not settled by the ``deadline`` step, the gates are frozen anyway, the same way.

Why: the mask of a short run settles within tens of steps, and training the remaining
epochs with live gates, the STE and the penalties costs accuracy that the fixed network
does not lose (the book's results chapter measures both). ``settle="live"`` keeps the
gates live to the end, the package's earlier behaviour.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from .consensus import freeze_gates, gate_modules
from .costs import CostModel, flops_cost

Masks = dict[str, torch.Tensor]


@dataclass
class Settler:
    """Watches the consensus mask during training and freezes the gates once it settles.

    Args:
        masks_of: model -> the current consensus masks (the trainer's threshold and guards).
        budget_masks: model -> the units with the highest firing rates that fit the budget.
        target_rate: the share of the cost (or units, when ``flops_aware`` is False) to remove.
        flops_aware: measure the removed share in the cost (True) or in gated units.
        window: steps over which the mask must stay near the target and nearly unchanged.
        tolerance: allowed ``|removed share - target_rate|`` during the window.
        deadline_step: the step at which the gates are frozen whatever the mask does.
        max_flips: largest share of units that may change between two readings.
    """

    masks_of: Callable[[torch.nn.Module], Masks]
    budget_masks: Callable[[torch.nn.Module], Masks]
    target_rate: float
    flops_aware: bool
    window: int
    tolerance: float
    deadline_step: int
    max_flips: float = 0.03
    #: model -> its :class:`~consensus_tutorial.costs.CostModel` (default: FLOPs)
    cost_of: Callable[[torch.nn.Module], CostModel] = flops_cost
    last: Masks | None = None
    stable_since: int = 0
    record: dict = field(default_factory=dict)
    #: every reading until the freeze, as [step, removed share, flipped share or None]
    trace: list = field(default_factory=list)
    _cost: CostModel | None = field(default=None, repr=False)
    _dense: float | None = field(default=None, repr=False)

    @property
    def every(self) -> int:
        """The number of steps between two readings of the mask, a quarter of the window."""
        return max(1, self.window // 4)

    def removed_share(self, model: torch.nn.Module, masks: Masks) -> float:
        """The share of the cost (or of gated units) that ``masks`` remove."""
        if self.flops_aware:
            if self._cost is None:  # the same for every reading: built and counted once
                self._cost = self.cost_of(model)
                self._dense = self._cost.dense(model)
            return 1.0 - self._cost.total(masks) / self._dense
        kept = sum(int(m.sum()) for m in masks.values())
        return 1.0 - kept / sum(m.numel() for m in masks.values())

    @staticmethod
    def flipped_share(masks: Masks, before: Masks) -> float:
        """Share of units whose decision differs between two masks (the mask distance)."""
        changed = sum(int((masks[n] != before[n]).sum()) for n in masks)
        return changed / sum(m.numel() for m in masks.values())

    def check(self, model: torch.nn.Module, step: int) -> Masks | None:
        """After optimizer step ``step`` (1-based): the masks to freeze to, or None to go on."""
        if step >= self.deadline_step:
            return self._final(model, step, "deadline", None)
        if step % self.every:
            return None
        masks = self.masks_of(model)
        removed = self.removed_share(model, masks)
        flips = None if self.last is None else self.flipped_share(masks, self.last)
        self.trace.append([step, round(removed, 4), None if flips is None else round(flips, 4)])
        moved = flips is None or flips > self.max_flips
        if moved or abs(removed - self.target_rate) > self.tolerance:
            self.stable_since = step
        self.last = masks
        if step - self.stable_since >= self.window:
            return self._final(model, step, "settled", removed)
        return None

    def _final(self, model: torch.nn.Module, step: int, reason: str, removed: float | None) -> Masks:
        masks = self.budget_masks(model)
        self.record = {"step": step, "reason": reason, "removed": self.removed_share(model, masks),
                       "removed_before_cut": removed,
                       "cut_flips": None if self.last is None else self.flipped_share(masks, self.last),
                       "trace": self.trace}
        return masks

    def freeze(self, model: torch.nn.Module, masks: Masks) -> None:
        """Freeze every gate of ``model`` to ``masks``."""
        freeze_gates(model, masks)

    def state_dict(self) -> dict:
        return {"last": self.last, "stable_since": self.stable_since, "record": self.record, "trace": self.trace}

    def load_state_dict(self, state: dict) -> None:
        self.last = state.get("last")
        self.stable_since = state.get("stable_since", 0)
        self.record = state.get("record", {})
        self.trace = state.get("trace", [])


def is_live(model: torch.nn.Module) -> bool:
    """True when the model has gates and at least one of them is not frozen."""
    gates = gate_modules(model)
    return bool(gates) and not all(g.is_frozen for g in gates.values())
