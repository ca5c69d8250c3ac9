"""How the budget is shared by the gated layers (``allocation``, ``min_keep``), the gates'
optimizer groups, the settle-then-train phase and the random-at-widths control."""

from __future__ import annotations

import json

import pytest
import torch

import consensus_tutorial as ct
from consensus_tutorial.baselines import masks_with_widths, read_widths
from consensus_tutorial.objective import ALLOCATIONS, floor_penalty
from consensus_tutorial.settle import Settler
from consensus_tutorial.training import TrainConfig, _gate_groups

KEEPS = [torch.tensor([1.0, 0.0]), torch.tensor([1.0, 1.0, 0.0, 0.0])]
WEIGHTS = [torch.tensor([0.3, 0.3]), torch.tensor([0.1, 0.1, 0.1, 0.1])]


def test_global_allocation_hand_value():
    # kept weight 0.3 + 0.2 = 0.5 of 1.0; kappa 0.4 -> (0.5 - 0.4)^2
    value = ALLOCATIONS["global"](KEEPS, WEIGHTS, 0.4)
    assert float(value) == pytest.approx(0.01)


def test_uniform_allocation_hand_value():
    # layer 1 keeps 0.5, layer 2 keeps 0.5: ((0.5 - 0.2)^2 + (0.5 - 0.2)^2) / 2
    assert float(ALLOCATIONS["uniform"](KEEPS, WEIGHTS, 0.2)) == pytest.approx(0.09)
    unbalanced = [torch.tensor([1.0, 1.0]), torch.tensor([0.0, 0.0, 0.0, 0.0])]
    # globally on target (0.6 of the weight kept for kappa 0.6), per layer far off both ways
    assert float(ALLOCATIONS["global"](unbalanced, WEIGHTS, 0.6)) == pytest.approx(0.0, abs=1e-12)
    assert float(ALLOCATIONS["uniform"](unbalanced, WEIGHTS, 0.6)) == pytest.approx((0.16 + 0.36) / 2)


def test_floor_penalty_hand_value_and_gradient():
    keeps = [torch.tensor([1.0, 0.0], requires_grad=True), torch.tensor([0.0, 0.0, 0.0, 1.0], requires_grad=True)]
    value = floor_penalty(keeps, [None, None], 0.4)  # layer 1 keeps 0.5 (above), layer 2 keeps 0.25
    assert float(value.detach()) == pytest.approx(0.15 ** 2 / 2)
    value.backward()
    assert torch.all(keeps[0].grad == 0)  # a layer above its floor feels nothing
    # d/dk_j of (0.4 - mean k)^2 / 2 = -(0.4 - 0.25) / 4
    torch.testing.assert_close(keeps[1].grad, torch.full((4,), -0.15 / 4))


def test_objective_uniform_pulls_each_layer_to_its_share():
    model = ct.cifar_resnet(20, gating="channel", gate="static")
    from consensus_tutorial.objective import Objective

    objective = Objective(target_rate=0.5, allocation="uniform", lambda_pol=0.0).attach(model)
    model.train()
    record = ct.GateRecord()
    logits = model(torch.randn(4, 3, 32, 32), record=record)
    loss, terms = objective(model, logits, torch.zeros(4, dtype=torch.long), 0, record)
    kappa = objective._kappa
    assert float(terms["sparsity"]) == pytest.approx((1.0 - kappa) ** 2, rel=1e-5)  # every gate open at the start


def test_bad_allocation_settings_are_named():
    with pytest.raises(ValueError, match="allocation"):
        TrainConfig(allocation="per-stage").validate()
    with pytest.raises(ValueError, match="min_keep"):
        TrainConfig(min_keep=1.0).validate()
    with pytest.raises(ValueError, match="gating='channel'"):
        TrainConfig(allocation="uniform", gating="layer").validate()
    with pytest.raises(ValueError, match="settle_window"):
        TrainConfig(settle_window=0).validate()


