"""Surgery: the extracted sub-network computes exactly what the frozen gated model computes,
has no gates, and has the predicted (smaller) FLOPs. Plus consensus masks, save/load and
the disagreement rate."""

from __future__ import annotations

import functools

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import consensus_tutorial as ct
from consensus_tutorial.extraction import PrunedBasicBlock



TOL = dict(rtol=1e-10, atol=1e-10)

# (gating, position, gate kind, gate depth); position only matters for channel gating
COMBOS = (
    [("layer", "b", "dynamic", 1), ("layer", "b", "dynamic", 2), ("layer", "b", "static", 1)]
    + [("channel", pos, "dynamic", 1) for pos in "abc"]
    + [("channel", pos, "dynamic", 2) for pos in "abc"]
    + [("channel", pos, "static", 1) for pos in "abc"]
)


def _randomize_bn(model: torch.nn.Module, seed: int) -> None:
    """Non-trivial BN affine parameters, so that closed branches leave non-zero constants."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.copy_(0.5 + torch.rand(m.weight.shape, generator=g, dtype=torch.float64))
                m.bias.copy_(0.5 * torch.randn(m.bias.shape, generator=g, dtype=torch.float64))


def _warm_up(model: torch.nn.Module, input_shape, seed: int, steps: int = 3, batch: int = 8):
    """A few training-mode forwards on random data: BN running stats move away from 0 / 1."""
    g = torch.Generator().manual_seed(seed)
    model.train()
    with torch.no_grad():
        for _ in range(steps):
            model(torch.randn(batch, *input_shape, generator=g, dtype=torch.float64) * 2 + 0.3)
    return model


@functools.lru_cache(maxsize=None)
def _prepared(depth: int, gating, position: str, gate: str, gate_depth: int) -> ct.ResNet:
    torch.manual_seed(depth * 7 + gate_depth)
    model = ct.cifar_resnet(depth, gating=gating, position=position, gate=gate, gate_depth=gate_depth)
    model.double()
    _randomize_bn(model, seed=depth)
    _warm_up(model, (3, 32, 32), seed=depth + 1)
    bn = model.stages[0][0].bn1
    assert not torch.allclose(bn.running_mean, torch.zeros_like(bn.running_mean))
    return model.eval()


@functools.lru_cache(maxsize=None)
def _dense_cost(depth: int) -> tuple[int, int]:
    dense = ct.cifar_resnet(depth)
    return ct.count_flops(dense), ct.count_params(dense)


def _inputs(seed: int = 0, batch: int = 4, shape=(3, 32, 32)) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, *shape, generator=g, dtype=torch.float64)


def _check_extraction(model: ct.ResNet, masks, x: torch.Tensor, *, defaults: bool = True) -> ct.PrunedResNet:
    """Freeze, extract and compare; returns the sub-network. With ``defaults``, also check
    that extracting with the default masks (the frozen ones) gives the same network."""
    ct.freeze_gates(model, masks)
    model.eval()
    with torch.no_grad():
        expected = model(x)
    subnet = ct.extract_subnetwork(model, masks)
    assert isinstance(subnet, ct.PrunedResNet)
    assert not subnet.training
    assert next(subnet.parameters()).dtype == torch.float64
    assert ct.gate_modules(subnet) == {}
    with torch.no_grad():
        got = subnet(x)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, **TOL)
    if defaults:  # the default masks of a fully frozen model are its frozen masks
        assert ct.extract_subnetwork(model).spec == subnet.spec
    return subnet


def _mask_strategy(units: int):
    return st.one_of(
        st.just([True] * units),
        st.just([False] * units),
        st.lists(st.booleans(), min_size=units, max_size=units),
    )


def _masks_strategy(model: ct.ResNet):
    gates = ct.gate_modules(model)
    return st.fixed_dictionaries(
        {n: _mask_strategy(g.units).map(lambda m: torch.tensor(m)) for n, g in gates.items()}
    )


# ----------------------------------------------------------------------------- the heart


@pytest.mark.parametrize("gating,position,gate,gate_depth", COMBOS)
@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_extracted_equals_frozen_gated(gating, position, gate, gate_depth, data):
    depth = 8
    model = _prepared(depth, gating, position, gate, gate_depth)
    masks = data.draw(_masks_strategy(model), label="masks")
    x = _inputs(seed=len(masks))
    subnet = _check_extraction(model, masks, x)

    flops = ct.count_flops(subnet)
    assert flops == ct.predicted_flops(model, masks)
    dense_flops, dense_params = _dense_cost(depth)
    params = ct.count_params(subnet)
    any_closed = any(not bool(m.all()) for m in masks.values())
    if any_closed:
        assert flops < dense_flops
        assert params < dense_params
    else:
        assert flops == dense_flops
        assert params == dense_params

    if gating == "layer":
        # each closed block removes exactly its two convolutions (option-A shortcuts are free)
        removed, h = 0, 32
        for name, block in model.blocks():
            h //= block.stride  # output resolution of the block
            if not bool(masks[f"{name}.gate"][0]):
                removed += 9 * h * h * (block.in_channels * block.out_channels + block.out_channels ** 2)
        assert dense_flops - flops == removed
        kept_blocks = sum(1 for n, b in model.blocks() if bool(masks[f"{n}.gate"][0]) or b.stride != 1)
        assert len(subnet.blocks) == kept_blocks


def test_layer_block_flops_by_hand_resnet8():
    """Spot-check of the formula used above: resnet8's three blocks."""
    model = _prepared(8, "layer", "b", "static", 1)
    masks = {n: torch.tensor([False]) for n in ct.gate_modules(model)}
    blocks = 2 * 16 * 16 * 9 * 32 * 32 + (16 * 32 + 32 * 32) * 9 * 16 * 16 + (32 * 64 + 64 * 64) * 9 * 8 * 8
    assert ct.predicted_flops(model, masks) == _dense_cost(8)[0] - blocks
    # what is left: stem + fc
    assert ct.predicted_flops(model, masks) == 3 * 16 * 9 * 32 * 32 + 64 * 10


