"""From dynamic gates to one static mask: the consensus.

Per gated unit j, the running firing rate ``r_j`` (an EMA of ``mean_b g_bj``, kept by
each gate) gives the static mask ``m_j = 1[r_j >= threshold]``. Two guards make the
mask usable for surgery:

* ``min_channels`` (default 1): a channel gate keeps at least this many channels (the
  ones with the highest rates), so a layer cannot collapse;
* ``round_to`` (optional, e.g. 8): the number of kept channels of a channel gate is
  rounded up to a multiple of it (hardware-friendly widths). Rounding up adds FLOPs; the
  trainer's cut at the freeze (``settle="freeze"``) rounds *within* the budget instead
  (:func:`~consensus_tutorial.baselines.masks_for_flops` with ``round_to``).

Block gates (layer gating) are left as they are: closing a whole block is allowed.

The *disagreement rate* is the share of (sample, unit) decisions of the live gates that
differ from the mask: 0 means the dynamic gates already agree on one sub-network.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import torch
from torch import nn

from .gates import Gate

Masks = dict[str, torch.Tensor]


def gate_modules(model: nn.Module) -> dict[str, Gate]:
    """All gate modules of ``model`` by qualified name (e.g. ``"stages.0.1.gate"``), in order."""
    return {name: m for name, m in model.named_modules() if isinstance(m, Gate)}


def _require_gates(model: nn.Module) -> dict[str, Gate]:
    gates = gate_modules(model)
    if not gates:
        raise ValueError(
            "the model has no gate modules: build it with gating='layer' or gating='channel'."
        )
    return gates


def _top_units(rate: torch.Tensor, count: int) -> torch.Tensor:
    """Bool mask of the ``count`` units with the highest rates (ties: lower index first)."""
    order = sorted(range(rate.numel()), key=lambda j: (-float(rate[j]), j))
    mask = torch.zeros(rate.numel(), dtype=torch.bool)
    mask[order[:count]] = True
    return mask


def round_up_kept(count: int, gate: Gate, round_to: int | None) -> int:
    """``count`` kept units of ``gate`` rounded up to a multiple of ``round_to`` (at most all
    of its units); counts of layer gates, zero counts and ``round_to=None`` stay as they are."""
    if round_to is None or count == 0 or gate.unit != "channel":
        return count
    return min(gate.units, math.ceil(count / round_to) * round_to)


def consensus_masks(
    model: nn.Module,
    threshold: float = 0.5,
    *,
    min_channels: int = 1,
    round_to: int | None = None,
    min_share: float = 0.0,
) -> Masks:
    """Static masks ``m_j = 1[r_j >= threshold]`` from every gate's firing rate.

    Args:
        model: a gated model.
        threshold: firing-rate threshold in [0, 1].
        min_channels: fewest channels a channel gate keeps (0 allows a layer to close fully).
        round_to: round each channel gate's kept count up to a multiple of this.
        min_share: a channel gate keeps at least ``ceil(min_share * C)`` channels (a
            per-layer floor, as the trainer's ``min_keep``).

    Returns:
        A dict mapping each gate name to a bool tensor of shape (C,), on the CPU.
    """
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must lie in [0, 1]; got {threshold!r}.")
    if min_channels < 0:
        raise ValueError(f"min_channels must be >= 0; got {min_channels!r}.")
    if round_to is not None and round_to < 1:
        raise ValueError(f"round_to must be a positive integer or None; got {round_to!r}.")
    if not 0.0 <= min_share <= 1.0:
        raise ValueError(f"min_share must lie in [0, 1]; got {min_share!r}.")
    masks = {}
    for name, gate in _require_gates(model).items():
        rate = gate.firing_rate.detach().float().cpu()
        mask = rate >= threshold
        if gate.unit == "channel":
            floor = max(min_channels, math.ceil(min_share * gate.units - 1e-9))
            kept = round_up_kept(max(int(mask.sum()), min(floor, gate.units)), gate, round_to)
            if kept != int(mask.sum()):
                mask = _top_units(rate, kept)
        masks[name] = mask
    return masks


def _check_masks(gates: Mapping[str, Gate], masks: Mapping[str, torch.Tensor]) -> None:
    missing = [n for n in gates if n not in masks]
    unknown = [n for n in masks if n not in gates]
    if missing or unknown:
        raise ValueError(
            "masks must have one entry per gate module (see ct.gate_modules(model)); "
            f"missing: {missing[:4]}{'...' if len(missing) > 4 else ''}, "
            f"unknown: {unknown[:4]}{'...' if len(unknown) > 4 else ''}."
        )


def freeze_gates(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> nn.Module:
    """Make every gate return its constant mask (the gated model then computes the
    sub-network). Returns ``model`` for chaining."""
    gates = _require_gates(model)
    _check_masks(gates, masks)
    for name, gate in gates.items():
        gate.freeze(masks[name])
    return model


def unfreeze_gates(model: nn.Module) -> nn.Module:
    """Undo :func:`freeze_gates`: the gates decide from their inputs again."""
    for gate in gate_modules(model).values():
        gate.unfreeze()
    return model


def frozen_masks(model: nn.Module) -> Masks | None:
    """The masks of a model whose gates are all frozen; None if any gate is live."""
    gates = gate_modules(model)
    if not gates or not all(g.is_frozen for g in gates.values()):
        return None
    return {n: g.mask.detach().cpu().bool() for n, g in gates.items()}


class DisagreementCounter:
    """Counts, while installed, live gate decisions that differ from ``masks``.

    Use as a context manager around forward passes of a model whose gates are live::

        with DisagreementCounter(model, masks) as counter:
            model(x)
        counter.rate  # share of (sample, unit) decisions that differ from the masks
    """

    def __init__(self, model: nn.Module, masks: Mapping[str, torch.Tensor]):
        self.gates = _require_gates(model)
        _check_masks(self.gates, masks)
        if any(g.is_frozen for g in self.gates.values()):
            raise ValueError("counting disagreement needs live gates: call ct.unfreeze_gates(model) first.")
        self.masks = {n: torch.as_tensor(m).float() for n, m in masks.items()}
        self.differ = 0
        self.total = 0
        self._handles: list = []

    def _hook(self, name: str):
        def record(module, inputs, g):
            m = self.masks[name].to(device=g.device, dtype=g.dtype)
            self.differ += int((g.detach() != m).sum())
            self.total += g.numel()
        return record

    def __enter__(self) -> "DisagreementCounter":
        self._handles = [g.register_forward_hook(self._hook(n)) for n, g in self.gates.items()]
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    @property
    def rate(self) -> float:
        if self.total == 0:
            raise ValueError("no gate decisions were recorded: run forward passes inside the with-block.")
        return self.differ / self.total


@torch.no_grad()
def disagreement_rate(
    model: nn.Module, batches: Iterable[torch.Tensor | tuple], masks: Mapping[str, torch.Tensor]
) -> float:
    """Share of (sample, unit) live gate decisions that differ from ``masks``.

    Runs ``model`` in eval mode over ``batches`` (tensors, or tuples whose first item is
    the input) with the gates live, and compares each hard decision with the mask.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    try:
        with DisagreementCounter(model, masks) as counter:
            for batch in batches:
                x = batch[0] if isinstance(batch, (tuple, list)) else batch
                model(x.to(device))
    finally:
        model.train(was_training)
    return counter.rate