def test_consensus_masks_floor_keeps_a_share_of_every_layer():
    model = ct.cifar_resnet(20, gating="channel", gate="static")
    for gate in ct.gate_modules(model).values():
        gate.firing_rate.fill_(0.1)
    masks = ct.consensus_masks(model, min_share=0.25)
    assert {n: int(m.sum()) for n, m in masks.items()} == {
        n: -(-g.units // 4) for n, g in ct.gate_modules(model).items()}


def test_gate_groups_scale_by_cost_and_input():
    model = ct.cifar_resnet(20, gating="channel", gate="dynamic")
    groups = _gate_groups(model, TrainConfig(gate_lr=0.01, gate_lr_scale="cost", gate_input_lr_scale=0.1))
    # per gate: [bias], [input weights]; a stage-1 unit costs 4x a stage-3 unit at position b
    assert len(groups) == 18
    stage1_bias, stage1_weights, stage3_bias = groups[0], groups[1], groups[-2]
    assert stage1_bias["lr"] == pytest.approx(4 * stage3_bias["lr"])
    assert stage1_weights["lr"] == pytest.approx(0.1 * stage1_bias["lr"])
    assert [p.shape for p in stage1_bias["params"]] == [torch.Size([16])]
    every = [p for g in groups for p in g["params"]]
    assert len(every) == len(list(p for g in ct.gate_modules(model).values() for p in g.parameters()))


BUDGET = {"a": torch.tensor([True, False]), "b": torch.tensor([True, True, False, False])}


def _settler(window=4, tolerance=0.05, deadline=100, max_flips=0.0, masks=None):
    state = {"masks": masks}
    return Settler(masks_of=lambda m: state["masks"], budget_masks=lambda m: BUDGET,
                   target_rate=0.5, flops_aware=False, window=window, tolerance=tolerance,
                   deadline_step=deadline, max_flips=max_flips), state


def test_settler_freezes_a_steady_mask_near_the_target_cut_to_the_budget():
    near = {"a": torch.tensor([True, True]), "b": torch.tensor([True, False, False, False])}  # removes 0.5
    settler, state = _settler(masks=near)
    assert settler.every == 1
    assert [settler.check(None, s) for s in (1, 2, 3, 4)] == [None] * 4  # steady for 3 steps only
    assert settler.check(None, 5) is BUDGET
    assert settler.record["reason"] == "settled" and settler.record["step"] == 5
    assert settler.record["removed"] == 0.5
    assert settler.record["cut_flips"] == pytest.approx(2 / 6)  # the cut moved two units
    assert settler.record["trace"][:2] == [[1, 0.5, None], [2, 0.5, 0.0]]

    settler, state = _settler(masks={"a": torch.tensor([True, True]), "b": torch.tensor([True] * 4)})
    assert all(settler.check(None, s) is None for s in range(1, 50))  # steady but far from the target


def test_settler_waits_while_the_mask_moves_and_meets_its_deadline():
    settler, state = _settler(deadline=10, max_flips=0.2)
    half = {"a": torch.tensor([True, False]), "b": torch.tensor([True, True, False, False])}
    state["masks"] = half
    for s in (1, 2, 3):
        settler.check(None, s)
    state["masks"] = {"a": torch.tensor([True, False]), "b": torch.tensor([True, False, True, False])}
    assert settler.check(None, 4) is None and settler.stable_since == 4  # 2 of 6 units flipped > 0.2
    state["masks"] = {"a": torch.tensor([True, False]), "b": torch.tensor([True, False, True, False])}
    assert settler.check(None, 5) is None and settler.stable_since == 4  # no flip: the window runs
    assert settler.check(None, 10) is BUDGET
    assert settler.record["reason"] == "deadline"


def test_random_at_widths_keeps_the_recorded_widths(tmp_path):
    model = ct.cifar_resnet(20, gating="channel", gate="static")
    widths = {n: max(1, g.units // 3) for n, g in ct.gate_modules(model).items()}
    (tmp_path / "metrics.json").write_text(json.dumps({"kept_units": widths}))
    assert read_widths(tmp_path) == widths
    scores = {n: torch.rand(g.units) for n, g in ct.gate_modules(model).items()}
    masks = masks_with_widths(model, scores, widths)
    assert {n: int(m.sum()) for n, m in masks.items()} == widths
    with pytest.raises(ValueError, match="do not fit"):
        masks_with_widths(model, scores, {**widths, "stages.0.0.gate": 99})
    with pytest.raises(FileNotFoundError, match="no metrics.json"):
        read_widths(tmp_path / "missing")
    with pytest.raises(ValueError, match="method='random'"):
        TrainConfig(method="consensus", widths_from=str(tmp_path)).validate()


def test_budget_masks_close_whole_blocks_under_layer_gating():
    from consensus_tutorial.training import make_settler

    model = ct.cifar_resnet(20, gating="layer", gate="static")
    for i, gate in enumerate(ct.gate_modules(model).values()):
        gate.firing_rate.fill_(1.0 - 0.05 * i)  # later blocks fire less
    settler = make_settler(TrainConfig(gating="layer", target_rate=0.3), total_steps=100)
    masks = settler.budget_masks(model)
    removed = settler.removed_share(model, masks)
    assert 0.2 <= removed <= 0.35 and not masks["stages.2.2.gate"]  # the least firing block closes first