# ----------------------------------------------------------------------------- edge cases


@pytest.mark.parametrize("position", ["a", "b", "c"])
@pytest.mark.parametrize("gate_index", [0, 1, 2])
def test_all_channels_of_one_gate_closed(position, gate_index):
    model = _prepared(8, "channel", position, "static", 1)
    gates = ct.gate_modules(model)
    names = list(gates)
    g = torch.Generator().manual_seed(gate_index)
    masks = {n: torch.rand(gates[n].units, generator=g) < 0.7 for n in names}
    masks[names[gate_index]] = torch.zeros(gates[names[gate_index]].units, dtype=torch.bool)
    subnet = _check_extraction(model, masks, _inputs(seed=5))
    assert ct.count_flops(subnet) == ct.predicted_flops(model, masks)
    block_name = names[gate_index].removesuffix(".gate")
    spec = next(b for b in subnet.spec["blocks"] if b["name"] == block_name)
    expected_branch = {"a": "const_hidden", "b": "bias", "c": "none"}[position]
    assert spec["branch"] == expected_branch
    # an identity-shortcut block with nothing left is dropped; a down-sampling one stays
    assert spec["dropped"] == (position == "c" and gate_index == 0)
    kinds = [type(m) for m in subnet.blocks]
    assert all(k is PrunedBasicBlock for k in kinds)
    assert len(subnet.blocks) == 3 - int(spec["dropped"])


def test_all_channels_closed_everywhere():
    for position in "abc":
        model = _prepared(8, "channel", position, "dynamic", 1)
        masks = {n: torch.zeros(g.units, dtype=torch.bool) for n, g in ct.gate_modules(model).items()}
        subnet = _check_extraction(model, masks, _inputs(seed=6))
        assert ct.count_flops(subnet) == ct.predicted_flops(model, masks)
        assert ct.count_flops(subnet) < _dense_cost(8)[0]


