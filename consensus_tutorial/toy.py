"""Toy problems that show how gates move, fast and exactly (no data, no network).

Two toys, both built from the package's own pieces (:func:`~consensus_tutorial.binarize`,
:func:`~consensus_tutorial.polarization`, :func:`~consensus_tutorial.sparsity_penalty`):

* :func:`one_gate`: a single static gate in front of one unit whose output is ``w``
  while the loss wants ``a``. The task loss ``(g w - a)^2`` sees only the hard gate
  ``g = 1[p >= 0.5]``; its gradient reaches the logit through the straight-through
  estimator (STE). It shows *why* a hard gate can learn at all, and where it stops.
* :func:`simulate`: ``C`` static gates (one logit per unit, ``p = sigma(theta)``) under::

      L = lambda_pol * R_pol(p) + lambda_sp * R_sp(keep, target_rate) - lambda_task * mean_j(u_j g_j)

  where ``keep`` is the hard gates ``g`` (through the STE, as in the trainer) or the soft
  ``p``, and the optional last term is a stand-in for the task loss: opening unit j is
  worth ``u_j`` (its "usefulness"), with optional Gaussian noise per step standing in for
  mini-batch noise. With a single static gate per unit the batch mean ``pbar`` is ``p``.

The update is plain gradient descent on the logits by default (``optimizer="gd"``), the
cleanest view of the forces: the regularizers average over units, so the step is scaled
by ``C`` (a unit's step does not shrink as units are added). ``optimizer="adam"`` is the
trainer's choice for gate parameters; Adam rescales every gradient to about ``lr`` per
step, which hides how weak a force is (only an exactly-zero gradient stays zero).

Results come back as :class:`ToyRun` objects holding the whole trajectory.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ._checks import check_choice, check_rate
from .gates import binarize
from .regularizers import POLARIZERS, polarization, sparsity_penalty

INITS = ("spread", "open", "uniform", "half")
OPTIMIZERS = ("gd", "adam")
DEFAULT_LR = {"gd": 0.3, "adam": 0.05}


@dataclass
class ToyRun:
    """The trajectory of a toy run.

    Attributes:
        p: (steps + 1, C) gate probabilities, row 0 the start, row s after s updates.
        terms: loss terms per step, each an array of shape (steps + 1,), evaluated at
            the probabilities of that row (e.g. "loss", "polarization", "sparsity", "task").
        settings: the arguments of the run.
    """

    p: np.ndarray
    terms: dict[str, np.ndarray] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def steps(self) -> np.ndarray:
        """Step numbers 0 ... steps, shape (steps + 1,)."""
        return np.arange(self.p.shape[0])

    @property
    def units(self) -> int:
        return int(self.p.shape[1])

    @property
    def final(self) -> np.ndarray:
        """(C,) probabilities after the last step."""
        return self.p[-1]

    @property
    def gates(self) -> np.ndarray:
        """(steps + 1, C) hard gates ``1[p >= 0.5]``."""
        return (self.p >= 0.5).astype(np.float64)

    def kept_share(self, step: int = -1) -> float:
        """Share of units whose hard gate is open (``p >= 0.5``) at ``step`` (default: the end)."""
        return float((self.p[step] >= 0.5).mean())

    def kept_over_steps(self) -> np.ndarray:
        """(steps + 1,) share of open hard gates after each step."""
        return (self.p >= 0.5).mean(axis=1)

    def undecided_share(self, step: int = -1, margin: float = 0.1) -> float:
        """Share of units not yet at a pole: ``margin < p < 1 - margin``."""
        p = self.p[step]
        return float(((p > margin) & (p < 1.0 - margin)).mean())

    def __repr__(self) -> str:
        return (f"ToyRun(units={self.units}, steps={self.p.shape[0] - 1}, "
                f"kept_share={self.kept_share():.3f}, undecided={self.undecided_share():.3f})")


# ----------------------------------------------------------------------------- starts


def initial_probs(units: int, init: str | Sequence[float] = "spread", seed: int = 0) -> torch.Tensor:
    """Starting gate probabilities, float64 of shape (units,).

    * "spread": evenly spaced over [0.05, 0.95] (every region of (0, 1) is visited);
    * "open": about 0.9 with a little noise (logit 2.2 +- 0.3), the trainer's start;
    * "uniform": uniform random in [0.02, 0.98];
    * "half": 0.5 plus tiny noise (+-0.01), gates parked at the threshold;
    * or an explicit sequence of probabilities strictly between 0 and 1.
    """
    if units < 1:
        raise ValueError(f"units must be a positive integer; got {units!r}.")
    g = torch.Generator().manual_seed(int(seed))
    if not isinstance(init, str):
        p = torch.as_tensor(np.asarray(init, dtype=np.float64))
        if p.shape != (units,):
            raise ValueError(f"init needs one probability per unit ({units}); got shape {tuple(p.shape)}.")
        if ((p <= 0) | (p >= 1)).any():
            raise ValueError("init probabilities must lie strictly between 0 and 1.")
        return p.clone()
    check_choice("init", init, INITS)
    if init == "spread":
        return torch.linspace(0.05, 0.95, units, dtype=torch.float64)
    if init == "open":
        return torch.sigmoid(2.2 + 0.3 * torch.randn(units, generator=g, dtype=torch.float64))
    if init == "uniform":
        return 0.02 + 0.96 * torch.rand(units, generator=g, dtype=torch.float64)
    return 0.5 + 0.02 * (torch.rand(units, generator=g, dtype=torch.float64) - 0.5)


def _step_fn(theta: torch.Tensor, optimizer: str, lr: float, scale: float):
    if optimizer == "adam":
        opt = torch.optim.Adam([theta], lr=lr)

        def step() -> None:
            opt.step()
            opt.zero_grad(set_to_none=True)
        return step

    def step() -> None:
        with torch.no_grad():
            theta.sub_(lr * scale * theta.grad)
        theta.grad = None
    return step


def _checked_lr(polarizer: str, t: float | None, sparsity_on: str, optimizer: str, target_rate: float,
                steps: int, noise: float, lr: float | None) -> float:
    """Validate the settings of :func:`simulate`; return the learning rate to use."""
    check_choice("polarizer", polarizer, tuple(POLARIZERS))
    check_choice("sparsity_on", sparsity_on, ("hard", "soft"))
    check_choice("optimizer", optimizer, OPTIMIZERS)
    check_rate("target_rate", target_rate)
    if POLARIZERS[polarizer].takes_t and t is None:
        raise ValueError(f"the {polarizer!r} polarizer needs t (for example t=0.0).")
    if steps < 0:
        raise ValueError(f"steps must be >= 0; got {steps!r}.")
    if noise < 0:
        raise ValueError(f"noise must be >= 0; got {noise!r}.")
    lr = DEFAULT_LR[optimizer] if lr is None else float(lr)
    if lr <= 0:
        raise ValueError(f"lr must be positive; got {lr!r}.")
    return lr


def _usefulness_values(usefulness: Sequence[float] | None, units: int) -> torch.Tensor:
    """The (units,) float64 usefulness u: the given values, or evenly spaced in [-1, 1]."""
    if usefulness is None:
        return torch.linspace(-1.0, 1.0, units, dtype=torch.float64)
    u = torch.as_tensor(np.asarray(usefulness, dtype=np.float64))
    if u.shape != (units,):
        raise ValueError(f"usefulness needs one value per unit ({units}); got shape {tuple(u.shape)}.")
    return u


def _simulation_start(units: int, init: str | Sequence[float], usefulness: Sequence[float] | None,
                      optimizer: str, lr: float, seed: int
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Generator, Callable[[], None]]:
    """The starting logits (requiring grad), the usefulness, the noise generator and the
    update step of :func:`simulate`."""
    p0 = initial_probs(units, init, seed)
    u = _usefulness_values(usefulness, units)
    gen = torch.Generator().manual_seed(int(seed) + 1)
    theta = torch.logit(p0).clone().requires_grad_(True)
    step = _step_fn(theta, optimizer, lr, float(units))
    return theta, u, gen, step


def _loss_terms(p: torch.Tensor, *, u: torch.Tensor, noise: float, gen: torch.Generator, polarizer: str,
                pol_t: float | None, sparsity_on: str, target_rate: float, lambda_pol: float,
                lambda_sp: float, lambda_task: float) -> tuple[torch.Tensor, ...]:
    """The loss of :func:`simulate` and its terms (loss, polarization, sparsity, task) at
    probabilities ``p``; draws this step's usefulness noise from ``gen``."""
    g = binarize(p)
    r_pol = polarization(p, polarizer, pol_t)
    r_sp = sparsity_penalty(g if sparsity_on == "hard" else p, target_rate)
    u_now = u if noise == 0 else u + noise * torch.randn(len(u), generator=gen, dtype=torch.float64)
    task = -(u_now * g).mean()
    loss = lambda_pol * r_pol + lambda_sp * r_sp + lambda_task * task
    return loss, r_pol, r_sp, task


