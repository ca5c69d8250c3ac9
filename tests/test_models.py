"""Model builders: published sizes, every gating combination trains, gate counts, errors."""

from __future__ import annotations

import itertools

import pytest
import torch

import consensus_tutorial as ct
from consensus_tutorial.models import GatedBasicBlock, OptionAShortcut




# ----------------------------------------------------------------------------- published sizes


def _cifar_params_by_hand(depth: int, num_classes: int = 10) -> int:
    """Conv + BN + FC parameters of He et al.'s CIFAR ResNet (option-A shortcuts have none)."""
    n = (depth - 2) // 6
    total = 3 * 16 * 9 + 2 * 16  # stem conv + BN
    in_c = 16
    for width in (16, 32, 64):
        for _ in range(n):
            total += in_c * width * 9 + 2 * width + width * width * 9 + 2 * width
            in_c = width
    return total + 64 * num_classes + num_classes


def test_resnet20_params_published():
    params = ct.count_params(ct.cifar_resnet(20))
    assert params == _cifar_params_by_hand(20) == 269_722
    assert round(params / 1e6, 2) == 0.27


def test_resnet56_params_and_flops_published():
    model = ct.cifar_resnet(56)
    params = ct.count_params(model)
    assert params == _cifar_params_by_hand(56)
    assert round(params / 1e6, 2) == 0.85
    flops = ct.count_flops(model)
    assert flops == 125_485_696
    assert round(flops / 1e6, 2) == 125.49


def test_resnet110_params_published():
    params = ct.count_params(ct.cifar_resnet(110))
    assert params == _cifar_params_by_hand(110)
    assert round(params / 1e6, 1) == 1.7


def test_resnet56_flops_by_hand():
    # stem + 9 blocks x 2 convs per stage, the first conv of stages 2 and 3 with stride 2
    stage = 18 * 16 * 16 * 9 * 32 * 32
    down = (16 * 32 + 17 * 32 * 32) * 9 * 16 * 16
    last = (32 * 64 + 17 * 64 * 64) * 9 * 8 * 8
    by_hand = 3 * 16 * 9 * 32 * 32 + stage + down + last + 64 * 10
    assert by_hand == 125_485_696
    assert ct.count_flops(ct.cifar_resnet(56)) == by_hand


def test_cifar100_head():
    model = ct.cifar_resnet(20, num_classes=100)
    assert model.fc.out_features == 100
    assert ct.count_params(model) == _cifar_params_by_hand(20, 100)


def test_tiny_resnet18_shape_and_structure():
    model = ct.tiny_resnet18()
    assert model.input_shape == (3, 64, 64)
    out = model(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, 200)
    blocks = model.blocks()
    assert len(blocks) == 8
    kinds = [b.shortcut_kind for _, b in blocks]
    assert kinds == ["identity", "identity", "B", "identity", "B", "identity", "B", "identity"]
    assert isinstance(blocks[2][1].shortcut[0], torch.nn.Conv2d)
    assert blocks[2][1].shortcut[0].kernel_size == (1, 1)
    assert model.conv1.stride == (1, 1)  # 3x3 stride-1 stem, no max-pool
    assert not any(isinstance(m, torch.nn.MaxPool2d) for m in model.modules())
    # ResNet-18 with a 200-class head: 11.27 M parameters
    assert round(ct.count_params(model) / 1e6, 2) == 11.27


def test_cifar_resnet_option_a_shortcuts_are_parameter_free():
    model = ct.cifar_resnet(20)
    shortcuts = [b.shortcut for _, b in model.blocks()]
    assert sum(isinstance(s, OptionAShortcut) for s in shortcuts) == 2
    assert all(sum(p.numel() for p in s.parameters()) == 0 for s in shortcuts)
    x = torch.randn(2, 16, 32, 32)
    y = OptionAShortcut(16, 32, 2)(x)
    assert y.shape == (2, 32, 16, 16)
    torch.testing.assert_close(y[:, 8:24], x[:, :, ::2, ::2])
    assert y[:, :8].abs().sum() == 0 and y[:, 24:].abs().sum() == 0


def test_model_architecture_records_arguments():
    model = ct.cifar_resnet(14, 100, gating="channel", position="c", gate="static", init_prob=0.8)
    assert model.architecture == dict(
        family="cifar", depth=14, num_classes=100, gating="channel", position="c",
        gate="static", gate_depth=1, init_prob=0.8,
    )
    gate = next(iter(ct.gate_modules(model).values()))
    torch.testing.assert_close(torch.sigmoid(gate.theta), torch.full((16,), 0.8))


# ----------------------------------------------------------------------------- combinations