def test_all_blocks_closed_under_layer_gating():
    model = _prepared(8, "layer", "b", "dynamic", 1)
    masks = {n: torch.tensor([False]) for n in ct.gate_modules(model)}
    x = _inputs(seed=7)
    subnet = _check_extraction(model, masks, x)
    # only the two down-sampling blocks survive, as pure (option-A) shortcuts
    assert len(subnet.blocks) == 2
    assert all(b.branch == "none" for b in subnet.blocks)
    assert [b.stride for b in subnet.blocks] == [2, 2]
    feats = subnet.blocks(torch.relu(subnet.bn1(subnet.conv1(x))))
    assert feats.shape == (4, 64, 8, 8)
    assert ct.count_flops(subnet) == 3 * 16 * 9 * 32 * 32 + 64 * 10 == ct.predicted_flops(model, masks)
    # parameters: stem conv + BN + fc only
    assert ct.count_params(subnet) == 3 * 16 * 9 + 2 * 16 + 64 * 10 + 10


@pytest.mark.parametrize("gating,position", [("layer", "b"), ("channel", "a"), ("channel", "b"), ("channel", "c")])
def test_all_open_equals_dense(gating, position):
    model = _prepared(8, gating, position, "static", 1)
    masks = {n: torch.ones(g.units, dtype=torch.bool) for n, g in ct.gate_modules(model).items()}
    subnet = _check_extraction(model, masks, _inputs(seed=8))
    assert ct.count_flops(subnet) == _dense_cost(8)[0] == ct.predicted_flops(model, masks)
    assert ct.count_params(subnet) == _dense_cost(8)[1]
    assert all(b["branch"] == "conv" and b["in_index"] is None and b["out_index"] is None
               for b in subnet.spec["blocks"])


def test_ungated_model_extracts_to_equivalent_network():
    torch.manual_seed(3)
    model = ct.cifar_resnet(8).double()
    _randomize_bn(model, 3)
    _warm_up(model, (3, 32, 32), seed=3)
    model.eval()
    x = _inputs(seed=9)
    subnet = ct.extract_subnetwork(model)
    assert ct.gate_modules(subnet) == {}
    with torch.no_grad():
        torch.testing.assert_close(subnet(x), model(x), rtol=0, atol=0)
    assert ct.count_flops(subnet) == ct.count_flops(model) == ct.predicted_flops(model)
    assert ct.count_params(subnet) == ct.count_params(model)
    assert len(subnet.blocks) == 3
    with pytest.raises(TypeError, match="ResNets"):
        ct.extract_subnetwork(torch.nn.Sequential(torch.nn.Conv2d(3, 3, 1)))


@pytest.mark.parametrize("gating,position", [("layer", "b"), ("channel", "c")])
def test_tiny_resnet18_option_b(gating, position):
    torch.manual_seed(4)
    model = ct.tiny_resnet18(num_classes=20, gating=gating, position=position, gate="static").double()
    _randomize_bn(model, 4)
    _warm_up(model, (3, 64, 64), seed=4, steps=1, batch=2)
    model.eval()
    gates = ct.gate_modules(model)
    x = _inputs(seed=10, batch=2, shape=(3, 64, 64))
    g = torch.Generator().manual_seed(11)
    masks = {n: torch.rand(gt.units, generator=g) < 0.6 for n, gt in gates.items()}
    if gating == "layer":  # close a down-sampling block (its option-B 1x1 shortcut must stay)
        masks["stages.1.0.gate"] = torch.tensor([False])
        masks["stages.1.1.gate"] = torch.tensor([False])
        masks["stages.2.0.gate"] = torch.tensor([True])
    else:  # close every channel of a down-sampling block's gate at (c)
        masks["stages.2.0.gate"] = torch.zeros(256, dtype=torch.bool)
    subnet = _check_extraction(model, masks, x, defaults=False)
    flops = ct.count_flops(subnet)
    assert flops == ct.predicted_flops(model, masks)
    assert flops < ct.count_flops(ct.tiny_resnet18(num_classes=20))
    spec = {b["name"]: b for b in subnet.spec["blocks"]}
    down = spec["stages.1.0" if gating == "layer" else "stages.2.0"]
    assert down["shortcut"] == "B" and down["branch"] == "none" and not down["dropped"]
    if gating == "layer":
        assert spec["stages.1.1"]["dropped"]
        # the kept shortcut is the trained 1x1 conv + BN of the gated model
        kept = [b for b in subnet.blocks if b.stride == 2][0]
        torch.testing.assert_close(kept.shortcut[0].weight, model.stages[1][0].shortcut[0].weight)