def _descend(theta: torch.Tensor, step: Callable[[], None], steps: int,
             evaluate: Callable[[torch.Tensor], tuple[torch.Tensor, ...]], names: tuple[str, ...]
             ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Run ``steps`` updates of the logits ``theta`` on the first value of ``evaluate(p)``;
    return the probabilities (steps + 1, C) and every value of ``evaluate`` per step."""
    ps = np.empty((steps + 1, theta.shape[0]))
    terms = {k: np.empty(steps + 1) for k in names}
    for s in range(steps + 1):
        p = torch.sigmoid(theta)
        values = evaluate(p)
        ps[s] = p.detach().numpy()
        for k, v in zip(names, values):
            terms[k][s] = float(v.detach())
        if s == steps:
            break
        values[0].backward()
        step()
    return ps, terms


# ----------------------------------------------------------------------------- many gates


def simulate(
    units: int = 32,
    steps: int = 300,
    *,
    polarizer: str = "bimodal",
    t: float | None = None,
    lambda_pol: float = 1.0,
    lambda_sp: float = 0.0,
    target_rate: float = 0.5,
    sparsity_on: str = "hard",
    usefulness: Sequence[float] | None = None,
    lambda_task: float = 0.0,
    noise: float = 0.0,
    init: str | Sequence[float] = "spread",
    optimizer: str = "gd",
    lr: float | None = None,
    seed: int = 0,
) -> ToyRun:
    """Optimise ``units`` static gate logits under the polarizer, the sparsity target and an
    optional usefulness term; return the trajectory of the probabilities.

    Args:
        units: C, the number of gates.
        steps: number of updates.
        polarizer: "bimodal" (mean of p(1 - p)) or "zhuang" (needs ``t``).
        t: Zhuang's trade-off; its global minimisers keep about ``1/2 - t/4`` of the units.
        lambda_pol: weight of the polarizer (0 switches it off).
        lambda_sp: weight of the sparsity penalty (0 switches it off).
        target_rate: the pruning rate rho; the penalty pulls the keep ratio to ``1 - rho``.
        sparsity_on: "hard" (keep ratio of the hard gates, gradient through the STE, as the
            trainer does by default) or "soft" (keep ratio of ``p``).
        usefulness: (C,) value u_j of opening unit j (a stand-in for the task loss);
            default: evenly spaced in [-1, 1] when ``lambda_task > 0``.
        lambda_task: weight of the usefulness term ``-mean_j(u_j g_j)`` (hard gates, STE).
        noise: standard deviation of Gaussian noise added to ``u`` at every step (a
            stand-in for mini-batch noise); 0 for exact dynamics.
        init: starting probabilities, see :func:`initial_probs`.
        optimizer: "gd" (gradient descent, step ``lr * C * grad``) or "adam" (steps of about ``lr``).
        lr: learning rate; default 0.3 for "gd", 0.05 for "adam".
        seed: seed of the start ("open", "uniform", "half") and of the noise.

    Returns:
        A :class:`ToyRun` with ``p`` of shape (steps + 1, C) and the terms "loss",
        "polarization", "sparsity", "task" per step.
    """
    lr = _checked_lr(polarizer, t, sparsity_on, optimizer, target_rate, steps, noise, lr)
    settings = dict(units=units, steps=steps, polarizer=polarizer, t=t, lambda_pol=lambda_pol,
                    lambda_sp=lambda_sp, target_rate=target_rate, sparsity_on=sparsity_on,
                    lambda_task=lambda_task, noise=noise, init=init if isinstance(init, str) else "custom",
                    optimizer=optimizer, lr=lr, seed=seed)
    theta, u, gen, step = _simulation_start(units, init, usefulness, optimizer, lr, seed)
    settings["usefulness"] = u.tolist()
    evaluate = functools.partial(
        _loss_terms, u=u, noise=noise, gen=gen, polarizer=polarizer,
        pol_t=t if POLARIZERS[polarizer].takes_t else None, sparsity_on=sparsity_on,
        target_rate=target_rate, lambda_pol=lambda_pol, lambda_sp=lambda_sp, lambda_task=lambda_task)
    ps, terms = _descend(theta, step, steps, evaluate, ("loss", "polarization", "sparsity", "task"))
    return ToyRun(ps, terms, settings)


def sweep(name: str, values: Sequence[Any], **kwargs) -> dict[Any, ToyRun]:
    """Run :func:`simulate` once per value of the argument ``name``, the others as ``kwargs``.

    Example: ``sweep("t", [0.0, 0.8, 1.6], polarizer="zhuang")``.
    """
    return {v: simulate(**{**kwargs, name: v}) for v in values}


def zhuang_minimiser_share(t: float, units: int = 1000) -> float:
    """Share of units at 1 in the global minimiser of the Zhuang polarizer on [0, 1]^C.

    The polarizer is concave in ``p``, so its minimum over the cube lies at a 0/1 vertex,
    and by symmetry only the number k of ones matters: this evaluates the package's
    :func:`~consensus_tutorial.polarization` at one vertex per k and returns the best k / C
    (about ``1/2 - t/4`` for ``|t| <= 2``; the smallest k wins ties).
    """
    if units < 1:
        raise ValueError(f"units must be a positive integer; got {units!r}.")
    values = []
    for k in range(units + 1):
        p = torch.zeros(units, dtype=torch.float64)
        p[:k] = 1.0
        values.append(float(polarization(p, "zhuang", t)))
    return int(np.argmin(values)) / units


# ----------------------------------------------------------------------------- one gate


def one_gate(
    output: float = 1.0,
    target: float = 1.0,
    *,
    init_prob: float = 0.3,
    steps: int = 120,
    lr: float = 0.5,
    cost: float = 0.0,
    lambda_pol: float = 0.0,
    clip: float | None = None,
    noise: float = 0.0,
    seed: int = 0,
) -> ToyRun:
    """A single static gate ``p = sigma(theta)`` in front of one unit, trained by gradient
    descent through the STE.

    The unit outputs ``output`` (w) when its gate is open and 0 when closed; the loss wants
    ``target`` (a)::

        L = (g * w - a)^2 + cost * g + lambda_pol * p (1 - p),      g = binarize(p, clip=clip)

    The forward pass sees only the hard gate g; the STE hands ``dL/dg`` to p unchanged, and
    ``dp/dtheta = p (1 - p)`` carries it to the logit. ``noise`` adds Gaussian noise of that
    standard deviation to the target at every step (a mini-batch stand-in).

    Returns:
        A :class:`ToyRun` with ``p`` of shape (steps + 1, 1) and the terms "loss", "task",
        "polarization", "grad_g" (``dL/dg`` at each step) and "grad_p" (``dL/dp``: what the
        STE passes on, plus the polarizer's own gradient).
    """
    if not 0.0 < init_prob < 1.0:
        raise ValueError(f"init_prob must lie strictly between 0 and 1; got {init_prob!r}.")
    if steps < 0 or lr <= 0:
        raise ValueError(f"steps must be >= 0 and lr positive; got {steps!r}, {lr!r}.")
    gen = torch.Generator().manual_seed(int(seed))
    theta = torch.logit(torch.tensor([init_prob], dtype=torch.float64)).requires_grad_(True)
    ps = np.empty((steps + 1, 1))
    names = ("loss", "task", "polarization", "grad_g", "grad_p")
    terms = {k: np.empty(steps + 1) for k in names}
    for s in range(steps + 1):
        p = torch.sigmoid(theta)
        p.retain_grad()
        g = binarize(p, clip=clip)
        g.retain_grad()
        a = target + (noise * float(torch.randn((), generator=gen, dtype=torch.float64)) if noise else 0.0)
        task = (g * output - a).pow(2).sum() + cost * g.sum()
        r_pol = polarization(p, "bimodal")
        loss = task + lambda_pol * r_pol
        loss.backward()
        ps[s] = p.detach().numpy()
        for k, v in zip(names, (loss, task, r_pol, g.grad.sum(), p.grad.sum())):
            terms[k][s] = float(v.detach())
        with torch.no_grad():
            theta.sub_(lr * theta.grad)
        theta.grad = None
    settings = dict(output=output, target=target, init_prob=init_prob, steps=steps, lr=lr, cost=cost,
                    lambda_pol=lambda_pol, clip=clip, noise=noise, seed=seed)
    return ToyRun(ps, terms, settings)