COMBOS = [
    ("layer", "b", "dynamic", 1),
    ("layer", "b", "dynamic", 2),
    ("layer", "b", "static", 1),
] + [
    ("channel", pos, kind, depth)
    for pos, (kind, depth) in itertools.product("abc", [("dynamic", 1), ("dynamic", 2), ("static", 1)])
]


@pytest.mark.parametrize("gating,position,gate,depth", COMBOS)
def test_every_gating_combination_trains(gating, position, gate, depth):
    torch.manual_seed(0)
    model = ct.cifar_resnet(8, gating=gating, position=position, gate=gate, gate_depth=depth).train()
    gates = ct.gate_modules(model)
    assert len(gates) == 3
    x = torch.randn(4, 3, 32, 32)
    record = ct.GateRecord()
    out = model(x, record=record)
    assert out.shape == (4, 10)
    assert torch.isfinite(out).all()
    # the regularizers read the recorded probabilities of every gate: make the loss depend on them too
    pbar = torch.cat([p.mean(0) for p in record.p])
    loss = torch.nn.functional.cross_entropy(out, torch.arange(4) % 10) + ct.polarization(pbar)
    loss.backward()
    for name, g in gates.items():
        grads = [p.grad for p in g.parameters()]
        assert grads and all(gr is not None for gr in grads), name
        assert any(gr.abs().sum() > 0 for gr in grads), name
    # the task loss alone reaches the gates through the STE
    model.zero_grad()
    torch.nn.functional.cross_entropy(model(x), torch.arange(4) % 10).backward()
    for name, g in gates.items():
        assert sum(float(p.grad.abs().sum()) for p in g.parameters()) > 0, name
    # firing rates moved by the training forward passes are still all 1 (gates start open)
    assert all(torch.equal(g.firing_rate, torch.ones_like(g.firing_rate)) for g in gates.values())


def test_gate_position_semantics_all_closed():
    """With every channel closed the block reduces to known closed forms (eval mode):
    (a) relu(x + bn2(conv2(relu(bn1(0))))), (b) relu(x + bn2(0)), (c) relu(x);
    and with every channel open each gated block equals the plain block."""
    torch.manual_seed(0)
    x = torch.randn(2, 16, 8, 8, dtype=torch.float64)
    for pos in "abc":
        torch.manual_seed(1)
        block = GatedBasicBlock(16, 16, gating="channel", position=pos, gate="static").double()
        with torch.no_grad():
            for bn in (block.bn1, block.bn2):
                bn.bias.normal_()
                bn.weight.uniform_(0.5, 1.5)
                bn.running_mean.normal_()
                bn.running_var.uniform_(0.5, 2.0)
        block.eval()
        plain = GatedBasicBlock(16, 16).double().eval()
        plain.load_state_dict({k: v for k, v in block.state_dict().items() if not k.startswith("gate.")})
        torch.testing.assert_close(block(x), plain(x))  # gates open: the same function
        block.gate.freeze(torch.zeros(16))
        zeros = torch.zeros_like(x)
        with torch.no_grad():
            if pos == "a":
                expected = torch.relu(x + block.bn2(block.conv2(torch.relu(block.bn1(block.conv1(zeros))))))
            elif pos == "b":
                expected = torch.relu(x + block.bn2(zeros))
            else:
                expected = torch.relu(x)
            got = block(x)
        torch.testing.assert_close(got, expected)
        assert not torch.allclose(got, plain(x))


def test_layer_gate_closed_block_is_identity_path():
    torch.manual_seed(0)
    block = GatedBasicBlock(16, 32, 2, gating="layer", gate="static").eval()
    x = torch.randn(2, 16, 8, 8)
    block.gate.freeze(torch.zeros(1))
    torch.testing.assert_close(block(x), torch.relu(block.shortcut(x)))
    assert block(x).shape == (2, 32, 4, 4)


# ----------------------------------------------------------------------------- gate counts


def test_gate_modules_counts_resnet20():
    # widths 16/32/64, 3 blocks per stage
    layer = ct.gate_modules(ct.cifar_resnet(20, gating="layer"))
    assert len(layer) == 9 and all(g.units == 1 for g in layer.values())
    assert all(g.unit == "block" for g in layer.values())
    assert list(layer)[0] == "stages.0.0.gate" and list(layer)[-1] == "stages.2.2.gate"

    # (a): conv1 inputs: 16,16,16 | 16,32,32 | 32,64,64
    a = ct.gate_modules(ct.cifar_resnet(20, gating="channel", position="a"))
    assert [g.units for g in a.values()] == [16, 16, 16, 16, 32, 32, 32, 64, 64]
    assert sum(g.units for g in a.values()) == 288
    # (b), (c): block outputs 3 x 16 + 3 x 32 + 3 x 64
    for pos in "bc":
        gates = ct.gate_modules(ct.cifar_resnet(20, gating="channel", position=pos))
        assert len(gates) == 9
        assert [g.units for g in gates.values()] == [16] * 3 + [32] * 3 + [64] * 3
        assert sum(g.units for g in gates.values()) == 336
        assert all(g.unit == "channel" for g in gates.values())
    assert ct.gate_modules(ct.cifar_resnet(20)) == {}


