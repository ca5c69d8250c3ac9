"""Automatic checks of the course assignments, usable inside and outside a notebook.

Each ``check_*`` function calls the student's code on cases whose answers are known,
and either

* passes: prints ``CHECK <name>: PASS <what was verified>`` and returns a
  :class:`CheckResult`, or
* fails: prints ``CHECK <name>: FAIL <message>`` and raises
  :class:`AssignmentCheckError` (a subclass of ``AssertionError``) whose message says
  what was expected, what came back, and a hint.

Every outcome is also appended, as one JSON object per line, to the file named by the
environment variable ``CONSENSUS_ASSIGNMENT_RESULTS`` when it is set: the batch grader
(``python -m consensus_tutorial.assignments grade``) sets it for each notebook it runs
and reads the file back, so it does not depend on parsing printed output (which it
still falls back to).

The checks know the typical wrong answers (a zero or sigmoid-shaped STE gradient, a
soft forward pass, a polarizer with the wrong sign or a sum for a mean, a keep ratio
confused with the pruning rate, a cut that drops the wrong channels, a choice over the
FLOPs budget ...) and name them in the hint.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

if TYPE_CHECKING:
    from ..gates import Gate

RESULTS_ENV = "CONSENSUS_ASSIGNMENT_RESULTS"
GAP_HINT = 'fill in every gap marked `raise NotImplementedError("write your solution here")`'


class AssignmentCheckError(AssertionError):
    """A check failed. ``str(error)`` says what was expected, what came back, and a hint.

    Attributes: check (name), problem, expected, got, hint.
    """

    def __init__(self, check: str, problem: str, *, expected: Any, got: Any, hint: str):
        self.check, self.problem, self.expected, self.got, self.hint = check, problem, expected, got, hint
        super().__init__(
            f"[{check}] {problem}\n  expected: {expected}\n  got:      {got}\n  hint:     {hint}"
        )


@dataclass(frozen=True)
class CheckResult:
    """The outcome of a check that passed (a failed one raises instead)."""

    name: str
    passed: bool
    message: str = ""

    def __bool__(self) -> bool:
        return self.passed

    def __str__(self) -> str:
        return result_line(self.name, self.passed, self.message)


def result_line(name: str, passed: bool, message: str = "") -> str:
    """``CHECK <name>: PASS|FAIL <message on one line>``: the line the grader parses."""
    text = " | ".join(line.strip() for line in str(message).splitlines() if line.strip())
    return f"CHECK {name}: {'PASS' if passed else 'FAIL'}" + (f" {text}" if text else "")


def report(name: str, passed: bool, message: str = "") -> None:
    """Print the result line and, if ``$CONSENSUS_ASSIGNMENT_RESULTS`` is set, append a
    JSON record ``{"check", "status", "message"}`` to that file."""
    print(result_line(name, passed, message), flush=True)
    path = os.environ.get(RESULTS_ENV)
    if path:
        record = {"check": name, "status": "PASS" if passed else "FAIL", "message": str(message)}
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")


class _StudentCodeError(Exception):
    """The student's function raised; carries which call it was."""

    def __init__(self, call: str, error: BaseException):
        super().__init__(call)
        self.call, self.error = call, error


