"""Cost models of the budget: FLOPs and a measured latency table (``--cost latency``)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import consensus_tutorial as ct
from consensus_tutorial.baselines import masks_for_flops
from consensus_tutorial.costs import flops_cost, latency_cost, load_latency_table, measure_latency_table
from consensus_tutorial.gates import GateRecord
from consensus_tutorial.objective import Objective, keep_target
from consensus_tutorial.training import TrainConfig

ROOT = Path(__file__).resolve().parents[1]


def _table(model: ct.ResNet, expensive: str | None = None, factor: float = 50.0) -> dict:
    """A hand-made table: every block 1 ms at width 1 rising by 0.1 ms per channel, one
    block ``factor`` times dearer; 2 ms of stem and head."""
    blocks = {}
    for name, block in model.blocks():
        scale = factor if name == expensive else 1.0
        widths = [1, block.out_channels // 2, block.out_channels]
        blocks[name] = {"widths": widths, "ms": [scale * (1.0 + 0.1 * (w - 1)) for w in widths]}
    return {"format": "consensus-tutorial-latency-table", "version": 1, "fixed_ms": 2.0, "blocks": blocks}


def test_latency_cost_interpolates_the_table_and_charges_the_slope_per_unit():
    model = ct.cifar_resnet(8, gating="channel", gate="static")
    table = _table(model)
    cost = latency_cost(model, table)
    dense = 2.0 + sum(1.0 + 0.1 * (b.out_channels - 1) for _, b in model.blocks())
    assert cost.dense(model) == pytest.approx(dense)
    masks = {n: torch.arange(g.units) < 5 for n, g in ct.gate_modules(model).items()}  # 5 channels each
    assert cost.total(masks) == pytest.approx(2.0 + 3 * (1.0 + 0.1 * 4))
    assert all(torch.allclose(c, torch.full_like(c, 0.1)) for c in cost.unit_costs().values())
    kappa, weights = keep_target(model, 0.5, True, cost="latency", latency_table=table)
    gated = sum(0.1 * b.out_channels for _, b in model.blocks())
    assert kappa == pytest.approx((0.5 * dense - (dense - gated)) / gated)


def test_budget_cut_meets_the_latency_budget():
    model = ct.cifar_resnet(8, gating="channel", gate="static")
    table = _table(model, expensive="stages.2.0")
    cost = latency_cost(model, table)
    scores = {n: torch.rand(g.units) for n, g in ct.gate_modules(model).items()}
    masks = masks_for_flops(model, scores, 0.3, uniform=False, cost=cost)
    assert cost.total(masks) <= 0.7 * cost.dense(model) + 1e-9
    assert flops_cost(model).total(masks) != cost.total(masks)


def test_an_expensive_block_closes_its_units_first(tmp_path):
    """The issue's check: with one block 50 times dearer in the table, the latency target
    closes that block's units before any other block's."""
    torch.manual_seed(0)
    model = ct.cifar_resnet(8, gating="channel", gate="static").train()
    path = tmp_path / "table.json"
    path.write_text(json.dumps(_table(model, expensive="stages.1.0")))
    objective = Objective(target_rate=0.3, lambda_sp=20.0, lambda_pol=0.0, cost="latency", latency_table=str(path),
                          allocation="global").attach(model)
    gates = ct.gate_modules(model)
    optimizer = torch.optim.SGD([p for g in gates.values() for p in g.parameters()], lr=0.5)
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
    closed: dict[str, int] = {}
    for _ in range(200):  # until the first units close
        record = GateRecord()
        loss, _ = objective(model, model(x, record=record), y, 0, record)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        closed = {n: int((g.theta < 0).sum()) for n, g in gates.items() if (g.theta < 0).any()}
        if closed:
            break
    assert list(closed) == ["stages.1.0.gate"], closed  # only the expensive block's units, and first


def test_bad_tables_and_settings_are_refused_with_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match="benchmarks/latency_table.py"):
        load_latency_table(tmp_path / "none.json")
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ValueError, match="not a latency table"):
        load_latency_table(tmp_path / "bad.json")
    with pytest.raises(ValueError, match="needs latency_table"):
        TrainConfig(cost="latency").validate()
    with pytest.raises(ValueError, match="cost='latency' only"):
        TrainConfig(latency_table="t.json").validate()
    a = ct.cifar_resnet(8, gating="channel", position="a", gate="static")
    with pytest.raises(ValueError, match="position b or with layer gates"):
        latency_cost(a, _table(a))
    with pytest.raises(ValueError, match="no row for blocks"):
        latency_cost(ct.cifar_resnet(14, gating="channel"), _table(a))


def test_a_measured_table_times_every_block_inside_the_network_and_leaves_no_hooks():
    model = ct.cifar_resnet(8)
    table = measure_latency_table(model, batch_size=2, points=3, rounds=1, repeats=1, clock="cpu")
    assert table["method"] == "in-network" and table["version"] == 2
    assert {n: row["widths"] for n, row in table["blocks"].items()} == {
        "stages.0.0": [1, 8, 16], "stages.1.0": [1, 16, 32], "stages.2.0": [1, 32, 64]}
    assert all(ms > 0 for row in table["blocks"].values() for ms in row["ms"]) and table["fixed_ms"] > 0
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())
    load_latency_table(table)  # the trainer reads what the measurement writes
    with pytest.raises(ValueError, match="clock"):
        measure_latency_table(model, clock="gpu")


def test_the_benchmark_writes_a_table_the_trainer_reads(tmp_path):
    out = tmp_path / "table.json"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "latency_table.py"), "--arch", "resnet20",
                           "--batch-size", "2", "--points", "2", "--rounds", "1", "--repeats", "1", "--threads", "1",
                           "--out", str(out)], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr
    table = load_latency_table(out)
    assert sorted(table["blocks"]) == [f"stages.{s}.{b}" for s in range(3) for b in range(3)]
    assert all(row["widths"][-1] in (16, 32, 64) for row in table["blocks"].values())
    assert "ms per channel" in done.stdout
    TrainConfig(arch="resnet20", cost="latency", latency_table=str(out)).validate()


def test_the_latency_target_benchmark_compares_measured_with_asked_latency(tmp_path):
    """benchmarks/latency_target.py trains a latency-aware run on a hand-made table and
    times its extracted network: the table's prediction for the kept widths meets the
    asked share (the cut's budget), and the reported error is measured / asked - 1."""
    from fakedata import make_cifar

    make_cifar(tmp_path / "data", "cifar10", n_per_file=16, n_test=16)
    model = ct.cifar_resnet(20, gating="channel", gate="static")
    table = tmp_path / "table.json"
    table.write_text(json.dumps(_table(model, expensive="stages.2.2") | {"batch_size": 2, "clock": "cpu"}))
    out = tmp_path / "target.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "latency_target.py"), "--data-root", str(tmp_path / "data"),
         "--limit-train", "64", "--epochs", "1", "--batch-size", "32", "--latency-table", str(table),
         "--target-rate", "0.3", "--train-threads", "1", "--rounds", "1", "--repeats", "1", "--json", str(out),
         "--no-verify-checksums"],
        capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stderr
    result = json.loads(out.read_text())
    assert result["predicted_share"] <= 0.7 + 1e-9
    assert result["kept_units"]["stages.2.2.gate"] < 64  # the dear block gave up channels
    assert result["relative_error"] == pytest.approx(result["extracted_s"] / (0.7 * result["dense_s"]) - 1)
    assert "measured / asked - 1" in done.stdout
