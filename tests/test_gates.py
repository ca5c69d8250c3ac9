"""Binary gates: STE binarization, initial state, firing-rate EMA, freezing, the gate record."""

from __future__ import annotations

import math

import pytest
import torch

import consensus_tutorial as ct
from consensus_tutorial.gates import logit, make_gate




# ----------------------------------------------------------------------------- binarize


def test_binarize_forward_is_threshold_at_one_half():
    p = torch.tensor([0.0, 0.2, 0.4999, 0.5, 0.5001, 0.8, 1.0], dtype=torch.float64)
    g = ct.binarize(p)
    assert g.dtype == p.dtype and g.shape == p.shape
    assert g.tolist() == [0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0]


def test_binarize_custom_threshold():
    p = torch.tensor([0.1, 0.3, 0.7])
    assert ct.binarize(p, threshold=0.3).tolist() == [0.0, 1.0, 1.0]


def test_binarize_gradient_is_identity_ste():
    p = torch.tensor([[0.1, 0.49, 0.51], [0.9, 0.5, 0.0]], dtype=torch.float64, requires_grad=True)
    upstream = torch.tensor([[1.0, -2.0, 3.0], [0.5, -0.25, 7.0]], dtype=torch.float64)
    g = ct.binarize(p)
    (g * upstream).sum().backward()
    # The true derivative of a step is zero almost everywhere; the STE passes dL/dg unchanged.
    torch.testing.assert_close(p.grad, upstream, rtol=0, atol=0)


def test_binarize_gradient_flows_back_to_logits_through_sigmoid():
    s = torch.tensor([-1.0, 0.0, 2.0], dtype=torch.float64, requires_grad=True)
    ct.binarize(torch.sigmoid(s)).sum().backward()
    sig = torch.sigmoid(s.detach())
    torch.testing.assert_close(s.grad, sig * (1 - sig))


def test_binarize_clip_zeroes_gradient_where_saturated():
    # logits -5, -2.5, -1, 0, 1, 2.5, 5 ; clip 2 passes only |logit| <= 2
    logits = torch.tensor([-5.0, -2.5, -1.0, 0.0, 1.0, 2.5, 5.0], dtype=torch.float64)
    p = torch.sigmoid(logits).requires_grad_(True)
    ct.binarize(p, clip=2.0).sum().backward()
    assert p.grad.tolist() == [0.0, 0.0, 1.0, 1.0, 1.0, 0.0, 0.0]
    # the forward pass does not depend on the clip
    assert ct.binarize(p.detach(), clip=2.0).tolist() == [0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0]


@pytest.mark.parametrize("clip", [0.0, -1.0])
def test_binarize_rejects_non_positive_clip(clip):
    with pytest.raises(ValueError, match="clip"):
        ct.binarize(torch.tensor([0.5]), clip=clip)


def test_logit_helper():
    assert logit(0.5) == 0.0
    assert math.isclose(1 / (1 + math.exp(-logit(0.9))), 0.9)
    for bad in (0.0, 1.0, 1.5):
        with pytest.raises(ValueError):
            logit(bad)


# ----------------------------------------------------------------------------- initial state


def _gates_for_test():
    return {
        "dynamic-1": ct.DynamicGate(16, 7, depth=1),
        "dynamic-2": ct.DynamicGate(16, 7, depth=2),
        "static": ct.StaticGate(7),
    }


@pytest.mark.parametrize("kind", ["dynamic-1", "dynamic-2", "static"])
def test_gates_start_open(kind):
    torch.manual_seed(0)
    gate = _gates_for_test()[kind].train()
    x = torch.randn(5, 16, 6, 6)
    p = gate.probabilities(x)
    assert p.shape == (5, 7)
    torch.testing.assert_close(p, torch.full_like(p, 0.9), atol=0.02, rtol=0)
    g = gate(x)
    assert g.shape == (5, 7)
    assert torch.equal(g, torch.ones_like(g))
    assert torch.equal(gate.firing_rate, torch.ones(7))
    assert torch.equal(gate.mask, torch.ones(7))
    assert not bool(gate.frozen)


