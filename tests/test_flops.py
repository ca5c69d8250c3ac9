"""FLOPs (MACs) per gated unit, mask-based FLOPs prediction, latency."""

from __future__ import annotations

import functools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import consensus_tutorial as ct




@functools.lru_cache(maxsize=None)
def _model(depth: int, gating, position: str = "b") -> ct.ResNet:
    return ct.cifar_resnet(depth, gating=gating, position=position, gate="static")


def _open(model):
    return {n: torch.ones(g.units, dtype=torch.bool) for n, g in ct.gate_modules(model).items()}


# ----------------------------------------------------------------------------- unit costs by hand


def test_unit_flops_channel_b_by_hand():
    model = _model(20, "channel", "b")
    costs = ct.unit_flops(model)
    assert list(costs) == list(ct.gate_modules(model))
    assert [c.numel() for c in costs.values()] == [16] * 3 + [32] * 3 + [64] * 3
    # one channel between the convs: a conv1 output (C_in * 9 * H * W) and a conv2 input
    # (C_out * 9 * H * W), at the block's output resolution
    # stages.0.0: 16 -> 16 at 32 x 32
    assert torch.equal(costs["stages.0.0.gate"], torch.full((16,), 16 * 9 * 32 * 32 + 16 * 9 * 32 * 32.0))
    assert float(costs["stages.0.0.gate"][0]) == 294_912
    # stages.1.0: 16 -> 32, stride 2, output 16 x 16
    assert float(costs["stages.1.0.gate"][5]) == 16 * 9 * 16 * 16 + 32 * 9 * 16 * 16 == 110_592
    # stages.2.2: 64 -> 64 at 8 x 8
    assert float(costs["stages.2.2.gate"][63]) == 64 * 9 * 8 * 8 * 2 == 73_728
    # the whole gated part of ResNet-20: every conv of every block
    blocks = (6 * 16 * 16 * 32 * 32 + (16 * 32 + 5 * 32 * 32) * 16 * 16 + (32 * 64 + 5 * 64 * 64) * 8 * 8) * 9
    assert float(sum(c.sum() for c in costs.values())) == blocks
    dense = ct.count_flops(ct.cifar_resnet(20))
    assert dense - blocks == 3 * 16 * 9 * 32 * 32 + 64 * 10  # stem + fc stay


def test_unit_flops_channel_a_and_c_by_hand():
    a = ct.unit_flops(_model(20, "channel", "a"))
    # (a): one block-input channel feeds every conv1 output: C_out * 9 * H_out * W_out
    assert a["stages.1.0.gate"].shape == (16,)
    assert float(a["stages.1.0.gate"][0]) == 32 * 9 * 16 * 16 == 73_728
    assert float(a["stages.0.1.gate"][3]) == 16 * 9 * 32 * 32
    c = ct.unit_flops(_model(20, "channel", "c"))
    # (c): one conv2 output channel: C_mid * 9 * H * W
    assert float(c["stages.1.0.gate"][0]) == 32 * 9 * 16 * 16
    assert float(c["stages.2.1.gate"][7]) == 64 * 9 * 8 * 8


def test_unit_flops_layer_is_block_conv_macs():
    costs = ct.unit_flops(_model(20, "layer"))
    assert all(c.shape == (1,) for c in costs.values())
    assert float(costs["stages.0.0.gate"][0]) == 2 * 16 * 16 * 9 * 32 * 32 == 4_718_592
    # down-sampling block: conv1 16 -> 32 (stride 2) + conv2 32 -> 32 at 16 x 16; the
    # option-A shortcut is free and stays
    assert float(costs["stages.1.0.gate"][0]) == (16 * 32 + 32 * 32) * 9 * 16 * 16 == 3_538_944
    assert float(costs["stages.2.0.gate"][0]) == (32 * 64 + 64 * 64) * 9 * 8 * 8
    assert float(costs["stages.2.2.gate"][0]) == 2 * 64 * 64 * 9 * 8 * 8


def test_unit_flops_layer_option_b_keeps_shortcut_cost():
    model = ct.tiny_resnet18(gating="layer", gate="static")
    costs = ct.unit_flops(model)
    # stages.1.0: 64 -> 128, stride 2, output 32 x 32; its 1x1 shortcut (64 * 128 * 32 * 32)
    # is not part of the unit cost: a closed down-sampling block keeps it
    assert float(costs["stages.1.0.gate"][0]) == (64 * 128 + 128 * 128) * 9 * 32 * 32
    assert float(costs["stages.0.0.gate"][0]) == 2 * 64 * 64 * 9 * 64 * 64
    masks = _open(model)
    masks["stages.1.0.gate"][0] = False
    dense = ct.predicted_flops(model, _open(model))
    assert dense - ct.predicted_flops(model, masks) == float(costs["stages.1.0.gate"][0])
    assert dense == ct.count_flops(ct.tiny_resnet18())


def test_unit_flops_input_size():
    model = _model(8, "channel", "b")
    small = ct.unit_flops(model)
    big = ct.unit_flops(model, input_size=(1, 3, 64, 64))
    for name in small:
        torch.testing.assert_close(big[name], 4 * small[name])


def test_unit_flops_ungated_is_empty():
    assert ct.unit_flops(ct.cifar_resnet(8)) == {}


# ----------------------------------------------------------------------------- predictions


@pytest.mark.parametrize("gating,position", [("layer", "b"), ("channel", "a"), ("channel", "b"), ("channel", "c")])
def test_closing_one_unit_saves_its_unit_cost(gating, position):
    model = _model(20, gating, position)
    costs = ct.unit_flops(model)
    dense = ct.predicted_flops(model, _open(model))
    assert dense == ct.count_flops(ct.cifar_resnet(20)) == ct.predicted_flops(ct.cifar_resnet(20))
    g = torch.Generator().manual_seed(0)
    for name, gate in ct.gate_modules(model).items():
        j = int(torch.randint(gate.units, (1,), generator=g))
        masks = _open(model)
        masks[name][j] = False
        assert dense - ct.predicted_flops(model, masks) == float(costs[name][j]), (name, j)


