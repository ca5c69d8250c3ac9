"""Polarization and sparsity regularizers: hand-computed values, gradients, errors, and
where the Zhuang polarizer's minimisers lie."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import consensus_tutorial as ct



P = [0.2, 0.5, 1.0, 0.0]


def _p(values=P, grad=False):
    return torch.tensor(values, dtype=torch.float64, requires_grad=grad)


# ----------------------------------------------------------------------------- bimodal


def test_bimodal_hand_value():
    # p(1-p): 0.16, 0.25, 0, 0 -> mean 0.41 / 4
    value = ct.polarization(_p(), "bimodal")
    assert value.dim() == 0
    assert math.isclose(float(value), 0.1025, rel_tol=0, abs_tol=1e-12)
    # the default kind is bimodal
    assert math.isclose(float(ct.polarization(_p())), 0.1025, abs_tol=1e-12)


def test_bimodal_flattens_any_shape():
    p = torch.tensor([[0.2, 0.5], [1.0, 0.0]], dtype=torch.float64)
    assert math.isclose(float(ct.polarization(p)), 0.1025, abs_tol=1e-12)


def test_bimodal_zero_exactly_at_poles_and_max_at_half():
    assert float(ct.polarization(_p([0.0, 1.0, 1.0, 0.0]))) == 0.0
    assert math.isclose(float(ct.polarization(_p([0.5, 0.5]))), 0.25)


def test_bimodal_gradient_pushes_towards_poles():
    p = _p([0.2, 0.8, 0.45, 0.55], grad=True)
    ct.polarization(p, "bimodal").backward()
    # d/dp_j mean p(1-p) = (1 - 2 p_j) / C
    torch.testing.assert_close(p.grad, _p([0.6, -0.6, 0.1, -0.1]) / 4)
    # gradient descent (p - lr * grad) moves p < 0.5 down and p > 0.5 up
    step = p.detach() - 0.1 * p.grad
    assert step[0] < 0.2 and step[2] < 0.45
    assert step[1] > 0.8 and step[3] > 0.55


def test_bimodal_rejects_t():
    with pytest.raises(ValueError, match="zhuang"):
        ct.polarization(_p(), "bimodal", t=0.5)


# ----------------------------------------------------------------------------- zhuang


@pytest.mark.parametrize(
    "t,expected",
    [
        # ||p||_1 = 1.7, mean 0.425, ||p - mean||_1 = 0.225 + 0.075 + 0.575 + 0.425 = 1.3
        (0.8, (0.8 * 1.7 - 1.3) / 4),   # 0.015
        (0.0, -1.3 / 4),                # -0.325
        (-1.0, (-1.7 - 1.3) / 4),       # -0.75
        (2.0, (3.4 - 1.3) / 4),         # 0.525
    ],
)
def test_zhuang_hand_value(t, expected):
    value = ct.polarization(_p(), "zhuang", t=t)
    assert value.dim() == 0
    assert math.isclose(float(value), expected, abs_tol=1e-12)


def test_zhuang_hand_values_written_out():
    assert math.isclose(float(ct.polarization(_p(), "zhuang", t=0.8)), 0.015, abs_tol=1e-12)
    assert math.isclose(float(ct.polarization(_p(), "zhuang", t=0.0)), -0.325, abs_tol=1e-12)


def test_zhuang_gradient_hand_computed():
    p = _p(grad=True)
    ct.polarization(p, "zhuang", t=0.8).backward()
    # sign(p - mean) = -1, +1, +1, -1 (sums to 0), so dR/dp_j = (t - sign_j) / C
    torch.testing.assert_close(p.grad, _p([1.8, -0.2, -0.2, 1.8]) / 4)


def test_zhuang_needs_t():
    with pytest.raises(ValueError, match="needs t"):
        ct.polarization(_p(), "zhuang")


def test_unknown_kind_lists_allowed():
    with pytest.raises(ValueError) as info:
        ct.polarization(_p(), "l1")
    message = str(info.value)
    assert "'bimodal'" in message and "'zhuang'" in message and "'l1'" in message


def test_empty_pbar_raises():
    with pytest.raises(ValueError, match="empty"):
        ct.polarization(torch.zeros(0))


def _zhuang_vertex_value(k: int, C: int, t: float) -> float:
    """Value of the (C-normalised) Zhuang polarizer at a 0/1 vector with k ones, by hand:
    ||p||_1 = k, mean k/C, ||p - mean||_1 = 2 k (C - k) / C."""
    return (t * k - 2 * k * (C - k) / C) / C


@settings(max_examples=25, deadline=None)
@given(
    C=st.integers(2, 24),
    t=st.floats(-1.9, 1.9, allow_nan=False),
    data=st.data(),
)
def test_zhuang_minimum_over_binary_vectors_at_predicted_share(C, t, data):
    bits = data.draw(st.lists(st.integers(0, 1), min_size=C, max_size=C))
    p = torch.tensor(bits, dtype=torch.float64)
    k = int(p.sum())
    value = float(ct.polarization(p, "zhuang", t=t))
    # the package's value at a vertex equals the hand formula (depends only on k)
    assert math.isclose(value, _zhuang_vertex_value(k, C, t), abs_tol=1e-12)
    # the best vertex: k / C closest to 1/2 - t/4 (the quadratic in k is convex)
    values = [_zhuang_vertex_value(j, C, t) for j in range(C + 1)]
    best = min(values)
    k_star = [j for j in range(C + 1) if values[j] <= best + 1e-12]
    target = C * (0.5 - t / 4)
    closest = min(abs(j - target) for j in range(C + 1))
    assert any(abs(j - target) <= closest + 1e-9 for j in k_star)
    assert all(abs(j - target) <= closest + 1.0 for j in k_star)
    # and no binary vector beats it
    assert value >= best - 1e-12
    # the minimum over all vertices is reached by the package on a vector with k* ones
    p_star = torch.zeros(C, dtype=torch.float64)
    p_star[: k_star[0]] = 1.0
    assert math.isclose(float(ct.polarization(p_star, "zhuang", t=t)), best, abs_tol=1e-12)


@settings(max_examples=25, deadline=None)
@given(C=st.integers(2, 30), t=st.floats(-1.9, 1.9, allow_nan=False), seed=st.integers(0, 2**16))
def test_zhuang_no_interior_point_beats_best_vertex(C, t, seed):
    """R is concave (linear minus convex), so its minimum over [0,1]^C lies at a vertex."""
    g = torch.Generator().manual_seed(seed)
    p = torch.rand(C, generator=g, dtype=torch.float64)
    best = min(_zhuang_vertex_value(j, C, t) for j in range(C + 1))
    assert float(ct.polarization(p, "zhuang", t=t)) >= best - 1e-12


def _pgd_zhuang(p0: torch.Tensor, t: float, steps: int = 400, lr: float = 0.05) -> torch.Tensor:
    """Projected gradient descent of the Zhuang polarizer on [0, 1]^C (clamp each step)."""
    p = p0.clone().requires_grad_(True)
    C = p.numel()
    for _ in range(steps):
        (grad,) = torch.autograd.grad(ct.polarization(p, "zhuang", t=t), p)
        with torch.no_grad():
            p -= lr * C * grad  # R is divided by C; rescale so the step is per unit
            p.clamp_(0.0, 1.0)
    return p.detach()


@pytest.mark.parametrize("t", [-1.5, -0.5, 0.0, 0.8, 1.6])
def test_zhuang_pgd_from_minimiser_basin_reaches_predicted_share(t):
    """Started with the predicted share of units above the mean (noisy, interior), PGD
    drives every unit to a pole and lands on the global minimiser: a share of about
    1/2 - t/4 at 1, with the minimal value."""
    C = 200
    rho = 0.5 - t / 4
    g = torch.Generator().manual_seed(0)
    high = torch.zeros(C, dtype=torch.bool)
    high[torch.randperm(C, generator=g)[: round(C * rho)]] = True
    # high units in [0.75, 0.79], low ones in [0.25, 0.29]: the mean lies between them
    p0 = torch.where(high, 0.75, 0.25).double() + 0.04 * torch.rand(C, generator=g, dtype=torch.float64)
    assert ((p0 > p0.mean()) == high).all()
    p = _pgd_zhuang(p0, t)
    at_pole = ((p < 0.01) | (p > 0.99)).double().mean().item()
    share = (p > 0.99).double().mean().item()
    assert at_pole >= 0.98
    assert abs(share - rho) <= 0.05
    best = min(_zhuang_vertex_value(j, C, t) for j in range(C + 1))
    assert float(ct.polarization(p, "zhuang", t=t)) <= best + 0.01


@pytest.mark.parametrize("t", [-0.5, 0.0, 0.8])
def test_zhuang_pgd_from_uniform_init_polarizes_but_keeps_initial_split(t):
    """From a uniform random start, PGD sends (almost) every unit to a pole, but the
    share at 1 is the share that started above the mean (about 1/2), not 1/2 - t/4:
    every vertex whose share x lies in (-t/2, 1 - t/2) is a local minimum of this
    piecewise-linear concave function. The 1/2 - t/4 share is the *global* minimiser
    (tests above), which the task loss or the sparsity target must help select."""
    C = 200
    g = torch.Generator().manual_seed(1)
    p0 = torch.rand(C, generator=g, dtype=torch.float64)
    above = (p0 > p0.mean()).double().mean().item()
    p = _pgd_zhuang(p0, t)
    at_pole = ((p < 0.01) | (p > 0.99)).double().mean().item()
    share = (p > 0.99).double().mean().item()
    assert at_pole >= 0.98
    assert abs(share - above) <= 0.02
    assert float(ct.polarization(p, "zhuang", t=t)) < float(ct.polarization(p0, "zhuang", t=t))


# ----------------------------------------------------------------------------- sparsity


def test_sparsity_penalty_unweighted_hand_value():
    # mean p = 0.425, keep ratio target 1 - 0.5 = 0.5 -> (0.425 - 0.5)^2
    value = ct.sparsity_penalty(_p(), 0.5)
    assert value.dim() == 0
    assert math.isclose(float(value), 0.005625, abs_tol=1e-12)
    # target 0 keeps everything: (0.425 - 1)^2
    assert math.isclose(float(ct.sparsity_penalty(_p(), 0.0)), 0.330625, abs_tol=1e-12)


def test_sparsity_penalty_weighted_hand_value():
    # weights 1, 2, 3, 4: (0.2 + 1.0 + 3.0 + 0) / 10 = 0.42; target 0.3 -> kappa 0.7
    w = torch.tensor([1.0, 2.0, 3.0, 4.0])
    value = ct.sparsity_penalty(_p(), 0.3, weights=w)
    assert math.isclose(float(value), (0.42 - 0.7) ** 2, abs_tol=1e-12)
    assert math.isclose(float(value), 0.0784, abs_tol=1e-12)
    assert math.isclose(float(ct.keep_ratio(_p(), w)), 0.42, abs_tol=1e-12)
    # uniform weights give the unweighted penalty
    assert math.isclose(
        float(ct.sparsity_penalty(_p(), 0.3, weights=torch.ones(4))),
        float(ct.sparsity_penalty(_p(), 0.3)), abs_tol=1e-12,
    )


def test_sparsity_penalty_gradient():
    p = _p(grad=True)
    w = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64)
    ct.sparsity_penalty(p, 0.3, weights=w).backward()
    # d/dp_j (sum w p / sum w - kappa)^2 = 2 (0.42 - 0.7) w_j / 10
    torch.testing.assert_close(p.grad, 2 * (0.42 - 0.7) * w / 10)


@pytest.mark.parametrize("rate", [1.0, 1.5, -0.1])
def test_sparsity_target_rate_out_of_range(rate):
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        ct.sparsity_penalty(_p(), rate)


def test_sparsity_target_rate_not_a_number():
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        ct.sparsity_penalty(_p(), "half")


def test_sparsity_weights_checked():
    with pytest.raises(ValueError, match="one entry per unit"):
        ct.sparsity_penalty(_p(), 0.5, weights=torch.ones(3))
    with pytest.raises(ValueError, match="non-negative"):
        ct.sparsity_penalty(_p(), 0.5, weights=torch.tensor([1.0, -1.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match="positive sum"):
        ct.sparsity_penalty(_p(), 0.5, weights=torch.zeros(4))
