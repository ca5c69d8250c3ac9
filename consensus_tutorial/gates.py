"""Binary gates with a straight-through estimator (STE).

A gated layer has ``C`` units (channels, or one unit for a whole residual block).
A gate module turns a feature map into a hard 0/1 decision per sample and unit::

    s = score(x)            shape (B, C)   logits
    p = sigma(s)            shape (B, C)   gate probabilities
    g = 1[p >= 0.5]         shape (B, C)   hard gates, used in the forward pass

and the backward pass treats ``g`` as if it were ``p`` (dg/dp = 1): the STE.

Two kinds of score (the book's method chapter):

* :class:`DynamicGate`: ``s = MLP_K(GAP(x))``, an input-dependent decision (K = 1 or 2);
* :class:`StaticGate`: ``s = theta``, one learnable logit per unit shared by all inputs.

Each gate keeps a running firing rate ``r_j`` (an exponential moving average of the
batch mean of ``g``), the quantity from which the consensus mask is read, and can be
*frozen* to a fixed 0/1 mask, after which it ignores its input.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ._checks import check_choice

GATE_KINDS = ("dynamic", "static")


class _StraightThroughBinarize(torch.autograd.Function):
    """Forward ``1[p >= threshold]``; backward passes the gradient through unchanged,
    or only where ``|logit(p)| <= clip`` when a clip is given."""

    @staticmethod
    def forward(ctx, p: torch.Tensor, threshold: float, clip: float | None) -> torch.Tensor:
        ctx.clip = clip
        if clip is not None:
            ctx.save_for_backward(p)
        return (p >= threshold).to(p.dtype)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        grad = grad_output
        if ctx.clip is not None:
            (p,) = ctx.saved_tensors
            logit = torch.logit(p, eps=1e-6)
            grad = grad * (logit.abs() <= ctx.clip).to(grad.dtype)
        return grad, None, None


def binarize(p: torch.Tensor, threshold: float = 0.5, clip: float | None = None) -> torch.Tensor:
    """Hard 0/1 gates with a straight-through gradient.

    Forward: ``g = 1[p >= threshold]`` (same shape and dtype as ``p``).
    Backward: ``dL/dp = dL/dg`` (identity STE); with ``clip`` set, the gradient is passed
    only where the logit ``|log(p / (1 - p))| <= clip`` and is zero where the gate is
    already saturated.

    Args:
        p: probabilities in [0, 1], any shape.
        threshold: the decision threshold.
        clip: optional logit magnitude beyond which no gradient passes.
    """
    if clip is not None and clip <= 0:
        raise ValueError(f"clip must be a positive logit magnitude or None; got {clip!r}.")
    return _StraightThroughBinarize.apply(p, threshold, clip)


def logit(p: float) -> float:
    """``log(p / (1 - p))``, the score that gives probability ``p``."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"a probability strictly between 0 and 1 is needed; got {p!r}.")
    return math.log(p / (1.0 - p))


class GateRecord:
    """What the live gates decided in one training-mode forward pass, for the objective.

    Pass one to a gated model, ``logits = model(x, record=record)``: every live gate in
    training mode adds its batch's probabilities ``p`` and hard gates ``g`` (both (B, C),
    on the autograd graph), in the order of the forward pass (the order of
    :func:`~consensus_tutorial.gate_modules`). The record belongs to whoever made it: no
    module keeps a reference, so the graph lives as long as the record does.
    """

    def __init__(self) -> None:
        self.gates: list[Gate] = []
        self.p: list[torch.Tensor] = []
        self.g: list[torch.Tensor] = []

    def add(self, gate: "Gate", p: torch.Tensor, g: torch.Tensor) -> None:
        self.gates.append(gate)
        self.p.append(p)
        self.g.append(g)

    def __len__(self) -> int:
        return len(self.gates)