# ----------------------------------------------------------------------------- spec details


def test_spec_indices_for_partial_masks():
    model = _prepared(8, "channel", "a", "static", 1)
    masks = {n: torch.ones(g.units, dtype=torch.bool) for n, g in ct.gate_modules(model).items()}
    masks["stages.1.0.gate"][[0, 3, 5]] = False
    spec = ct.subnetwork_spec(model, masks)
    block = spec["blocks"][1]
    assert block["in_index"] == [j for j in range(16) if j not in (0, 3, 5)]
    assert block["mid_channels"] == 32 and block["out_index"] is None
    model_c = _prepared(8, "channel", "c", "static", 1)
    masks_c = {n: torch.ones(g.units, dtype=torch.bool) for n, g in ct.gate_modules(model_c).items()}
    masks_c["stages.2.0.gate"][10:] = False
    block_c = ct.subnetwork_spec(model_c, masks_c)["blocks"][2]
    assert block_c["out_index"] == list(range(10))
    model_b = _prepared(8, "channel", "b", "static", 1)
    masks_b = {n: torch.ones(g.units, dtype=torch.bool) for n, g in ct.gate_modules(model_b).items()}
    masks_b["stages.0.0.gate"][:4] = False
    assert ct.subnetwork_spec(model_b, masks_b)["blocks"][0]["mid_channels"] == 12


def test_extract_default_masks_are_consensus_masks_for_live_gates():
    torch.manual_seed(5)
    model = ct.cifar_resnet(8, gating="channel", position="b", gate="dynamic").double()
    _randomize_bn(model, 5)
    _warm_up(model, (3, 32, 32), seed=5)
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for gate in ct.gate_modules(model).values():
            gate.firing_rate.copy_(torch.rand(gate.units, generator=g, dtype=torch.float64))
    masks = ct.consensus_masks(model)
    subnet = ct.extract_subnetwork(model)  # live gates: consensus masks, model untouched
    assert ct.frozen_masks(model) is None
    assert subnet.spec == ct.subnetwork_spec(model, masks)
    x = _inputs(seed=12)
    ct.freeze_gates(model, masks)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(subnet(x), model(x), **TOL)


# ----------------------------------------------------------------------------- consensus masks


def _set_rates(model, rates):
    with torch.no_grad():
        for gate, r in zip(ct.gate_modules(model).values(), rates):
            gate.firing_rate.copy_(torch.as_tensor(r, dtype=gate.firing_rate.dtype))


def test_consensus_masks_threshold_rule():
    model = ct.cifar_resnet(8, gating="channel", position="b", gate="static")
    r0 = torch.linspace(0.0, 1.0, 16)
    r1 = torch.full((32,), 0.5)
    r2 = torch.tensor([0.49, 0.51] * 32)
    _set_rates(model, [r0, r1, r2])
    masks = ct.consensus_masks(model)
    names = list(ct.gate_modules(model))
    assert set(masks) == set(names)
    assert masks[names[0]].dtype == torch.bool
    assert torch.equal(masks[names[0]], r0 >= 0.5)
    assert int(masks[names[0]].sum()) == 8
    assert bool(masks[names[1]].all())  # r >= threshold: 0.5 is kept
    assert torch.equal(masks[names[2]], torch.tensor([False, True] * 32))
    m = ct.consensus_masks(model, threshold=0.8)
    assert torch.equal(m[names[0]], r0 >= 0.8)
    assert int(m[names[0]].sum()) == 4
    # all below 0.8: min_channels=1 keeps the top-rated channel (ties: lowest index)
    assert m[names[1]].nonzero().flatten().tolist() == [0]
    assert m[names[2]].nonzero().flatten().tolist() == [1]