def test_gate_modules_counts_resnet56_and_tiny():
    assert len(ct.gate_modules(ct.cifar_resnet(56, gating="layer"))) == 27
    b56 = ct.gate_modules(ct.cifar_resnet(56, gating="channel", position="b", gate="static"))
    assert sum(g.units for g in b56.values()) == 9 * (16 + 32 + 64)
    tiny = ct.gate_modules(ct.tiny_resnet18(gating="channel", position="b", gate="static"))
    assert sum(g.units for g in tiny.values()) == 2 * (64 + 128 + 256 + 512)


def test_dynamic_gate_input_width_matches_position():
    model = ct.cifar_resnet(8, gating="channel", position="a")
    assert [g.mlp[0].in_features for g in ct.gate_modules(model).values()] == [16, 16, 32]
    model = ct.cifar_resnet(8, gating="layer")
    assert [g.mlp[0].in_features for g in ct.gate_modules(model).values()] == [16, 16, 32]
    model = ct.cifar_resnet(8, gating="channel", position="b")
    assert [g.mlp[0].in_features for g in ct.gate_modules(model).values()] == [16, 32, 64]


def test_count_params_without_gates():
    model = ct.cifar_resnet(20, gating="channel", position="b", gate="static")
    assert ct.count_params(model, include_gates=False) == ct.count_params(ct.cifar_resnet(20))
    assert ct.count_params(model) == ct.count_params(ct.cifar_resnet(20)) + 336


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize("depth", [21, 7, 2, 0, 20.0, "20"])
def test_bad_depth(depth):
    with pytest.raises(ValueError, match="6n\\+2") as info:
        ct.cifar_resnet(depth)
    assert "56" in str(info.value)


@pytest.mark.parametrize(
    "kwargs,name,allowed",
    [
        (dict(gating="channel", position="d"), "position", ["'a'", "'b'", "'c'"]),
        (dict(gating="block"), "gating", ["None", "'layer'", "'channel'"]),
        (dict(gating="layer", gate="soft"), "gate", ["'dynamic'", "'static'"]),
        (dict(gating="layer", gate_depth=3), "gate_depth", ["1", "2"]),
    ],
)
def test_bad_arguments_name_allowed_values(kwargs, name, allowed):
    for build in (lambda: ct.cifar_resnet(8, **kwargs), lambda: ct.tiny_resnet18(**kwargs)):
        with pytest.raises(ValueError) as info:
            build()
        message = str(info.value)
        assert message.startswith(name)
        for a in allowed:
            assert a in message


def test_bad_num_classes():
    with pytest.raises(ValueError, match="num_classes"):
        ct.cifar_resnet(8, num_classes=0)


def test_build_model_names():
    for arch, depth in [("resnet20", 20), ("resnet32", 32), ("resnet44", 44), ("resnet56", 56)]:
        model = ct.build_model(arch, 100)
        assert model.architecture["depth"] == depth and model.fc.out_features == 100
    model = ct.build_model("resnet18", 200, gating="layer")
    assert model.architecture["family"] == "tiny" and len(ct.gate_modules(model)) == 8
    model = ct.build_model("resnet20", 10, gating="channel", position="a", gate="static")
    assert sum(g.units for g in ct.gate_modules(model).values()) == 288
    with pytest.raises(ValueError) as info:
        ct.build_model("resnet50", 10)
    message = str(info.value)
    assert "arch" in message and "'resnet50'" in message
    for name in ("'resnet20'", "'resnet56'", "'resnet110'", "'resnet18'"):
        assert name in message


def test_a_resnet_built_directly_trains_with_a_flops_target():
    """No attribute comes from a factory: the objective finds the dense FLOPs of any ResNet."""
    from consensus_tutorial.models import ResNet
    from consensus_tutorial.objective import Objective

    model = ResNet((1, 1, 1), (16, 32, 64), 10, shortcut="A", input_shape=(3, 32, 32), gating="channel")
    assert model.architecture["family"] == "custom"
    assert ct.count_flops(model.dense_copy()) == ct.count_flops(ct.cifar_resnet(8))
    objective = Objective(target_rate=0.5).attach(model)
    record = ct.GateRecord()
    loss, terms = objective(model.train(), model(torch.randn(2, 3, 32, 32), record=record), torch.zeros(2).long(), 0,
                            record)
    assert 0.0 < objective._kappa < 1.0 and terms["sparsity"] > 0.0
