"""The regularizers of the one-pass objective (the book's method chapter).

``pbar`` is a vector of per-unit firing probabilities, ``pbar_j = mean_b p_bj``, over
all gated units of a network (any shape; it is flattened). C is its number of entries.

Polarization (pushes every ``pbar_j`` to 0 or 1, where all inputs agree):

* bimodal:  ``R_pol = (1/C) sum_j pbar_j (1 - pbar_j)``
* zhuang:   ``R_pol = (1/C) (t ||pbar||_1 - ||pbar - mean(pbar)||_1)``  (Zhuang et al. 2020)

The Zhuang form is divided by C (our choice) so that its weight means the same for
every network size; this does not move its minimisers, which on [0, 1]^C keep a share
of about ``1/2 - t/4`` of the units at 1 and the rest at 0 (for ``|t| <= 2``).

Sparsity (a user-defined pruning rate ``rho``, keep ratio ``kappa = 1 - rho``)::

    R_sp = (sum_j w_j pbar_j / sum_j w_j - kappa)^2

with ``w_j = 1`` (share of units) or the FLOPs unit j costs (a FLOPs budget).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from ._checks import check_choice, check_rate

@dataclass(frozen=True)
class Polarizer:
    """One polarization penalty: ``penalty(p, t)`` maps the flat firing probabilities ``p``
    (shape (C,)) and the trade-off ``t`` (None when ``takes_t`` is False) to a scalar."""

    penalty: Callable[[torch.Tensor, float | None], torch.Tensor]
    takes_t: bool = False
    summary: str = ""


#: name -> polarizer; :func:`register_polarizer` adds one, and the objective, the toy
#: problems, ``TrainConfig`` and the command line (``--polarizer``) all read this table
POLARIZERS: dict[str, Polarizer] = {}


def register_polarizer(name: str, penalty: Callable[[torch.Tensor, float | None], torch.Tensor], *,
                       takes_t: bool = False, summary: str = "") -> Polarizer:
    """Make ``name`` a polarizer everywhere (``polarization(..., kind=name)``, ``--polarizer name``)."""
    if name in POLARIZERS:
        raise ValueError(f"a polarizer called {name!r} is already registered.")
    POLARIZERS[name] = Polarizer(penalty, takes_t, summary)
    return POLARIZERS[name]


def _bimodal(p: torch.Tensor, t: float | None) -> torch.Tensor:
    return (p * (1.0 - p)).mean()


def _zhuang(p: torch.Tensor, t: float | None) -> torch.Tensor:
    # pbar lies in [0, 1], so ||pbar||_1 = sum(pbar); written as a sum (not abs) so that a
    # unit sitting at 0 still feels the slope t (abs has a zero subgradient there).
    return (t * p.sum() - (p - p.mean()).abs().sum()) / p.numel()


register_polarizer("bimodal", _bimodal, summary="mean of p(1 - p)")
register_polarizer("zhuang", _zhuang, takes_t=True, summary="Zhuang et al. 2020, keeps about 1/2 - t/4")


def polarization(pbar: torch.Tensor, kind: str = "bimodal", t: float | None = None) -> torch.Tensor:
    """Polarization penalty of the firing probabilities ``pbar`` (scalar tensor).

    Args:
        pbar: firing probabilities in [0, 1], any shape (flattened to C entries).
        kind: a registered polarizer (``POLARIZERS``): "bimodal" (mean of p(1 - p)) or
            "zhuang" (needs ``t``), or one added with :func:`register_polarizer`.
        t: the trade-off of a polarizer that takes one (Zhuang: the minimisers keep about
            ``1/2 - t/4`` of units open).
    """
    check_choice("kind", kind, tuple(POLARIZERS))
    polarizer = POLARIZERS[kind]
    p = pbar.reshape(-1)
    if p.numel() == 0:
        raise ValueError("pbar is empty: the model has no gated units to polarize.")
    if not polarizer.takes_t and t is not None:
        raise ValueError(f"the {kind!r} polarizer takes no t; only {[n for n, q in POLARIZERS.items() if q.takes_t]} do.")
    if polarizer.takes_t and t is None:
        raise ValueError(f"the {kind!r} polarizer needs t (for zhuang, t=0 keeps about half the units).")
    return polarizer.penalty(p, t)


def keep_ratio(pbar: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """``sum_j w_j pbar_j / sum_j w_j``: the (FLOPs-)weighted share of units kept."""
    p = pbar.reshape(-1)
    if weights is None:
        return p.mean()
    w = torch.as_tensor(weights, dtype=p.dtype, device=p.device).reshape(-1)
    if w.shape != p.shape:
        raise ValueError(
            f"weights must have one entry per unit ({p.numel()}); got {w.numel()} entries."
        )
    if (w < 0).any() or w.sum() <= 0:
        raise ValueError("weights must be non-negative with a positive sum.")
    return (w * p).sum() / w.sum()


def sparsity_penalty(
    pbar: torch.Tensor, target_rate: float, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """``(keep_ratio(pbar, weights) - (1 - target_rate))^2`` as a scalar tensor.

    Args:
        pbar: firing probabilities (or hard gates passed through the STE), any shape.
        target_rate: the pruning rate rho in [0, 1) (0.5 removes half of the units or FLOPs).
        weights: optional per-unit weights (same number of entries as ``pbar``), e.g. the
            FLOPs each unit costs; ``None`` weighs every unit the same.
    """
    rate = check_rate("target_rate", target_rate)
    return (keep_ratio(pbar, weights) - (1.0 - rate)) ** 2