def test_init_prob_option_is_respected():
    gate = ct.StaticGate(3, init_prob=0.3)
    p = gate.probabilities(torch.zeros(2, 4, 1, 1))
    torch.testing.assert_close(p, torch.full((2, 3), 0.3))
    assert torch.equal(gate(torch.zeros(2, 4, 1, 1)), torch.zeros(2, 3))


def test_dynamic_gate_depths_have_expected_layers():
    one = ct.DynamicGate(32, 5, depth=1)
    two = ct.DynamicGate(32, 5, depth=2)
    assert [type(m).__name__ for m in one.mlp] == ["Linear"]
    assert [type(m).__name__ for m in two.mlp] == ["Linear", "ReLU", "Linear"]
    assert two.mlp[0].out_features == 8  # max(8, 32 // 4)
    with pytest.raises(ValueError, match="gate_depth"):
        ct.DynamicGate(32, 5, depth=3)


def test_make_gate_and_bad_arguments():
    assert isinstance(make_gate("dynamic", 4, 3), ct.DynamicGate)
    assert isinstance(make_gate("static", 4, 3), ct.StaticGate)
    with pytest.raises(ValueError, match="'dynamic', 'static'"):
        make_gate("soft", 4, 3)
    with pytest.raises(ValueError, match="at least one unit"):
        ct.StaticGate(0)
    with pytest.raises(ValueError, match="momentum"):
        ct.StaticGate(3, momentum=1.0)


def test_dynamic_gate_scores_depend_on_pooled_input():
    gate = ct.DynamicGate(2, 1, depth=1)
    with torch.no_grad():
        gate.mlp[0].weight.copy_(torch.tensor([[1.0, 0.0]]))
        gate.mlp[0].bias.zero_()
    x = torch.zeros(2, 2, 3, 3)
    x[0, 0] = 1.0   # GAP of channel 0 = +1  -> open
    x[1, 0] = -1.0  # GAP of channel 0 = -1  -> closed
    x[1, 0, 0, 0] = 5.0  # one large pixel does not flip the *average* (5 - 8) / 9 < 0
    assert gate(x).flatten().tolist() == [1.0, 0.0]


# ----------------------------------------------------------------------------- firing rate


def test_firing_rate_ema_static_gate():
    gate = ct.StaticGate(4, momentum=0.8).train()
    with torch.no_grad():
        gate.theta.copy_(torch.tensor([2.0, -2.0, 0.0, -0.1]))  # g = 1, 0, 1, 0
    x = torch.zeros(3, 1, 2, 2)
    gate(x)
    expected = 0.8 * torch.ones(4) + 0.2 * torch.tensor([1.0, 0.0, 1.0, 0.0])
    torch.testing.assert_close(gate.firing_rate, expected)
    gate(x)
    expected = 0.8 * expected + 0.2 * torch.tensor([1.0, 0.0, 1.0, 0.0])
    torch.testing.assert_close(gate.firing_rate, expected)


def test_firing_rate_ema_uses_batch_mean_of_hard_gates():
    # unit 0 opens when the GAP of input channel 0 is positive, unit 1 always closed
    gate = ct.DynamicGate(1, 2, depth=1, momentum=0.5).train()
    with torch.no_grad():
        gate.mlp[0].weight.copy_(torch.tensor([[10.0], [0.0]]))
        gate.mlp[0].bias.copy_(torch.tensor([0.0, -3.0]))
    signs = torch.tensor([1.0, 1.0, 1.0, -1.0, -1.0])  # 3 of 5 samples open unit 0
    x = signs.view(5, 1, 1, 1).expand(5, 1, 4, 4).clone()
    g = gate(x)
    assert g[:, 0].tolist() == [1.0, 1.0, 1.0, 0.0, 0.0]
    assert g[:, 1].tolist() == [0.0] * 5
    torch.testing.assert_close(gate.firing_rate, torch.tensor([0.5 + 0.5 * 0.6, 0.5 + 0.0]))


