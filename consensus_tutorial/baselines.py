"""Baselines for the comparison chapters, run by the same training loop.

Every method trains the same ResNet and ends, through the same surgery, as a physically
smaller network measured the same way:

* ``consensus``: this package's method (live gates, STE, polarizer, sparsity target);
* ``dense``: no gates, no pruning;
* ``dropout``: channel dropout at rate ``target_rate`` after bn1 + relu of every block
  (position b); it regularizes but removes no FLOPs;
* ``random``: channels at position b chosen at random before training, the same share in
  every layer, to meet the FLOPs target; then trained as that smaller network. With
  ``widths_from`` (a run folder), each layer instead keeps as many random channels as
  that run kept: the control that separates *how many* channels a method keeps per layer
  from *which* ones;
* ``l1``: dense training for a ``prune_at`` share of the epochs, then one-shot pruning of
  conv1's filters with the smallest L1 norms (the same share in every layer, Li et al.
  2017) to the FLOPs target, then fine-tuning for the remaining epochs;
* ``bn-polarization``: Zhuang et al. 2020: the polarizer on bn1's scaling factors
  (clamped to [0, 1]) during the first ``prune_at`` share of the epochs, then the
  channels with the smallest factors network-wide are pruned to the FLOPs target, then
  fine-tuning.

The pruned baselines use a channel-gated model at position b with *frozen* gates: the
gate is only the mask that the surgery reads.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .consensus import freeze_gates, gate_modules, round_up_kept
from .costs import CostModel, flops_cost
from .models import ResNet
from .regularizers import polarization


def masks_for_flops(
    model: ResNet,
    scores: Mapping[str, torch.Tensor],
    target_rate: float,
    *,
    uniform: bool = True,
    min_channels: int | Mapping[str, int] = 1,
    cost: CostModel | None = None,
    round_to: int | None = None,
) -> dict[str, torch.Tensor]:
    """Masks that keep the highest-scoring units and remove about ``target_rate`` of the
    whole network's FLOPs (the largest kept set whose FLOPs stay within the budget), or of
    another ``cost`` (a :class:`~consensus_tutorial.costs.CostModel` of ``model``).

    Args:
        scores: {gate name: (C,) scores}; a higher score is kept first.
        uniform: keep the same share of units in every gate (True), or rank all units
            network-wide (False).
        min_channels: fewest units a gate keeps (one number, or one per gate name).
        round_to: round every channel gate's kept count up to a multiple of this (or to
            all its channels) *before* the budget is checked, so that the rounded masks
            still meet it (the search then keeps fewer units elsewhere).
    """
    gates = gate_modules(model)
    cost = cost or flops_cost(model)
    floor = min_channels if isinstance(min_channels, Mapping) else {n: min_channels for n in gates}
    budget = (1.0 - target_rate) * cost.dense(model)
    order = {n: torch.argsort(scores[n].float().cpu(), descending=True, stable=True) for n in gates}

    def keep_counts(level: float) -> dict[str, int]:
        if uniform:
            return {n: round_up_kept(max(floor[n], round(level * g.units)), g, round_to) for n, g in gates.items()}
        # network-wide ranking by position, so that tied scores cannot all pass one cut
        flat = torch.cat([scores[n].float().cpu() for n in gates])
        k = max(1, round(level * flat.numel()))
        top = torch.zeros(flat.numel(), dtype=torch.bool)
        top[torch.argsort(flat, descending=True, stable=True)[:k]] = True
        per_gate = torch.split(top, [gates[n].units for n in gates])
        return {n: round_up_kept(max(floor[n], int(t.sum())), gates[n], round_to) for n, t in zip(gates, per_gate)}

    def masks_at(level: float) -> dict[str, torch.Tensor]:
        masks = {}
        for n, k in keep_counts(level).items():
            m = torch.zeros(gates[n].units, dtype=torch.bool)
            m[order[n][:k]] = True
            masks[n] = m
        return masks

    lo, hi = 0.0, 1.0
    for _ in range(30):  # bisection on the kept share
        mid = (lo + hi) / 2
        if cost.total(masks_at(mid)) <= budget:
            lo = mid
        else:
            hi = mid
    return masks_at(lo)


def read_widths(run_dir: str | Path) -> dict[str, int]:
    """The kept units per gate that the run in ``run_dir`` recorded (its ``metrics.json``)."""
    path = Path(run_dir) / "metrics.json"
    try:
        widths = json.loads(path.read_text())["kept_units"]
    except FileNotFoundError:
        raise FileNotFoundError(f"widths_from: no metrics.json in {run_dir}; name a finished run folder.") from None
    except (json.JSONDecodeError, KeyError, TypeError):
        raise ValueError(f"widths_from: {path} is not a run's metrics.json with kept_units.") from None
    if not isinstance(widths, dict) or not widths:
        raise ValueError(f"widths_from: {path} records no kept units (a dense run?); name a pruned run.")
    return {str(n): int(k) for n, k in widths.items()}


def masks_with_widths(model: ResNet, scores: Mapping[str, torch.Tensor],
                      widths: Mapping[str, int]) -> dict[str, torch.Tensor]:
    """Masks that keep, in every gate, the ``widths[name]`` highest-scoring units."""
    gates = gate_modules(model)
    if set(widths) != set(gates) or any(not 0 <= widths[n] <= g.units for n, g in gates.items()):
        raise ValueError(
            "widths_from: the run's kept_units do not fit this model (its gates: "
            f"{ {n: g.units for n, g in gates.items()} }); use a run of the same arch and position b."
        )
    masks = {}
    for name, gate in gates.items():
        order = torch.argsort(scores[name].float().cpu(), descending=True, stable=True)
        masks[name] = torch.zeros(gate.units, dtype=torch.bool)
        masks[name][order[: widths[name]]] = True
    return masks


def l1_scores(model: ResNet) -> dict[str, torch.Tensor]:
    """L1 norm of each conv1 filter of every block: the scores of the ``l1`` baseline."""
    return {f"{name}.gate": block.conv1.weight.detach().abs().sum(dim=(1, 2, 3))
            for name, block in model.blocks() if block.gate is not None}


def bn_scores(model: ResNet) -> dict[str, torch.Tensor]:
    """|gamma| of bn1 in every block: the scores of the ``bn-polarization`` baseline."""
    return {f"{name}.gate": block.bn1.weight.detach().abs()
            for name, block in model.blocks() if block.gate is not None}


class MethodHooks:
    """What a method adds to the training loop of :func:`~consensus_tutorial.training.fit`.
    The default (``consensus`` and ``dense``) adds nothing."""

    def __init__(self, config):
        self.config = config

    def setup(self, model: ResNet) -> None:
        """Called on every start, fresh or resumed (e.g. to register forward hooks)."""

    def on_start(self, model: ResNet) -> None:
        """Called once at the start of a fresh run."""

    def on_epoch_start(self, model: ResNet, epoch: int) -> None:
        """Called before epoch ``epoch`` (0-based)."""

    def extra_loss(self, model: ResNet) -> torch.Tensor | float:
        return 0.0

    def after_step(self, model: ResNet) -> None:
        """Called after every optimizer step."""

    def gated(self, model: ResNet) -> bool:
        """True when the gates are live and the one-pass objective applies."""
        gates = gate_modules(model)
        return bool(gates) and not all(g.is_frozen for g in gates.values())

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class DropoutHooks(MethodHooks):
    def setup(self, model: ResNet) -> None:
        rate = self.config.target_rate

        def drop(module: nn.Module, inputs, output: torch.Tensor) -> torch.Tensor:
            # dropout2d before the relu equals dropout2d after it (the scale is positive)
            return F.dropout2d(output, rate, module.training)

        for _, block in model.blocks():
            block.bn1.register_forward_hook(drop)


class PruneAtHooks(MethodHooks):
    """Frozen masks chosen at epoch ``round(prune_at * epochs)`` (0 for ``random``)."""

    def __init__(self, config, score: Callable[[ResNet], dict], uniform: bool, at_start: bool):
        super().__init__(config)
        self.score, self.uniform, self.at_start = score, uniform, at_start

    def on_start(self, model: ResNet) -> None:
        gates = gate_modules(model)
        if self.at_start:
            self._prune(model)
        else:
            freeze_gates(model, {n: torch.ones(g.units, dtype=torch.bool) for n, g in gates.items()})

    def prune_epoch(self) -> int:
        epochs = self.config.epochs
        return 0 if self.at_start else min(epochs - 1, max(1, round(self.config.prune_at * epochs)))

    def on_epoch_start(self, model: ResNet, epoch: int) -> None:
        if not self.at_start and epoch == self.prune_epoch():
            self._prune(model)

    def _prune(self, model: ResNet) -> None:
        if self.config.widths_from:
            masks = masks_with_widths(model, self.score(model), read_widths(self.config.widths_from))
        else:
            masks = masks_for_flops(model, self.score(model), self.config.target_rate,
                                    uniform=self.uniform, min_channels=max(1, self.config.min_channels),
                                    round_to=self.config.round_to)
        freeze_gates(model, masks)


class BNPolarizationHooks(PruneAtHooks):
    def __init__(self, config):
        super().__init__(config, bn_scores, uniform=False, at_start=False)
        self.t = 1.2 if config.zhuang_t is None else config.zhuang_t

    def extra_loss(self, model: ResNet):
        if self._pruned(model):
            return 0.0
        gammas = torch.cat([block.bn1.weight for _, block in model.blocks()])
        return self.config.bn_lambda * gammas.numel() * polarization(gammas, "zhuang", self.t)

    def after_step(self, model: ResNet) -> None:
        if not self._pruned(model):
            with torch.no_grad():
                for _, block in model.blocks():
                    block.bn1.weight.clamp_(0.0, 1.0)

    def _pruned(self, model: ResNet) -> bool:
        return any(not bool(g.mask.all()) for g in gate_modules(model).values())


@dataclass(frozen=True)
class Method:
    """One method the training loop can run.

    Attributes:
        hooks: ``config -> MethodHooks``, what the method adds to the loop.
        model: the gating settings its model is built with, over the config's (``{}``:
            the config's own; ``{"gating": None}``: a dense model).
        min_epochs: the fewest epochs it can run (a method that prunes during training
            and fine-tunes afterwards needs 2).
        summary: one line for ``--help`` and the book.
    """

    hooks: Callable[[Any], MethodHooks]
    model: Mapping[str, Any] = field(default_factory=dict)
    min_epochs: int = 1
    summary: str = ""


#: name -> method; :func:`register_method` adds one, and ``TrainConfig``, the training
#: loop and the command line (``--method``) all read this table
METHODS: dict[str, Method] = {}


def register_method(name: str, hooks: Callable[[Any], MethodHooks], *, model: Mapping[str, Any] | None = None,
                    min_epochs: int = 1, summary: str = "") -> Method:
    """Make ``name`` a method everywhere (``TrainConfig(method=name)``, ``--method name``)."""
    if name in METHODS:
        raise ValueError(f"a method called {name!r} is already registered.")
    METHODS[name] = Method(hooks, dict(model or {}), min_epochs, summary)
    return METHODS[name]


def _random_hooks(config) -> PruneAtHooks:
    generator = torch.Generator().manual_seed(config.seed)
    return PruneAtHooks(
        config, lambda m: {n: torch.rand(g.units, generator=generator) for n, g in gate_modules(m).items()},
        uniform=True, at_start=True)


#: the model of the pruned baselines: frozen static gates at position b, read by the surgery
_MASKED_B = {"gating": "channel", "position": "b", "gate": "static"}

register_method("consensus", MethodHooks, summary="live gates, STE, polarizer and sparsity target (this package)")
register_method("dense", MethodHooks, model={"gating": None}, summary="no gates, no pruning")
register_method("dropout", DropoutHooks, model={"gating": None}, summary="channel dropout at position b")
register_method("random", _random_hooks, model=_MASKED_B, summary="random channels, fixed before training")
register_method("l1", lambda config: PruneAtHooks(config, l1_scores, uniform=True, at_start=False),
                model=_MASKED_B, min_epochs=2, summary="smallest L1 norms pruned after prune_at, then fine-tuning")
register_method("bn-polarization", BNPolarizationHooks, model=_MASKED_B, min_epochs=2,
                summary="Zhuang et al. 2020 on the BN scales, pruned after prune_at, then fine-tuning")


def method_hooks(config) -> MethodHooks:
    """The hooks of ``config.method`` (a name in ``METHODS``)."""
    return METHODS[config.method].hooks(config)


def method_model_settings(method: str) -> dict:
    """Gating a method's model is built with (the consensus method keeps the config's)."""
    return dict(METHODS[method].model)