def test_prediction_matches_measured_flops_of_extracted_network():
    model = _model(8, "channel", "b")
    masks = _open(model)
    masks["stages.1.0.gate"][:20] = False
    masks["stages.2.0.gate"][::3] = False
    subnet = ct.extract_subnetwork(model, masks)
    assert ct.count_flops(subnet) == ct.predicted_flops(model, masks)
    costs = ct.unit_flops(model)
    saved = float(costs["stages.1.0.gate"][:20].sum() + costs["stages.2.0.gate"][::3].sum())
    assert ct.count_flops(ct.cifar_resnet(8)) - ct.count_flops(subnet) == saved


@pytest.mark.parametrize("position", ["a", "b", "c"])
@settings(max_examples=15, deadline=None)
@given(data=st.data())
def test_unit_costs_add_up(position, data):
    """Savings are additive over closed units at (a) and (b), and at (c) as long as a gate
    keeps a channel (a fully closed (c) gate also drops conv1: more is saved)."""
    model = _model(8, "channel", position)
    costs = ct.unit_flops(model)
    masks = {
        n: torch.tensor(data.draw(st.lists(st.booleans(), min_size=g.units, max_size=g.units), label=n))
        for n, g in ct.gate_modules(model).items()
    }
    dense = ct.predicted_flops(model, _open(model))
    saved = dense - ct.predicted_flops(model, masks)
    by_units = sum(float(costs[n][~m].sum()) for n, m in masks.items())
    if position == "c" and any(not bool(m.any()) for m in masks.values()):
        assert saved > by_units
    else:
        assert saved == by_units


def test_predicted_flops_default_masks_follow_firing_rates():
    model = ct.cifar_resnet(8, gating="layer", gate="static")
    with torch.no_grad():
        ct.gate_modules(model)["stages.0.0.gate"].firing_rate.fill_(0.2)
    cost = float(ct.unit_flops(model)["stages.0.0.gate"][0])
    assert ct.predicted_flops(model) == ct.count_flops(ct.cifar_resnet(8)) - cost


def test_count_flops_input_size_and_model_mode():
    model = ct.cifar_resnet(8).train()
    f32 = ct.count_flops(model)
    assert model.training  # mode restored
    f64 = ct.count_flops(model, input_size=(1, 3, 64, 64))
    assert f64 - 640 == 4 * (f32 - 640)  # all but the fc scale with the pixel count
    # batch 2 counts two images
    assert ct.count_flops(model, input_size=(2, 3, 32, 32)) == 2 * f32


# ----------------------------------------------------------------------------- latency


def test_measure_latency():
    model = ct.cifar_resnet(8).train()
    seconds = ct.measure_latency(model, repeats=3, warmup=1)
    assert isinstance(seconds, float) and seconds > 0
    assert model.training
    assert ct.measure_latency(model, (2, 3, 16, 16), repeats=1, warmup=0) > 0


@pytest.mark.parametrize("repeats,warmup", [(0, 1), (-1, 1), (3, -1)])
def test_measure_latency_rejects_bad_counts(repeats, warmup):
    with pytest.raises(ValueError, match="repeats must be >= 1"):
        ct.measure_latency(ct.cifar_resnet(8), repeats=repeats, warmup=warmup)


def test_measure_latency_cpu_clock_counts_the_work():
    model = ct.cifar_resnet(8)
    small = ct.measure_latency(model, (1, 3, 8, 8), repeats=5, warmup=1, clock="cpu")
    large = ct.measure_latency(model, (32, 3, 32, 32), repeats=5, warmup=1, clock="cpu")
    assert 0 < small < large  # 512 times the pixels costs more CPU time


def test_measure_latency_rejects_an_unknown_clock():
    with pytest.raises(ValueError, match="clock must be 'wall' or 'cpu'"):
        ct.measure_latency(ct.cifar_resnet(8), repeats=1, clock="gpu")


def test_unit_params_hand_values():
    # position b, stage 1: conv1's filter (16 x 3 x 3), its BN scale and shift, conv2's
    # input slice (16 x 3 x 3); stage 3: 64 instead of 16
    model = ct.cifar_resnet(20, gating="channel", position="b")
    params = ct.unit_params(model)
    assert float(params["stages.0.0.gate"][0]) == 16 * 9 + 2 + 16 * 9
    assert float(params["stages.2.2.gate"][5]) == 64 * 9 + 2 + 64 * 9
    assert float(params["stages.2.0.gate"][0]) == 32 * 9 + 2 + 64 * 9  # conv1 reads stage 2's 32 channels


def test_count_flops_counts_conv_and_linear_macs_only():
    """Convolutions and linear layers, one multiply-accumulate each; batch norm, ReLU,
    pooling and biases are not counted (the literature's convention)."""
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 2))
    assert ct.count_flops(model, input_size=(1, 3, 8, 8)) == 3 * 4 * 9 * 8 * 8 + 4 * 2


def test_every_committed_subnetwork_counts_the_flops_its_run_recorded():
    """The runs committed before the switch from fvcore to PyTorch's FlopCounterMode
    recorded fvcore's counts; the new counter gives the same number for every one."""
    import json
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    files = sorted((root / "results").rglob("subnetwork.pt"))
    assert len(files) >= 20
    for file in files:
        metrics = json.loads((file.parent / "metrics.json").read_text())
        assert ct.count_flops(ct.load_subnetwork(file)) == metrics["flops_extracted"], file