def test_firing_rate_does_not_move_in_eval_mode():
    gate = ct.StaticGate(3, momentum=0.9)
    with torch.no_grad():
        gate.theta.fill_(-4.0)  # all closed: a training forward would lower the rates
    gate.eval()
    out = gate(torch.zeros(6, 1, 2, 2))
    assert torch.equal(out, torch.zeros(6, 3))
    assert torch.equal(gate.firing_rate, torch.ones(3))
    record = ct.GateRecord()
    gate(torch.zeros(6, 1, 2, 2), record)
    assert len(record) == 0  # eval mode records nothing
    gate.train()
    gate(torch.zeros(6, 1, 2, 2))
    torch.testing.assert_close(gate.firing_rate, torch.full((3,), 0.9))


def test_firing_rate_in_float64_model():
    gate = ct.StaticGate(2, momentum=0.5).double().train()
    with torch.no_grad():
        gate.theta.copy_(torch.tensor([1.0, -1.0], dtype=torch.float64))
    gate(torch.zeros(2, 1, 1, 1, dtype=torch.float64))
    assert gate.firing_rate.dtype == torch.float64
    torch.testing.assert_close(gate.firing_rate, torch.tensor([1.0, 0.5], dtype=torch.float64))


# ----------------------------------------------------------------------------- freezing


@pytest.mark.parametrize("kind", ["dynamic", "static"])
def test_freeze_returns_mask_for_any_input(kind):
    torch.manual_seed(1)
    gate = make_gate(kind, 8, 5, depth=1).train()
    mask = torch.tensor([1, 0, 1, 0, 0])
    gate.freeze(mask)
    assert bool(gate.frozen)
    for scale in (1.0, -100.0, 100.0):
        x = scale * torch.randn(3, 8, 4, 4)
        out = gate(x)
        assert out.shape == (3, 5)
        assert torch.equal(out, mask.float().expand(3, -1))
    # a frozen gate does not update its firing rate nor record p/g
    assert torch.equal(gate.firing_rate, torch.ones(5))
    record = ct.GateRecord()
    gate(torch.zeros(2, 8, 1, 1), record)
    assert len(record) == 0
    # the frozen output follows the input dtype
    assert gate(torch.zeros(2, 8, 1, 1, dtype=torch.float64)).dtype == torch.float64
    gate.unfreeze()
    assert not bool(gate.frozen)
    assert torch.equal(gate(torch.zeros(2, 8, 1, 1)), torch.ones(2, 5))


def test_freeze_accepts_bool_and_float_masks():
    gate = ct.StaticGate(3)
    gate.freeze(torch.tensor([True, False, True]))
    assert gate.mask.tolist() == [1.0, 0.0, 1.0]
    gate.freeze(torch.tensor([0.0, 2.0, 0.0]))  # non-zero means open
    assert gate.mask.tolist() == [0.0, 1.0, 0.0]


@pytest.mark.parametrize("shape", [(4,), (6,), (1, 5), ()])
def test_freeze_wrong_shape_raises(shape):
    gate = ct.StaticGate(5)
    with pytest.raises(ValueError, match=r"shape \(5,\)"):
        gate.freeze(torch.ones(shape))
    assert not bool(gate.frozen)


# ----------------------------------------------------------------------------- the gate record