def _call(description: str, fn: Callable, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except Exception as error:
        raise _StudentCodeError(description, error) from error


def _run_check(name: str, body: Callable[[], str]) -> CheckResult:
    try:
        message = body() or ""
    except AssignmentCheckError as error:
        report(name, False, str(error))
        raise
    except _StudentCodeError as wrapped:
        error = wrapped.error
        unfinished = isinstance(error, NotImplementedError)
        failure = AssignmentCheckError(
            name,
            f"calling {wrapped.call} raised an exception",
            expected="a result",
            got=f"{type(error).__name__}: {error}",
            hint=GAP_HINT if unfinished else "run that call yourself and read the traceback above this message",
        )
        report(name, False, str(failure))
        raise failure from error
    report(name, True, message)
    return CheckResult(name, True, message)


# ----------------------------------------------------------------------------- helpers


def _fmt(values: Any, digits: int = 4) -> str:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu()
        if values.dim() == 0:
            return f"{float(values):.{digits}g}"
        values = values.flatten().tolist()
    if isinstance(values, (list, tuple)):
        return "[" + ", ".join(f"{float(v):.{digits}g}" for v in values) + "]"
    if isinstance(values, float):
        return f"{values:.{digits}g}"
    return repr(values)


def _close(a: torch.Tensor, b: torch.Tensor, tol: float = 1e-5) -> bool:
    a, b = torch.as_tensor(a).detach().double(), torch.as_tensor(b).detach().double()
    return a.shape == b.shape and torch.allclose(a, b, rtol=tol, atol=tol)


def _require_tensor(name: str, what: str, value: Any, like: torch.Tensor | None = None, scalar: bool = False) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise AssignmentCheckError(
            name, f"{what} must return a torch.Tensor", expected="a torch.Tensor",
            got=f"{type(value).__name__} {value!r}"[:200],
            hint="compute with torch operations (not .item(), float() or numpy) so autograd can follow",
        )
    if scalar and value.numel() != 1:
        raise AssignmentCheckError(
            name, f"{what} must return a single number", expected="a scalar tensor (shape ())",
            got=f"a tensor of shape {tuple(value.shape)}",
            hint="reduce over every unit (e.g. .mean() or .sum()) so the result is one number",
        )
    if like is not None:
        if value.shape != like.shape:
            raise AssignmentCheckError(
                name, f"{what} must keep the shape of its input", expected=f"shape {tuple(like.shape)}",
                got=f"shape {tuple(value.shape)}", hint="work elementwise; do not flatten or reduce",
            )
        if value.dtype != like.dtype:
            raise AssignmentCheckError(
                name, f"{what} must keep the dtype of its input", expected=str(like.dtype), got=str(value.dtype),
                hint="convert the boolean comparison with .to(p.dtype) (not .float())",
            )
    return value


def _gradient(name: str, what: str, out: torch.Tensor, inp: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """d(sum(weights * out)) / d inp, with clear failures when no gradient flows."""
    if not out.requires_grad:
        raise AssignmentCheckError(
            name, f"no gradient flows through {what}", expected="an output attached to the autograd graph",
            got="an output with requires_grad=False (the graph was cut)",
            hint="a comparison such as p >= 0.5 has no gradient; the STE needs a torch.autograd.Function "
                 "(or the trick p + (hard - p).detach()); do not call .detach(), .item() or numpy on the way",
        )
    loss = out.sum() if weights is None else (out * weights).sum()
    (grad,) = torch.autograd.grad(loss, inp, allow_unused=True)
    if grad is None:
        raise AssignmentCheckError(
            name, f"no gradient reaches the input of {what}", expected="a gradient for every input entry",
            got="None (the output does not depend on the input in the autograd graph)",
            hint="the backward pass must return a gradient for the input (return grad_output, not None)",
        )
    return grad


# ----------------------------------------------------------------------------- assignment 1


def _check_hard_forward(name: str, what: str, g: torch.Tensor, p: torch.Tensor, threshold: float = 0.5) -> None:
    expected = (p.detach() >= threshold).to(p.dtype)
    values = set(torch.unique(g.detach()).tolist())
    if _close(g, p) and not _close(g, expected):
        raise AssignmentCheckError(
            name, f"the forward pass of {what} is soft: it returns p unchanged",
            expected=f"hard gates {_fmt(expected)} for p = {_fmt(p)}", got=_fmt(g),
            hint="forward returns 1[p >= 0.5] as a float tensor: (p >= 0.5).to(p.dtype)",
        )
    if not values <= {0.0, 1.0}:
        raise AssignmentCheckError(
            name, f"the forward pass of {what} is not hard: its values are not all 0 or 1",
            expected=f"{_fmt(expected)} for p = {_fmt(p)}", got=_fmt(g),
            hint="the STE's forward pass is the hard threshold 1[p >= 0.5]; only the backward pass pretends",
        )
    if not _close(g, expected):
        at_half = (p.detach() == threshold)
        differ = (g.detach() != expected)
        if at_half.any() and bool((differ == at_half).all()):
            hint = "a gate at exactly p = 0.5 is open: use >= (and not round(), which sends 0.5 to 0)"
        elif bool((g.detach() == 1 - expected).all()):
            hint = "open and closed are swapped: g = 1 where p >= 0.5"
        else:
            hint = "threshold the probability at 0.5: g = 1[p >= 0.5]"
        raise AssignmentCheckError(
            name, f"the forward pass of {what} gives wrong gates",
            expected=f"{_fmt(expected)} for p = {_fmt(p)}", got=_fmt(g), hint=hint,
        )


def check_binarize(binarize: Callable[[torch.Tensor], torch.Tensor]) -> CheckResult:
    """Check a straight-through binarizer ``binarize(p) -> g``.

    Forward: ``g = 1[p >= 0.5]``, same shape and dtype as ``p``. Backward: the identity,
    ``dL/dp = dL/dg``, for every entry (also where the gate is closed), composing with
    autograd (through ``p = sigmoid(s)`` the logits get ``dL/dg * sigma'(s)``).
    """
    name = "binarize"

    def body() -> str:
        p = torch.tensor([0.0, 0.1, 0.3, 0.49, 0.5, 0.51, 0.7, 0.99, 1.0], requires_grad=True)
        w = torch.tensor([0.5, -1.0, 2.0, 1.5, -0.5, 3.0, -2.0, 1.0, 0.25])
        g = _require_tensor(name, "binarize(p)", _call("binarize(p)", binarize, p), like=p)
        _check_hard_forward(name, "binarize", g, p)
        grad = _gradient(name, "binarize", g, p, w)
        expected = w
        if torch.count_nonzero(grad) == 0:
            raise AssignmentCheckError(
                name, "the gradient is zero everywhere", expected=f"dL/dp = dL/dg = {_fmt(expected)}",
                got=_fmt(grad),
                hint="this is the true gradient of a step function, which is why the STE exists: "
                     "backward must return grad_output unchanged",
            )
        if not _close(grad, expected):
            pd = p.detach()
            if _close(grad, w * pd * (1 - pd)):
                hint = ("you multiplied by the sigmoid's derivative p(1-p): the STE passes the gradient "
                        "straight through; autograd applies sigma' itself on the way from p to the logits")
            elif _close(grad, w * (pd >= 0.5)):
                hint = "the gradient must pass for closed gates too (that is how a closed gate can reopen)"
            elif _close(grad, -w):
                hint = "the sign is flipped: return grad_output, not -grad_output"
            else:
                hint = "backward(ctx, grad_output) returns grad_output unchanged (identity STE)"
            raise AssignmentCheckError(
                name, "the backward pass is not the identity (straight-through)",
                expected=f"dL/dp = dL/dg = {_fmt(expected)}", got=_fmt(grad), hint=hint,
            )
        _check_binarize_any_shape(name, binarize)
        _check_binarize_through_sigmoid(name, binarize)
        return "forward 1[p >= 0.5], backward identity, any shape and dtype"

    return _run_check(name, body)


def _check_binarize_any_shape(name: str, binarize: Callable[[torch.Tensor], torch.Tensor]) -> None:
    """Forward and identity backward of ``binarize`` on a (3, 4) float64 input."""
    p2 = torch.rand(3, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0)).requires_grad_()
    g2 = _require_tensor(name, "binarize(p) on a (3, 4) float64 tensor", _call("binarize(p) on a (3, 4) float64 tensor", binarize, p2), like=p2)
    _check_hard_forward(name, "binarize", g2, p2)
    w2 = torch.arange(12, dtype=torch.float64).reshape(3, 4) - 5
    grad2 = _gradient(name, "binarize", g2, p2, w2)
    if not _close(grad2, w2):
        raise AssignmentCheckError(
            name, "the backward pass is not the identity on a (3, 4) float64 input",
            expected=_fmt(w2), got=_fmt(grad2), hint="do not assume a 1-D or float32 input",
        )


def _check_binarize_through_sigmoid(name: str, binarize: Callable[[torch.Tensor], torch.Tensor]) -> None:
    """The gradient of ``binarize(sigmoid(s))`` that reaches the logits s: dL/dg * sigma'(s)."""
    s = torch.tensor([-2.0, -0.5, 0.5, 2.0], requires_grad=True)
    w4 = torch.tensor([1.0, -2.0, 0.5, 3.0])
    g4 = _call("binarize(torch.sigmoid(s))", binarize, torch.sigmoid(s))
    grad_s = _gradient(name, "binarize(sigmoid(s))", _require_tensor(name, "binarize", g4), s, w4)
    sig = torch.sigmoid(s.detach())
    if not _close(grad_s, w4 * sig * (1 - sig)):
        raise AssignmentCheckError(
            name, "the gradient that reaches the logits s through p = sigmoid(s) is wrong",
            expected=f"dL/ds = dL/dg * sigma'(s) = {_fmt(w4 * sig * (1 - sig))}", got=_fmt(grad_s),
            hint="do not apply sigma' inside binarize; autograd does it",
        )


def check_binarize_clipped(binarize_clipped: Callable[[torch.Tensor, float], torch.Tensor]) -> CheckResult:
    """Check a clipped STE ``binarize_clipped(p, clip) -> g``: forward ``1[p >= 0.5]``;
    backward ``dL/dp = dL/dg * 1[|logit(p)| <= clip]`` with ``logit(p) = log(p / (1 - p))``."""
    name = "binarize_clipped"

    def body() -> str:
        for clip in (2.0, 1.0):
            s = torch.tensor([-4.0, -2.5, -1.5, -0.7, 0.0, 0.7, 1.5, 2.5, 4.0], dtype=torch.float64)
            p = torch.sigmoid(s).requires_grad_()
            w = torch.tensor([1.0, -2.0, 0.5, 3.0, -1.0, 2.0, -0.5, 1.5, 2.5], dtype=torch.float64)
            call = f"binarize_clipped(p, clip={clip})"
            g = _require_tensor(name, call, _call(call, binarize_clipped, p, clip), like=p)
            _check_hard_forward(name, "binarize_clipped", g, p)
            grad = _gradient(name, "binarize_clipped", g, p, w)
            inside = (s.abs() <= clip).to(w.dtype)
            expected = w * inside
            if not _close(grad, expected):
                pd = p.detach()
                if _close(grad, w):
                    hint = ("nothing was clipped: compare the logit |log(p / (1 - p))| with clip, "
                            "not p itself (p never exceeds 1)")
                elif _close(grad, w * (1 - inside)):
                    hint = "the mask is inverted: pass the gradient where |logit(p)| <= clip, block it outside"
                elif _close(grad, w * inside * pd * (1 - pd)):
                    hint = "inside the clip range the gradient passes unchanged: do not multiply by p(1-p)"
                else:
                    hint = "save p in forward (ctx.save_for_backward) and mask grad_output with |logit(p)| <= clip"
                raise AssignmentCheckError(
                    name, f"the backward pass with clip={clip} is wrong",
                    expected=f"dL/dp = {_fmt(expected)} for logits {_fmt(s)}", got=_fmt(grad), hint=hint,
                )
        return "forward 1[p >= 0.5], gradient passed only where |logit(p)| <= clip"

    return _run_check(name, body)


# ----------------------------------------------------------------------------- assignment 2


def check_polarizer(polarizer: Callable[[torch.Tensor], torch.Tensor]) -> CheckResult:
    """Check the bimodal polarizer ``R = (1/C) sum_j pbar_j (1 - pbar_j)`` over all
    entries of ``pbar`` (any shape), returned as a scalar tensor with its gradient
    ``dR/dpbar_j = (1 - 2 pbar_j) / C``."""
    name = "polarizer"

    def body() -> str:
        cases = [
            torch.tensor([0.5, 0.9, 0.0, 1.0, 0.2]),
            torch.tensor([[0.1, 0.5, 0.7], [0.95, 0.3, 0.0]]),
        ]
        for pbar in cases:
            got = _require_tensor(name, "polarizer(pbar)", _call(f"polarizer(pbar) with pbar = {_fmt(pbar)}", polarizer, pbar.clone()), scalar=True)
            flat = pbar.flatten()
            terms = flat * (1 - flat)
            expected = terms.mean()
            if not _close(got.reshape(()), expected):
                value = got.detach().reshape(())
                if _close(value, terms.sum()):
                    hint = "you summed over the units: R is the mean, (1/C) sum_j p_j (1 - p_j)"
                elif _close(value, -expected):
                    hint = ("the sign is flipped: minimising -p(1-p) pushes every unit to 0.5, "
                            "the opposite of polarizing")
                elif pbar.dim() > 1 and (_close(value, terms.reshape(pbar.shape).mean(0).sum())
                                         or _close(value, terms.reshape(pbar.shape).mean(-1).sum())):
                    hint = "average over every entry: flatten pbar first (pbar.reshape(-1))"
                elif _close(value, (flat * (1 - flat)).mean() * 4):
                    hint = "no factor 4: R = mean of p(1 - p)"
                else:
                    hint = "R_pol = mean_j pbar_j (1 - pbar_j): 0 at the poles, largest (0.25) at pbar = 0.5"
                raise AssignmentCheckError(
                    name, "the polarizer's value is wrong",
                    expected=f"{_fmt(expected, 6)} for pbar = {_fmt(pbar)}", got=_fmt(value, 6), hint=hint,
                )
        pbar = torch.tensor([0.3, 0.7, 0.5, 0.95], requires_grad=True)
        out = _require_tensor(name, "polarizer(pbar)", _call("polarizer(pbar)", polarizer, pbar), scalar=True)
        grad = _gradient(name, "the polarizer", out.reshape(()), pbar)
        expected = (1 - 2 * pbar.detach()) / pbar.numel()
        if not _close(grad, expected):
            raise AssignmentCheckError(
                name, "the polarizer's gradient is wrong",
                expected=f"dR/dpbar = (1 - 2 pbar) / C = {_fmt(expected)}", got=_fmt(grad),
                hint="use differentiable torch operations on pbar itself (no .detach(), no clamping)",
            )
        return "value mean_j p_j(1 - p_j) on hand-computed cases, gradient (1 - 2p)/C"

    return _run_check(name, body)


def check_sparsity_penalty(sparsity_penalty: Callable[..., torch.Tensor]) -> CheckResult:
    """Check ``sparsity_penalty(q, target_rate, weights=None)``
    ``= (sum_j w_j q_j / sum_j w_j - (1 - target_rate))^2`` (``w_j = 1`` without weights)."""
    name = "sparsity_penalty"

    def body() -> str:
        cases = [  # q, target_rate, weights
            ([1.0, 1.0, 1.0, 0.0], 0.25, None),
            ([0.9, 0.2, 0.6, 0.1], 0.6, None),
            ([1.0, 1.0, 0.0, 0.0, 0.0, 1.0], 0.2, None),
            ([1.0, 0.0, 1.0, 0.0], 0.4, [1.0, 2.0, 3.0, 4.0]),
            ([1.0, 0.0, 0.0, 0.0], 0.5, [3.0, 1.0, 1.0, 1.0]),
        ]
        for q_list, rate, w_list in cases:
            q = torch.tensor(q_list)
            w = None if w_list is None else torch.tensor(w_list)
            args = (q.clone(), rate) if w is None else (q.clone(), rate, w.clone())
            call = f"sparsity_penalty(q={_fmt(q)}, target_rate={rate}" + ("" if w is None else f", weights={_fmt(w)}") + ")"
            got = _require_tensor(name, call, _call(call, sparsity_penalty, *args), scalar=True).detach().reshape(())
            ww = torch.ones_like(q) if w is None else w
            keep = (ww * q).sum() / ww.sum()
            kappa = 1.0 - rate
            expected = (keep - kappa) ** 2
            if _close(got, expected):
                continue
            variants = [
                ((keep - rate) ** 2, "target_rate is the share to *remove*: the keep ratio must approach 1 - target_rate"),
                (((ww * q).sum() - kappa) ** 2, "divide by the sum of the weights: the keep ratio is a share in [0, 1]"),
                (((ww * q).mean() - kappa) ** 2, "divide by the sum of the weights, not by the number of units"),
                ((keep - kappa).abs(), "square the difference: R_sp = (keep ratio - (1 - target_rate))^2"),
                (keep - kappa, "square the difference: R_sp = (keep ratio - (1 - target_rate))^2"),
                ((q.mean() - kappa) ** 2, "the weights are ignored: keep ratio = sum_j w_j q_j / sum_j w_j"),
                ((keep - kappa) ** 2 * len(q_list), "no factor C: the penalty is the squared difference of two shares"),
            ]
            hint = next((h for v, h in variants if _close(got, v)),
                        "R_sp = (sum_j w_j q_j / sum_j w_j - (1 - target_rate))^2, with w_j = 1 when weights is None")
            raise AssignmentCheckError(
                name, f"wrong value for {call}", expected=_fmt(expected, 6), got=_fmt(got, 6), hint=hint,
            )
        q = torch.tensor([0.9, 0.2, 0.6, 0.1], requires_grad=True)
        w = torch.tensor([1.0, 2.0, 3.0, 4.0])
        out = _require_tensor(name, "sparsity_penalty", _call("sparsity_penalty(q, 0.3, w)", sparsity_penalty, q, 0.3, w), scalar=True)
        grad = _gradient(name, "the sparsity penalty", out.reshape(()), q)
        keep = (w * q.detach()).sum() / w.sum()
        expected = 2 * (keep - 0.7) * w / w.sum()
        if not _close(grad, expected):
            raise AssignmentCheckError(
                name, "the gradient of the sparsity penalty is wrong",
                expected=f"2 (keep - kappa) w / sum(w) = {_fmt(expected)}", got=_fmt(grad),
                hint="compute with differentiable torch operations on q (no .item(), no .detach())",
            )
        return "hand-computed values with and without FLOPs weights, and the gradient"

    return _run_check(name, body)


def _polarized_share(p: torch.Tensor, margin: float) -> float:
    return float((torch.minimum(p, 1 - p) < margin).float().mean())


def check_toy_polarization(
    p_before: torch.Tensor, p_after: torch.Tensor, target_rate: float, *, margin: float = 0.05, tolerance: float = 0.1
) -> CheckResult:
    """Check the toy experiment: gates that started away from the poles ended at them
    (at least 90% within ``margin`` of 0 or 1), and the share left open is within
    ``tolerance`` of the keep ratio ``1 - target_rate``."""
    name = "toy_polarization"

    def body() -> str:
        before = _require_tensor(name, "p_before", p_before).detach().float().flatten()
        after = _require_tensor(name, "p_after", p_after).detach().float().flatten()
        if before.shape != after.shape or before.numel() < 4:
            raise AssignmentCheckError(
                name, "p_before and p_after must hold the same units (at least 4)",
                expected=f"two tensors of {before.numel()} probabilities", got=f"{before.numel()} and {after.numel()}",
                hint="record torch.sigmoid(theta) before the loop and after it (detach and clone)",
            )
        if before.min() < 0 or before.max() > 1 or after.min() < 0 or after.max() > 1:
            raise AssignmentCheckError(
                name, "p_before and p_after must be probabilities", expected="values in [0, 1]",
                got=f"ranges [{float(before.min()):.3g}, {float(before.max()):.3g}] and "
                    f"[{float(after.min()):.3g}, {float(after.max()):.3g}]",
                hint="pass p = torch.sigmoid(theta), not the logits theta",
            )
        if torch.equal(before, after):
            raise AssignmentCheckError(
                name, "the gates did not move", expected="p_after different from p_before", got="identical tensors",
                hint="did the loop call optimizer.step()? did you clone p_before before training?",
            )
        start = _polarized_share(before, margin)
        if start >= 0.5:
            raise AssignmentCheckError(
                name, "the gates were already polarized before training, so the toy shows nothing",
                expected=f"fewer than half of the units within {margin} of 0 or 1 at the start",
                got=f"{start:.0%}", hint="start from logits near 0 (e.g. 0.5 * randn), as the starter code does",
            )
        end = _polarized_share(after, margin)
        if end < 0.9:
            middle = float(((after - 0.5).abs() < 0.1).float().mean())
            hint = ("most gates went to 0.5: the polarizer's sign is flipped (minimise +p(1-p))" if middle > 0.5
                    else "train longer, raise lambda_pol, or check that the loss adds lambda_pol * polarizer(p)")
            raise AssignmentCheckError(
                name, "the gates did not polarize",
                expected=f"at least 90% of the units within {margin} of 0 or 1", got=f"{end:.0%}", hint=hint,
            )
        kept = float((after >= 0.5).float().mean())
        kappa = 1.0 - float(target_rate)
        if abs(kept - kappa) > tolerance:
            raise AssignmentCheckError(
                name, "the share of open gates misses the sparsity target",
                expected=f"about {kappa:.2f} open (1 - target_rate, within {tolerance})", got=f"{kept:.2f}",
                hint=("did the loss use 1 - target_rate? raise lambda_sp, or ramp lambda_pol in "
                      "so the sparsity target acts before the gates lock in"),
            )
        return f"{start:.0%} polarized at the start, {end:.0%} at the end, {kept:.2f} open (target {kappa:.2f})"

    return _run_check(name, body)


# ----------------------------------------------------------------------------- assignment 3

POSITIONS = {"mid": "hidden channels, between relu(bn1(conv1 x)) and conv2",
             "out": "output channels of bn2, before the residual add"}


def _reference_forward(block: nn.Module, x: torch.Tensor, mask: torch.Tensor, position: str) -> torch.Tensor:
    """What a ToyBlock gated at ``position`` with its gate frozen to ``mask`` computes."""
    import torch.nn.functional as F

    m = mask.to(x.dtype).view(1, -1, 1, 1)
    h = F.relu(block.bn1(block.conv1(x)))
    if position == "mid":
        h = h * m
    y = block.bn2(block.conv2(h))
    if position == "out":
        y = y * m
    return F.relu(x + y)


def _expected_params(channels: int, hidden: int, kept: int, position: str) -> int:
    if position == "mid":
        return channels * kept * 9 + 2 * kept + kept * channels * 9 + 2 * channels
    return channels * hidden * 9 + 2 * hidden + hidden * kept * 9 + 2 * kept


def check_extraction(
    build: Callable[[int, int], nn.Module],
    extract: Callable[[nn.Module, torch.Tensor], nn.Module],
    position: str = "mid",
) -> CheckResult:
    """Check a gated toy block and its surgery.

    Args:
        build: ``build(channels, hidden)`` returns a block with the layers of
            :class:`~consensus_tutorial.assignments.ToyBlock` (``conv1, bn1, conv2, bn2``)
            and a gate module ``block.gate`` (e.g. ``ct.StaticGate``) with ``freeze(mask)``,
            placed at ``position``: "mid" (``hidden`` units between the convolutions) or
            "out" (``channels`` units on bn2's output, before the residual add).
        extract: ``extract(block, mask)`` returns a plain module without gates, physically
            smaller, whose output equals the gated block's with the gate frozen to ``mask``
            (eval mode), and leaves ``block`` unchanged.

    The check name is ``extraction_<position>``.
    """
    if position not in POSITIONS:
        raise ValueError(f"position must be one of {sorted(POSITIONS)}; got {position!r}.")
    name = f"extraction_{position}"

    def body() -> str:
        with torch.random.fork_rng(devices=[]):  # leave the notebook's random state alone
            return _cut_and_compare(name, position, build, extract)

    return _run_check(name, body)


def _cut_and_compare(
    name: str,
    position: str,
    build: Callable[[int, int], nn.Module],
    extract: Callable[[nn.Module, torch.Tensor], nn.Module],
) -> str:
    """Build, gate and cut blocks of two sizes with five masks each; the message of a pass."""
    from .toyblock import randomize_batchnorm

    generator = torch.Generator().manual_seed(0)
    tried = 0
    for channels, hidden in ((4, 6), (6, 5)):
        units = hidden if position == "mid" else channels
        for mask in _extraction_masks(units, generator):
            torch.manual_seed(tried)
            block, gate = _gated_block(name, build, channels, hidden, units, position)
            randomize_batchnorm(block, generator)
            block.eval()
            x = torch.randn(3, channels, 6, 6, generator=generator)
            gated = _check_gating(name, block, gate, x, mask, position)
            small = _extracted(name, extract, block, mask)
            _check_extracted_output(name, small, block, x, mask, gated, position)
            _check_extracted_size(name, small, channels, hidden, mask, position)
            tried += 1
    return f"{tried} masks at position {position!r}: outputs equal, gates gone, parameters cut"


def _extraction_masks(units: int, generator: torch.Generator) -> list[torch.Tensor]:
    """Boolean masks over ``units``: three random ones that keep some but not all units,
    then one that keeps only the last unit and one that keeps all."""
    masks = []
    while len(masks) < 3:  # random masks first, then the edge cases
        m = torch.rand(units, generator=generator) < 0.5
        if 0 < int(m.sum()) < units:
            masks.append(m)
    single = torch.zeros(units, dtype=torch.bool)
    single[units - 1] = True
    masks += [single, torch.ones(units, dtype=torch.bool)]
    return masks


def _gated_block(
    name: str, build: Callable[[int, int], nn.Module], channels: int, hidden: int, units: int, position: str
) -> tuple[nn.Module, Gate]:
    """``build(channels, hidden)`` and its gate, checked to be a ToyBlock-like module with a
    gate of ``units`` units."""
    from ..gates import Gate

    block = _call(f"build({channels}, {hidden})", build, channels, hidden)
    if not isinstance(block, nn.Module) or not all(hasattr(block, a) for a in ("conv1", "bn1", "conv2", "bn2")):
        raise AssignmentCheckError(
            name, "build must return the gated block", expected="an nn.Module with conv1, bn1, conv2, bn2 and gate",
            got=type(block).__name__, hint="subclass ToyBlock and call super().__init__(channels, hidden)",
        )
    gate = getattr(block, "gate", None)
    if not isinstance(gate, Gate):
        raise AssignmentCheckError(
            name, "the block has no gate module", expected="block.gate, a consensus_tutorial gate (e.g. ct.StaticGate)",
            got=type(gate).__name__, hint="add self.gate = ct.StaticGate(units) in __init__",
        )
    if gate.units != units:
        raise AssignmentCheckError(
            name, f"the gate has the wrong number of units for position {position!r} ({POSITIONS[position]})",
            expected=f"{units} units", got=f"{gate.units} units",
            hint="'mid' gates the hidden channels (hidden units); 'out' gates the block's output channels",
        )
    return block, gate


def _check_gating(name: str, block: nn.Module, gate: Gate, x: torch.Tensor, mask: torch.Tensor, position: str) -> torch.Tensor:
    """The block's output on ``x`` with its gate frozen to ``mask`` (left frozen so), checked
    against the reference computation."""
    with torch.no_grad():
        gate.freeze(mask)
        gated = _call("the gated block's forward", block, x)
        reference = _reference_forward(block, x, mask, position)
    if not _close(gated, reference):
        with torch.no_grad():
            gate.freeze(torch.ones(len(mask)))
            open_out = block(x)
            gate.freeze(mask)
        if not bool(mask.all()) and _close(gated, open_out):
            hint = "the frozen gate changes nothing: multiply the activations by self.gate(h)[:, :, None, None]"
        else:
            hint = f"the gate multiplies the {POSITIONS[position]}; nothing else changes"
        raise AssignmentCheckError(
            name, f"the gated block does not gate the {POSITIONS[position]}",
            expected="output of the block with those channels zeroed", got=f"max |difference| {float((gated - reference).abs().max()):.3g}",
            hint=hint,
        )
    return gated


def _extracted(name: str, extract: Callable[[nn.Module, torch.Tensor], nn.Module], block: nn.Module,
               mask: torch.Tensor) -> nn.Module:
    """``extract(block, mask)``, checked to be a module without gates."""
    from ..gates import Gate

    small = _call("extract(block, mask)", extract, block, mask.clone())
    if not isinstance(small, nn.Module):
        raise AssignmentCheckError(
            name, "extract must return an nn.Module", expected="a module", got=type(small).__name__,
            hint="build a new module and copy the kept weights into it",
        )
    gates_left = [n for n, m in small.named_modules() if isinstance(m, Gate)]
    if gates_left:
        raise AssignmentCheckError(
            name, "the extracted module still contains a gate", expected="no gate modules",
            got=f"gate modules at {gates_left}", hint="the cut network is static: no gate, no mask multiply",
        )
    return small


def _check_extracted_output(name: str, small: nn.Module, block: nn.Module, x: torch.Tensor, mask: torch.Tensor,
                            gated: torch.Tensor, position: str) -> None:
    """The extracted module computes the gated block's output, and ``block`` was left unchanged."""
    small.eval()
    with torch.no_grad():
        out = _call("the extracted module's forward", small, x)
        again = block(x)
    if not _close(again, gated):
        raise AssignmentCheckError(
            name, "extract changed the gated block it was given", expected="block unchanged",
            got=f"its output moved by {float((again - gated).abs().max()):.3g}",
            hint="copy the sliced tensors (tensor[index].clone()) into a new module; do not edit block's layers",
        )
    if not isinstance(out, torch.Tensor) or out.shape != gated.shape or not _close(out, gated, 1e-4):
        got = (f"shape {tuple(out.shape)}" if isinstance(out, torch.Tensor) and out.shape != gated.shape
               else f"max |difference| {float((out - gated).abs().max()):.3g}" if isinstance(out, torch.Tensor)
               else type(out).__name__)
        if position == "mid":
            hint = ("keep the units where mask is 1 (keep = mask.nonzero().flatten()): conv1.weight[keep], "
                    "all four of bn1's tensors [keep] (weight, bias, running_mean, running_var), conv2.weight[:, keep]")
        else:
            hint = ("keep the units where mask is 1: conv2.weight[keep], bn2's four tensors [keep]; then add the "
                    "kept channels back at their places: out = x.index_add(1, keep, y), then relu")
        raise AssignmentCheckError(
            name, f"the extracted module's output differs from the gated block's (mask {mask.int().tolist()})",
            expected=f"the gated block's output, shape {tuple(gated.shape)}", got=got, hint=hint,
        )


def _check_extracted_size(name: str, small: nn.Module, channels: int, hidden: int, mask: torch.Tensor,
                          position: str) -> None:
    """The extracted module has no more parameters than a block cut down to the kept units."""
    units = len(mask)
    kept = int(mask.sum())
    n_params = sum(p.numel() for p in small.parameters())
    bound = _expected_params(channels, hidden, kept, position)
    if n_params > bound:
        raise AssignmentCheckError(
            name, f"the extracted module is not physically smaller (mask keeps {kept} of {units})",
            expected=f"at most {bound} parameters", got=f"{n_params}",
            hint="slice the weights down to the kept channels; zeroing them keeps the cost",
        )


# ----------------------------------------------------------------------------- assignment 4

STUDY_KEYS = ("target_rate", "flops", "top1")


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _study_rows(name: str, results: Any) -> list[dict[str, float]]:
    if not isinstance(results, Sequence) or isinstance(results, (str, bytes)) or not all(isinstance(r, Mapping) for r in results):
        raise AssignmentCheckError(
            name, "results must be a list of dicts", expected="[{'target_rate': ..., 'flops': ..., 'top1': ...}, ...]",
            got=type(results).__name__, hint="append one dict per training run",
        )
    rows = []
    for i, r in enumerate(results):
        missing = [k for k in STUDY_KEYS if k not in r]
        if missing:
            raise AssignmentCheckError(
                name, f"results[{i}] lacks keys {missing}", expected=f"keys {list(STUDY_KEYS)}", got=f"keys {sorted(r)}",
                hint="from run(config): flops = metrics['flops_extracted'], top1 = metrics['top1_extracted']",
            )
        row = {k: _number(r[k]) for k in STUDY_KEYS}
        bad = [k for k, v in row.items() if v is None]
        if bad:
            raise AssignmentCheckError(
                name, f"results[{i}] has non-numeric {bad}", expected="numbers", got={k: r[k] for k in bad},
                hint="store plain numbers (float(...)), not strings or tensors with many values",
            )
        rows.append(row)
    return rows


def check_study_results(results: Sequence[Mapping[str, Any]], dense_flops: float) -> CheckResult:
    """Check the runs of the study: at least 3 runs with distinct target rates, each a
    dict with ``target_rate`` in [0, 1), ``flops`` (of the *extracted* network, per
    image, at most ``dense_flops``) and ``top1`` (percent)."""
    name = "study_results"

    def body() -> str:
        rows = _study_rows(name, results)
        dense = _number(dense_flops)
        if dense is None or dense <= 0:
            raise AssignmentCheckError(
                name, "dense_flops must be the dense network's FLOPs", expected="a positive number",
                got=repr(dense_flops), hint="dense_flops = ct.count_flops(ct.cifar_resnet(20))",
            )
        rates = sorted({round(r["target_rate"], 6) for r in rows})
        if len(rates) < 3:
            raise AssignmentCheckError(
                name, "a study needs at least three target rates", expected=">= 3 distinct target_rate values",
                got=f"{rates}", hint="bracket the rate 1 - budget: one below it, one at it, one above",
            )
        for r in rows:
            if not 0.0 <= r["target_rate"] < 1.0:
                raise AssignmentCheckError(
                    name, "a target rate is out of range", expected="target_rate in [0, 1)", got=r["target_rate"],
                    hint="the target rate is the share of FLOPs to remove, e.g. 0.5",
                )
            if not 0 < r["flops"] <= dense * 1.0001:
                raise AssignmentCheckError(
                    name, "a FLOPs value is impossible", expected=f"0 < flops <= dense FLOPs ({dense:.4g})",
                    got=f"{r['flops']:.4g}",
                    hint="report the extracted network's FLOPs per image in MACs (metrics['flops_extracted']), not M or G",
                )
            if not 0.0 <= r["top1"] <= 100.0:
                raise AssignmentCheckError(
                    name, "a top-1 value is out of range", expected="a percentage in [0, 100]", got=r["top1"],
                    hint="use metrics['top1_extracted'] (already in percent)",
                )
        if all(r["top1"] <= 1.0 for r in rows) and any(r["top1"] > 0 for r in rows):
            raise AssignmentCheckError(
                name, "top-1 looks like a fraction", expected="percent (e.g. 41.3)", got=[r["top1"] for r in rows],
                hint="metrics['top1_extracted'] is already in percent",
            )
        if all(abs(r["flops"] - dense) <= 1e-6 * dense for r in rows):
            raise AssignmentCheckError(
                name, "every run reports the dense FLOPs", expected="the extracted networks' FLOPs, below the dense count",
                got=f"{dense:.4g} for every run",
                hint=("report metrics['flops_extracted'], not 'flops_dense'; if it really is dense, the gates never "
                      "closed: train more steps or raise GATE_LR"),
            )
        return f"{len(rows)} runs, target rates {rates}, FLOPs {min(r['flops'] for r in rows):.4g} to {max(r['flops'] for r in rows):.4g}"

    return _run_check(name, body)


def check_study_choice(results: Sequence[Mapping[str, Any]], chosen: Mapping[str, Any], budget_flops: float) -> CheckResult:
    """Check the choice: ``chosen`` is one of ``results``, its *measured* FLOPs fit the
    budget, and no run that fits the budget has a higher top-1."""
    name = "study_choice"

    def body() -> str:
        rows = _study_rows(name, results)
        budget = _number(budget_flops)
        if budget is None or budget <= 0:
            raise AssignmentCheckError(
                name, "budget_flops must be a FLOPs count", expected="a positive number", got=repr(budget_flops),
                hint="budget_flops = BUDGET * dense_flops",
            )
        (pick,) = _study_rows(name, [chosen]) if isinstance(chosen, Mapping) else (None,)
        if pick is None or pick not in rows:
            raise AssignmentCheckError(
                name, "chosen must be one of the runs in results", expected="one of the dicts in results",
                got=repr(chosen)[:200], hint="choose with max(feasible, key=lambda r: r['top1'])",
            )
        feasible = [r for r in rows if r["flops"] <= budget]
        if not feasible:
            raise AssignmentCheckError(
                name, "no run fits the FLOPs budget", expected=f"at least one run with flops <= {budget:.4g}",
                got=f"smallest {min(r['flops'] for r in rows):.4g}",
                hint="add runs with higher target rates: the measured FLOPs, not the target, must fit",
            )
        best = max(r["top1"] for r in feasible)
        if pick["flops"] > budget:
            most_accurate = pick["top1"] >= max(r["top1"] for r in rows)
            hint = ("you picked the most accurate run overall; only runs whose measured FLOPs fit the budget count"
                    if most_accurate else
                    "the target rate is what you asked for; the extracted FLOPs are what you got: choose by r['flops'] <= budget")
            raise AssignmentCheckError(
                name, "the chosen run is over the FLOPs budget", expected=f"flops <= {budget:.4g}",
                got=f"{pick['flops']:.4g} (target_rate {pick['target_rate']})", hint=hint,
            )
        if pick["top1"] < best:
            raise AssignmentCheckError(
                name, "a more accurate run also fits the budget", expected=f"top-1 {best}",
                got=f"top-1 {pick['top1']} (target_rate {pick['target_rate']})",
                hint="among the runs within budget, take the one with the highest top-1 (not the cheapest)",
            )
        return (f"target_rate {pick['target_rate']}: {pick['flops']:.4g} FLOPs <= budget {budget:.4g}, "
                f"top-1 {pick['top1']} (best of {len(feasible)} within budget)")

    return _run_check(name, body)


_IMAGE_MAGIC = {b"\x89PNG": "PNG", b"%PDF": "PDF", b"<?xm": "SVG", b"<svg": "SVG", b"\xff\xd8\xff": "JPEG"}


def _check_plot_file(name: str, plot: str | os.PathLike) -> str:
    path = Path(plot)
    if not path.is_file():
        raise AssignmentCheckError(
            name, "the plot file does not exist", expected=f"a saved figure at {path}", got="no file",
            hint=f"fig.savefig({str(path)!r}) after drawing the plot",
        )
    head = path.read_bytes()[:8]
    kind = next((k for magic, k in _IMAGE_MAGIC.items() if head.startswith(magic)), None)
    size = path.stat().st_size
    if kind is None or size < 1000:
        raise AssignmentCheckError(
            name, "the plot file is not a figure", expected="a PNG, PDF, SVG or JPEG of at least 1 kB",
            got=f"{size} bytes starting {head!r}", hint="save with matplotlib's fig.savefig('....png')",
        )
    return f"{path.name}: {kind}, {size / 1024:.0f} kB"


def check_study_plot(plot: str | os.PathLike) -> CheckResult:
    """Check that the top-1 vs FLOPs figure was saved (a PNG, PDF, SVG or JPEG file)."""
    return _run_check("study_plot", lambda: _check_plot_file("study_plot", plot))


def check_study(
    results: Sequence[Mapping[str, Any]], chosen: Mapping[str, Any], *, dense_flops: float, budget_flops: float,
    plot: str | os.PathLike,
) -> list[CheckResult]:
    """All three checks of assignment 4 in a row (results, choice, plot)."""
    return [check_study_results(results, dense_flops), check_study_choice(results, chosen, budget_flops),
            check_study_plot(plot)]


# ----------------------------------------------------------------------------- assignment 5

LATENCY_KEYS = {"latency_budget_ms": "number", "method": "text", "runs": "list", "chosen": "dict"}
LATENCY_RUN_KEYS = ("target_rate", "flops", "latency_ms", "top1")


def _latency_result(name: str, result: Mapping[str, Any] | str | os.PathLike) -> Any:
    """The latency study's result: ``result`` itself, or the JSON read from the file it names."""
    data = result
    if isinstance(result, (str, os.PathLike)):
        path = Path(result)
        if not path.is_file():
            raise AssignmentCheckError(
                name, "the result file does not exist", expected=f"a JSON file at {path}", got="no file",
                hint="json.dump(result, open(path, 'w'))",
            )
        try:
            data = json.loads(path.read_text())
        except ValueError as error:
            raise AssignmentCheckError(
                name, "the result file is not JSON", expected="a JSON object", got=str(error), hint="write it with json.dump",
            ) from None
    return data


def check_latency_study(result: Mapping[str, Any] | str | os.PathLike, plot: str | os.PathLike) -> CheckResult:
    """Check that the open-ended latency study produced a result and a figure.

    ``result`` (a dict, or the path of a JSON file holding it) has the keys
    ``latency_budget_ms`` (a number > 0), ``method`` (a non-empty description),
    ``runs`` (at least two dicts with ``target_rate``, ``flops``, ``latency_ms``,
    ``top1``) and ``chosen`` (a dict with the same keys); ``plot`` is a saved figure.
    Only the form is checked: the method is the student's.
    """
    name = "latency_study"

    def body() -> str:
        data = _latency_result(name, result)
        if not isinstance(data, Mapping):
            raise AssignmentCheckError(
                name, "the result must be a dict", expected=f"keys {sorted(LATENCY_KEYS)}", got=type(data).__name__,
                hint="collect the numbers in a dict",
            )
        missing = [k for k in LATENCY_KEYS if k not in data]
        if missing:
            raise AssignmentCheckError(
                name, f"the result lacks {missing}", expected=f"keys {sorted(LATENCY_KEYS)}", got=f"keys {sorted(data)}",
                hint="see the task's list of required keys",
            )
        budget = _number(data["latency_budget_ms"])
        if budget is None or budget <= 0:
            raise AssignmentCheckError(
                name, "latency_budget_ms must be a positive number", expected="> 0", got=repr(data["latency_budget_ms"]),
                hint="the budget in milliseconds per forward pass",
            )
        if not isinstance(data["method"], str) or not data["method"].strip():
            raise AssignmentCheckError(
                name, "method must describe how the target was chosen", expected="a non-empty string",
                got=repr(data["method"])[:100], hint="one or two sentences",
            )
        runs = data["runs"]
        if not isinstance(runs, Sequence) or isinstance(runs, str) or len(runs) < 2:
            raise AssignmentCheckError(
                name, "runs must list at least two measured networks", expected="a list of >= 2 dicts",
                got=repr(runs)[:100], hint="measure at least two pruned networks",
            )
        for i, r in enumerate([*runs, data["chosen"]]):
            where = f"runs[{i}]" if i < len(runs) else "chosen"
            if not isinstance(r, Mapping) or any(_number(r.get(k)) is None for k in LATENCY_RUN_KEYS):
                raise AssignmentCheckError(
                    name, f"{where} lacks a number", expected=f"numbers at keys {list(LATENCY_RUN_KEYS)}",
                    got=repr(r)[:200], hint="store plain floats",
                )
        return f"{len(runs)} runs, budget {budget:g} ms; plot {_check_plot_file(name, plot)}"

    return _run_check(name, body)
