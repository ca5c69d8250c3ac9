"""Deployment copies of a network: folded batch norm, channels-last memory; same logits."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import consensus_tutorial as ct
from consensus_tutorial.deploy import MODES, deployed, fold_batchnorm


def _trained_like(model: nn.Module) -> nn.Module:
    """Batch-norm statistics and affine parameters that are not the identity."""
    torch.manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            with torch.no_grad():
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.3, 0.3)
    return model.eval()


def _extracted(gating: str, position: str) -> nn.Module:
    model = _trained_like(ct.cifar_resnet(20, gating=gating, position=position, gate="static"))
    gen = torch.Generator().manual_seed(0)
    masks = {n: torch.rand(g.units, generator=gen) > 0.5 for n, g in ct.gate_modules(model).items()}
    return ct.extract_subnetwork(ct.freeze_gates(model, masks))


@pytest.mark.parametrize("build", [
    lambda: _trained_like(ct.cifar_resnet(20)), lambda: _trained_like(ct.tiny_resnet18(10)),
    lambda: _extracted("channel", "a"), lambda: _extracted("channel", "b"), lambda: _extracted("channel", "c"),
    lambda: _extracted("layer", "b"),
], ids=["dense", "option-b-shortcuts", "a", "b", "c", "layer"])
def test_folding_keeps_the_logits_and_leaves_no_batch_norm(build):
    net = build().double()
    x = torch.randn(3, *getattr(net, "input_shape", (3, 32, 32)), dtype=torch.float64)
    folded = fold_batchnorm(net)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    torch.testing.assert_close(folded(x), net(x), rtol=1e-10, atol=1e-10)
    last = deployed(net, "folded+channels_last")
    torch.testing.assert_close(last(x.contiguous(memory_format=torch.channels_last)), net(x), rtol=1e-10, atol=1e-10)
    assert any(isinstance(m, nn.BatchNorm2d) for m in net.modules())  # the original is untouched


def test_modes_and_errors():
    assert set(MODES) == {"eager", "folded", "folded+channels_last", "compiled"}
    with pytest.raises(ValueError, match="mode must be one of"):
        deployed(ct.cifar_resnet(20), "fast")