class Gate(nn.Module):
    """Base class of the gate modules: STE binarization, firing rate, freezing.

    Subclasses implement ``scores``, mapping the feature map ``x`` of shape
    (B, C_in, H, W) to logits of shape (B, C) (or (C,) for input-independent scores).

    Buffers:
        firing_rate: (C,) exponential moving average of ``mean_b g_bj`` (starts at 1).
        mask: (C,) the 0/1 mask the gate returns once frozen.
        frozen: scalar bool.

    A training-mode forward given a :class:`GateRecord` adds the batch's probabilities and
    hard gates to it, for the regularizers of the training objective. ``unit`` says what
    one unit is: a "channel" or a "block" (a layer gate).
    """

    def __init__(self, units: int, *, unit: str = "channel", momentum: float = 0.9,
                 ste_clip: float | None = None):
        super().__init__()
        if units < 1:
            raise ValueError(f"a gate needs at least one unit; got units={units}.")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must lie in [0, 1); got {momentum!r}.")
        check_choice("unit", unit, ("channel", "block"))
        self.units, self.unit = units, unit
        self.momentum = momentum
        self.ste_clip = ste_clip
        self.register_buffer("firing_rate", torch.ones(units))
        self.register_buffer("mask", torch.ones(units))
        self.register_buffer("frozen", torch.tensor(False))
        # A Python copy of ``frozen``: reading the buffer in every forward pass would make
        # the CPU wait for the GPU. Kept in step by freeze/unfreeze and state_dict loads.
        self._is_frozen = False

    def scores(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def probabilities(self, x: torch.Tensor) -> torch.Tensor:
        """``p = sigma(scores(x))``, shape (B, C)."""
        s = self.scores(x)
        if s.dim() == 1:
            s = s.unsqueeze(0).expand(x.shape[0], -1)
        return torch.sigmoid(s)

    def forward(self, x: torch.Tensor, record: GateRecord | None = None) -> torch.Tensor:
        """Hard gates of shape (B, C) for the feature map ``x`` of shape (B, C_in, H, W);
        in training mode, added to ``record`` (with the probabilities) when one is given."""
        if self._is_frozen:
            return self.mask.to(x.dtype).unsqueeze(0).expand(x.shape[0], -1)
        p = self.probabilities(x)
        g = binarize(p, clip=self.ste_clip)
        if self.training:
            if record is not None:
                record.add(self, p, g)
            with torch.no_grad():
                batch_rate = g.detach().float().mean(0)
                self.firing_rate.mul_(self.momentum).add_(batch_rate, alpha=1.0 - self.momentum)
        return g

    def freeze(self, mask: torch.Tensor) -> None:
        """Make the gate return the constant 0/1 ``mask`` (shape (C,)) for every input."""
        mask = torch.as_tensor(mask)
        if mask.shape != (self.units,):
            raise ValueError(
                f"mask for a gate with {self.units} units must have shape ({self.units},); "
                f"got {tuple(mask.shape)}."
            )
        self.mask.copy_(mask.to(self.mask.dtype) != 0)
        self.frozen.fill_(True)
        self._is_frozen = True

    def unfreeze(self) -> None:
        """Let the gate decide from its input again."""
        self.frozen.fill_(False)
        self._is_frozen = False

    def input_parameters(self) -> list[nn.Parameter]:
        """The parameters that make the decision depend on the input (none for a static
        gate); the trainer may give them a smaller learning rate than the per-unit logits."""
        return []

    def extra_repr(self) -> str:
        return f"units={self.units}, frozen={self._is_frozen}"

    @property
    def is_frozen(self) -> bool:
        """True when the gate returns its constant mask."""
        return self._is_frozen

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._is_frozen = bool(self.frozen)


class DynamicGate(Gate):
    """Input-dependent gate ``s = MLP_K(GAP(x))``.

    K = 1: one linear layer C_in -> C. K = 2: linear C_in -> hidden, ReLU, linear hidden -> C.
    The last layer's bias starts at ``logit(init_prob)`` and its weights near zero, so
    every gate starts open with probability about ``init_prob``.
    """

    def __init__(
        self,
        in_channels: int,
        units: int,
        *,
        depth: int = 1,
        hidden: int | None = None,
        init_prob: float = 0.9,
        **kwargs,
    ):
        super().__init__(units, **kwargs)
        check_choice("gate_depth", depth, (1, 2))
        if depth == 1:
            self.mlp = nn.Sequential(nn.Linear(in_channels, units))
        else:
            hidden = hidden or max(8, in_channels // 4)
            self.mlp = nn.Sequential(
                nn.Linear(in_channels, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, units)
            )
        last = self.mlp[-1]
        nn.init.normal_(last.weight, std=0.01)
        nn.init.constant_(last.bias, logit(init_prob))

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, H, W) -> (B, C) logits."""
        return self.mlp(x.mean(dim=(2, 3)))

    def input_parameters(self) -> list[nn.Parameter]:
        """Every MLP parameter but the last layer's bias (the per-unit part of the logit)."""
        last_bias = self.mlp[-1].bias
        return [p for p in self.mlp.parameters() if p is not last_bias]


class StaticGate(Gate):
    """Input-independent gate ``s = theta``: one learnable logit per unit."""

    def __init__(self, units: int, *, init_prob: float = 0.9, **kwargs):
        super().__init__(units, **kwargs)
        self.theta = nn.Parameter(torch.full((units,), logit(init_prob)))

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        """Returns the (C,) logits; ``probabilities`` broadcasts them over the batch."""
        return self.theta


def make_gate(kind: str, in_channels: int, units: int, *, depth: int = 1, **kwargs) -> Gate:
    """Build a gate of ``kind`` ("dynamic" or "static") over ``units`` units."""
    check_choice("gate", kind, GATE_KINDS)
    if kind == "dynamic":
        return DynamicGate(in_channels, units, depth=depth, **kwargs)
    return StaticGate(units, **kwargs)
