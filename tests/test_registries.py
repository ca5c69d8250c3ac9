"""Each choice that grows has one table: a new polarizer or a new method is one
registration, and from then on it is a choice of ``TrainConfig``, of the objective and of
the command line, with no other edit."""

from __future__ import annotations

import json

import pytest
import torch

import consensus_tutorial as ct
from consensus_tutorial.__main__ import build_parser, main
from consensus_tutorial.baselines import METHODS, MethodHooks, register_method
from consensus_tutorial.regularizers import POLARIZERS, polarization, register_polarizer
from consensus_tutorial.training import TrainConfig
from fakedata import make_cifar

pytestmark = pytest.mark.filterwarnings("ignore:.*checksums")


@pytest.fixture
def toy_polarizer():
    """``R = mean (p (1 - p))^2``: a polarizer with no t."""
    calls = []

    def squared(p: torch.Tensor, t: float | None) -> torch.Tensor:
        calls.append(p.numel())
        return (p * (1.0 - p)).pow(2).mean()

    register_polarizer("toy-squared", squared, summary="mean of (p(1 - p))^2")
    yield calls
    del POLARIZERS["toy-squared"]


class CountingHooks(MethodHooks):
    """A toy method: the consensus loop, counting the optimizer steps it sees."""

    steps = 0

    def after_step(self, model) -> None:
        CountingHooks.steps += 1


@pytest.fixture
def toy_method():
    CountingHooks.steps = 0
    register_method("toy-counting", CountingHooks, model={"gate": "static"}, summary="counts steps")
    yield CountingHooks
    del METHODS["toy-counting"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    make_cifar(root, "cifar10", n_per_file=24, n_test=40)
    return root


def test_a_registered_polarizer_computes_its_own_equation(toy_polarizer):
    p = torch.tensor([0.5, 0.0, 1.0, 0.25])
    assert polarization(p, "toy-squared").item() == pytest.approx((0.25**2 + 0.1875**2) / 4)
    with pytest.raises(ValueError, match="takes no t"):
        polarization(p, "toy-squared", 0.5)
    with pytest.raises(ValueError, match="already registered"):
        register_polarizer("bimodal", lambda p, t: p.sum())


def test_unknown_names_are_refused_with_the_registered_ones():
    with pytest.raises(ValueError, match="'bimodal', 'zhuang'"):
        TrainConfig(polarizer="toy-squared").validate()
    with pytest.raises(ValueError, match="'consensus', 'dense'"):
        TrainConfig(method="toy-counting").validate()


def test_registered_polarizer_and_method_run_through_the_command_line(toy_polarizer, toy_method, data, tmp_path):
    action = {a.dest: a for a in build_parser()._subparsers._group_actions[0].choices["train"]._actions}
    assert "toy-squared" in action["polarizer"].choices and "toy-counting" in action["method"].choices
    out = tmp_path / "run"
    code = main(["train", "--data-root", str(data), "--no-verify-checksums", "--epochs", "1", "--batch-size", "32",
                 "--method", "toy-counting", "--polarizer", "toy-squared", "--settle", "live", "--out", str(out),
                 "--quiet"])
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["method"] == "toy-counting" and metrics["config"]["polarizer"] == "toy-squared"
    assert metrics["config"]["gate"] == "static"  # the method's model settings were applied
    assert toy_polarizer, "the objective called the registered polarizer"
    assert toy_method.steps == (5 * 24) // 32  # once per optimizer step (5 train files of 24 images)
    ct.load_subnetwork(out / "subnetwork.pt")


def test_validate_returns_a_checked_copy_and_leaves_the_config_alone():
    config = TrainConfig(method="random")
    checked = config.validate()
    assert (checked.gating, checked.position, checked.gate) == ("channel", "b", "static")
    assert config.gate == "dynamic"  # the config it checked is unchanged
    assert TrainConfig(method="dense").validate().gating is None
    with pytest.raises(ValueError, match="needs epochs >= 2"):
        TrainConfig(method="l1", epochs=1).validate()


@pytest.fixture
def toy_position():
    """Position "b-from-input": a gate that reads the block's input and scales the hidden
    channels (a new position, cut like b)."""
    from consensus_tutorial import positions

    b = positions.POSITIONS["b"]
    positions.register_position("b-from-input", positions.GatePosition(
        "input", "hidden", b.units, "channel", b.cut, b.count, "hidden channels kept (read from the input)"))
    yield "b-from-input"
    del positions.POSITIONS["b-from-input"]


def test_a_registered_gate_position_gates_extracts_and_counts(toy_position):
    from consensus_tutorial import comparison as cmp

    torch.manual_seed(0)
    model = ct.cifar_resnet(20, gating="channel", position=toy_position, gate="dynamic").double().eval()
    gates = ct.gate_modules(model)
    assert gates["stages.1.0.gate"].units == 32 and gates["stages.1.0.gate"].mlp[0].in_features == 16  # reads x
    masks = {n: torch.rand(g.units, generator=torch.Generator().manual_seed(i)) > 0.4
             for i, (n, g) in enumerate(gates.items())}
    ct.freeze_gates(model, masks)
    x = torch.randn(4, 3, 32, 32, dtype=torch.float64)
    subnet = ct.extract_subnetwork(model)
    torch.testing.assert_close(subnet(x), model(x), rtol=1e-9, atol=1e-9)
    assert subnet.spec["position"] == toy_position
    assert cmp.kept_widths(subnet.spec) == {n.removesuffix(".gate"): int(m.sum()) for n, m in masks.items()}
    assert TrainConfig(position=toy_position).validate().position == toy_position
