"""Training the extracted network after the gates freeze equals training the gated model
with its gates frozen (the hand-over of ``train_extracted``), step for step."""

from __future__ import annotations

import copy

import pytest
import torch

import consensus_tutorial as ct
from consensus_tutorial.handover import hand_over, slice_like_parameters
from consensus_tutorial.training import TrainConfig, make_weight_optimizer


def _weights(model):
    gate_ids = {id(p) for g in ct.gate_modules(model).values() for p in g.parameters()}
    return [p for p in model.parameters() if id(p) not in gate_ids]


def _step(net, optimizer, scheduler, x, y):
    loss = torch.nn.functional.cross_entropy(net(x), y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    scheduler.step()


@pytest.mark.parametrize("gating, position", [("channel", "b"), ("channel", "c"), ("channel", "a"), ("layer", "b")])
def test_extracted_training_follows_the_frozen_gated_model(gating, position):
    torch.manual_seed(0)
    model = ct.cifar_resnet(20, gating=gating, position=position, gate="static").double()
    masks = {n: torch.rand(g.units) < 0.6 for n, g in ct.gate_modules(model).items()}
    if gating == "layer":
        masks = {n: torch.tensor([i % 2 == 0]) for i, n in enumerate(masks)}  # every other block closes
    else:
        for m in masks.values():
            m[0] = True  # a fully closed channel layer keeps a constant, which has no weights to follow
    ct.freeze_gates(model, masks)
    twin = copy.deepcopy(model)
    config = TrainConfig(lr=0.2, weight_decay=5e-4, schedule="onecycle")
    batches = [(torch.randn(8, 3, 32, 32, dtype=torch.float64), torch.randint(0, 10, (8,))) for _ in range(4)]

    opt_a, sched_a = make_weight_optimizer(_weights(model), config, total_steps=10)
    for x, y in batches:
        _step(model.train(), opt_a, sched_a, x, y)

    opt_b, sched_b = make_weight_optimizer(_weights(twin), config, total_steps=10)
    for x, y in batches[:2]:
        _step(twin.train(), opt_b, sched_b, x, y)
    subnet, opt_b, sched_b = hand_over(twin, masks, opt_b, sched_b,
                                       lambda params: make_weight_optimizer(params, config, 10))
    assert subnet.training and ct.gate_modules(subnet) == {}
    for x, y in batches[2:]:
        _step(subnet, opt_b, sched_b, x, y)

    assert sched_b.get_last_lr() == sched_a.get_last_lr()
    expected = ct.extract_subnetwork(model, masks)
    probe = torch.randn(5, 3, 32, 32, dtype=torch.float64)
    torch.testing.assert_close(subnet.eval()(probe), expected(probe), rtol=0, atol=1e-9)
    assert ct.count_flops(subnet) < ct.count_flops(model)


def test_momentum_is_cut_like_the_weights():
    torch.manual_seed(1)
    model = ct.cifar_resnet(20, gating="channel", position="b", gate="static")
    masks = {n: torch.rand(g.units) < 0.5 for n, g in ct.gate_modules(model).items()}
    tensors = {n: p.detach() * 3.0 for n, p in model.named_parameters()}
    cut = slice_like_parameters(model, masks, tensors)
    subnet = ct.extract_subnetwork(model, masks)
    for name, p in subnet.named_parameters():
        torch.testing.assert_close(cut[name], p.detach() * 3.0)