@pytest.mark.parametrize("kind,depth", [("dynamic", 1), ("dynamic", 2), ("static", 1)])
def test_recorded_p_and_g_carry_gradients_to_gate_parameters(kind, depth):
    torch.manual_seed(2)
    gate = make_gate(kind, 6, 4, depth=depth).train()
    x = torch.randn(3, 6, 5, 5)
    record = ct.GateRecord()
    g = gate(x, record)
    assert len(record) == 1 and record.gates == [gate]
    (p_rec,), (g_rec,) = record.p, record.g
    assert p_rec.shape == (3, 4) and g_rec.shape == (3, 4)
    assert g_rec is g
    torch.testing.assert_close(p_rec, gate.probabilities(x))
    assert p_rec.requires_grad and g_rec.requires_grad
    params = [p for p in gate.parameters()]
    # gradient of the mean firing probability reaches every parameter group of the gate
    grads_p = torch.autograd.grad(p_rec.mean(), params, retain_graph=True)
    assert all(gr.abs().sum() > 0 for gr in grads_p)
    grads_g = torch.autograd.grad(g_rec.sum(), params)
    assert all(gr.abs().sum() > 0 for gr in grads_g)
    # the last layer's bias (or theta) always gets gradient: d sum(g)/d s = p(1-p) per sample
    last = params[-1]
    grad_last = torch.autograd.grad(gate(x).sum(), last)[0]
    p = gate.probabilities(x).detach()
    torch.testing.assert_close(grad_last, (p * (1 - p)).sum(0))


def test_a_model_records_every_live_gate_in_forward_order():
    model = ct.cifar_resnet(8, gating="channel", gate="static").train()
    record = ct.GateRecord()
    model(torch.randn(2, 3, 32, 32), record=record)
    assert record.gates == list(ct.gate_modules(model).values())
    model(torch.randn(2, 3, 32, 32))  # no record: nothing is kept anywhere
    assert len(record) == 3
    assert not any(hasattr(g, "last_p") for g in record.gates)


# ----------------------------------------------------------------------------- freeze_gates


def test_freeze_gates_round_trip_on_a_model():
    model = ct.cifar_resnet(8, gating="channel", position="b", gate="static")
    gates = ct.gate_modules(model)
    masks = {n: torch.arange(g.units) % 2 == 0 for n, g in gates.items()}
    assert ct.freeze_gates(model, masks) is model
    got = ct.frozen_masks(model)
    assert got is not None and set(got) == set(masks)
    for n in masks:
        assert torch.equal(got[n], masks[n])
    ct.unfreeze_gates(model)
    assert ct.frozen_masks(model) is None


def test_freeze_gates_missing_key_raises():
    model = ct.cifar_resnet(8, gating="layer")
    masks = {n: torch.ones(1) for n in ct.gate_modules(model)}
    name = next(iter(masks))
    del masks[name]
    with pytest.raises(ValueError, match="missing") as info:
        ct.freeze_gates(model, masks)
    assert name in str(info.value)
    assert "ct.gate_modules" in str(info.value)
    # nothing was frozen
    assert not any(bool(g.frozen) for g in ct.gate_modules(model).values())


def test_freeze_gates_unknown_key_raises():
    model = ct.cifar_resnet(8, gating="layer")
    masks = {n: torch.ones(1) for n in ct.gate_modules(model)}
    masks["stages.9.9.gate"] = torch.ones(1)
    with pytest.raises(ValueError, match="unknown") as info:
        ct.freeze_gates(model, masks)
    assert "stages.9.9.gate" in str(info.value)


def test_freeze_gates_on_ungated_model_raises():
    with pytest.raises(ValueError, match="no gate modules"):
        ct.freeze_gates(ct.cifar_resnet(8), {})


def test_frozen_state_survives_a_state_dict_round_trip():
    """A checkpoint of a frozen model must load as frozen (the resume path depends on it)."""
    source = ct.cifar_resnet(8, gating="channel", gate="static")
    masks = {n: torch.arange(g.units) % 2 == 0 for n, g in ct.gate_modules(source).items()}
    ct.freeze_gates(source, masks)
    target = ct.cifar_resnet(8, gating="channel", gate="static")
    target.load_state_dict(source.state_dict())
    x = torch.randn(2, 3, 32, 32)
    for name, gate in ct.gate_modules(target).items():
        assert gate.is_frozen
        assert torch.equal(gate(x[:, :gate.units]), masks[name].float().expand(2, -1))