def test_consensus_masks_min_channels_guard():
    model = ct.cifar_resnet(8, gating="channel", position="c", gate="static")
    r0 = torch.full((16,), 0.1)
    r0[11] = 0.3  # all below threshold, channel 11 rated highest
    r1 = torch.linspace(0.0, 0.4, 32)  # all below threshold, top three: 31, 30, 29
    r2 = torch.ones(64)
    _set_rates(model, [r0, r1, r2])
    names = list(ct.gate_modules(model))
    masks = ct.consensus_masks(model)
    assert masks[names[0]].nonzero().flatten().tolist() == [11]
    assert masks[names[1]].nonzero().flatten().tolist() == [31]
    assert bool(masks[names[2]].all())
    masks3 = ct.consensus_masks(model, min_channels=3)
    assert masks3[names[1]].nonzero().flatten().tolist() == [29, 30, 31]
    assert int(masks3[names[0]].sum()) == 3 and bool(masks3[names[0]][11])
    masks0 = ct.consensus_masks(model, min_channels=0)
    assert not bool(masks0[names[0]].any()) and not bool(masks0[names[1]].any())
    # min_channels above the width keeps everything
    assert bool(ct.consensus_masks(model, min_channels=100)[names[0]].all())


def test_consensus_masks_round_to():
    model = ct.cifar_resnet(8, gating="channel", position="b", gate="static")
    g = torch.Generator().manual_seed(0)
    rates = [torch.rand(16, generator=g), torch.rand(32, generator=g), torch.rand(64, generator=g)]
    rates[0][:] = torch.linspace(0.0, 0.99, 16)  # 8 at/above 0.5 already: a multiple of 8
    rates[1][:] = 0.0
    rates[1][[3, 7, 9]] = 0.9  # 3 kept -> 8
    rates[2][:] = 0.9
    rates[2][[0]] = 0.1  # 63 kept -> 64 (capped at the width)
    _set_rates(model, rates)
    names = list(ct.gate_modules(model))
    masks = ct.consensus_masks(model, round_to=8)
    counts = [int(masks[n].sum()) for n in names]
    assert counts == [8, 8, 64]
    assert all(c % 8 == 0 for c in counts)
    # the kept channels are the top-rated ones
    kept1 = masks[names[1]]
    assert bool(kept1[[3, 7, 9]].all())
    assert torch.equal(masks[names[0]], rates[0] >= 0.5)
    # min_channels then round: an all-closed gate keeps 1 -> 8
    rates[1][:] = 0.0
    _set_rates(model, rates)
    assert int(ct.consensus_masks(model, round_to=8)[names[1]].sum()) == 8
    # round_to=5 on a 16-wide gate with 8 kept -> 10
    assert int(ct.consensus_masks(model, round_to=5)[names[0]].sum()) == 10


def test_consensus_masks_layer_gates_not_forced_open():
    model = ct.cifar_resnet(8, gating="layer", gate="static")
    _set_rates(model, [torch.tensor([0.1]), torch.tensor([0.7]), torch.tensor([0.0])])
    masks = ct.consensus_masks(model, min_channels=1, round_to=8)
    assert [bool(m[0]) for m in masks.values()] == [False, True, False]
    assert all(m.shape == (1,) for m in masks.values())


def test_consensus_masks_bad_arguments():
    model = ct.cifar_resnet(8, gating="layer")
    with pytest.raises(ValueError, match="threshold"):
        ct.consensus_masks(model, threshold=1.5)
    with pytest.raises(ValueError, match="min_channels"):
        ct.consensus_masks(model, min_channels=-1)
    with pytest.raises(ValueError, match="round_to"):
        ct.consensus_masks(model, round_to=0)
    with pytest.raises(ValueError, match="no gate modules"):
        ct.consensus_masks(ct.cifar_resnet(8))


# ----------------------------------------------------------------------------- save / load


def test_save_load_round_trip(tmp_path):
    model = _prepared(8, "channel", "b", "static", 1)
    g = torch.Generator().manual_seed(13)
    masks = {n: torch.rand(gt.units, generator=g) < 0.5 for n, gt in ct.gate_modules(model).items()}
    masks["stages.0.0.gate"][:] = False  # a "bias" branch: a parameter that is not a conv
    subnet = _check_extraction(model, masks, _inputs(seed=14))
    path = tmp_path / "sub" / "net.pt"
    ct.save_subnetwork(subnet, path)
    assert path.is_file()
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]

    payload = torch.load(path, weights_only=True)
    assert set(payload) == {"spec", "state_dict"}
    assert payload["spec"] == subnet.spec
    assert payload["spec"]["blocks"][1]["mid_channels"] == int(masks["stages.1.0.gate"].sum())

    # the pruned shapes cannot be loaded into a fresh dense model...
    with pytest.raises(RuntimeError, match="size mismatch"):
        dense = ct.PrunedResNet(ct.subnetwork_spec(ct.cifar_resnet(8)))
        dense.load_state_dict(payload["state_dict"])
    # ...but load_subnetwork rebuilds them from the saved spec
    loaded = ct.load_subnetwork(path)
    assert isinstance(loaded, ct.PrunedResNet) and not loaded.training
    assert loaded.spec == subnet.spec
    assert ct.count_params(loaded) == ct.count_params(subnet)
    x = _inputs(seed=15)
    assert next(loaded.parameters()).dtype == torch.float64  # the saved dtype is kept
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), subnet(x), rtol=0, atol=0)
    assert ct.count_flops(loaded) == ct.count_flops(subnet)
    # a float32 sub-network stays float32
    path32 = tmp_path / "net32.pt"
    ct.save_subnetwork(subnet.float(), path32)
    loaded32 = ct.load_subnetwork(path32)
    assert next(loaded32.parameters()).dtype == torch.float32
    with torch.no_grad():
        torch.testing.assert_close(loaded32(x.float()), subnet(x.float()), rtol=0, atol=0)


def test_load_rejects_other_files(tmp_path):
    plain = tmp_path / "plain.pt"
    torch.save(ct.cifar_resnet(8).state_dict(), plain)
    with pytest.raises(ValueError, match="save_subnetwork"):
        ct.load_subnetwork(plain)
    other = tmp_path / "other.pt"
    torch.save({"spec": {"format": "something-else"}, "state_dict": {}}, other)
    with pytest.raises(ValueError, match="not a sub-network spec"):
        ct.load_subnetwork(other)
    with pytest.raises(FileNotFoundError, match="no sub-network file"):
        ct.load_subnetwork(tmp_path / "missing.pt")
    with pytest.raises(TypeError, match="extract_subnetwork"):
        ct.save_subnetwork(ct.cifar_resnet(8), tmp_path / "x.pt")


# ----------------------------------------------------------------------------- disagreement


def test_disagreement_rate_static_gates():
    torch.manual_seed(6)
    model = ct.cifar_resnet(8, gating="channel", position="b", gate="static")
    gates = ct.gate_modules(model)
    with torch.no_grad():
        for gate in gates.values():
            gate.theta.normal_()
    live = {n: torch.sigmoid(g.theta.detach()) >= 0.5 for n, g in gates.items()}
    batches = [torch.randn(3, 3, 32, 32), (torch.randn(2, 3, 32, 32), torch.zeros(2))]
    model.train()
    assert ct.disagreement_rate(model, batches, live) == 0.0
    assert model.training  # mode restored
    rates_before = {n: g.firing_rate.clone() for n, g in gates.items()}
    flipped = {n: m.clone() for n, m in live.items()}
    first = next(iter(flipped))
    flipped[first][0] = ~flipped[first][0]
    total_units = sum(g.units for g in gates.values())
    assert ct.disagreement_rate(model, batches, flipped) == pytest.approx(1 / total_units)
    inverted = {n: ~m for n, m in live.items()}
    assert ct.disagreement_rate(model, batches, inverted) == 1.0
    # evaluation does not move the firing rates
    assert all(torch.equal(rates_before[n], g.firing_rate) for n, g in gates.items())


def test_disagreement_rate_needs_live_gates_and_batches():
    model = ct.cifar_resnet(8, gating="layer", gate="static")
    masks = {n: torch.ones(1) for n in ct.gate_modules(model)}
    with pytest.raises(ValueError, match="no gate decisions"):
        ct.disagreement_rate(model, [], masks)
    ct.freeze_gates(model, masks)
    with pytest.raises(ValueError, match="unfreeze"):
        ct.disagreement_rate(model, [torch.randn(1, 3, 32, 32)], masks)
