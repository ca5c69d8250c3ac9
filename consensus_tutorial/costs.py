"""What a network costs, and what each gated unit costs: the currency of the budget.

A cost model (``COSTS``, ``--cost``) answers two questions about a gated ResNet:

* ``total(masks)``: the cost of the network :func:`~consensus_tutorial.extract_subnetwork`
  would return for those masks (all-open masks: the dense network). The settler and the
  baselines cut masks to the budget ``(1 - target_rate) * total(dense)`` with it.
* ``unit_costs()``: ``{gate name: (C,) costs}``, the weights ``w_j`` of the cost-aware
  sparsity target ``R_sp = (sum_j w_j pbar_j / sum_j w_j - kappa)^2``.

Two models:

* ``"flops"``: multiply-accumulates (:func:`~consensus_tutorial.predicted_flops` and
  :func:`~consensus_tutorial.unit_flops`), the default;
* ``"latency"``: milliseconds from a *latency table* measured on the device at hand
  (``benchmarks/latency_table.py`` writes one): for every residual block, its latency at
  a grid of hidden widths (channel gates at position b) and, for layer gates, at full
  width; plus the fixed part (stem, pooling, classifier). A block's latency at a kept
  width is interpolated linearly in the table; each of its units costs the slope of a
  least-squares line through the block's row, ``ms per channel``. Then ``target_rate``
  is the share of the *measured latency* to remove.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .consensus import gate_modules
from .flops import predicted_flops, unit_flops
from .models import ResNet

Masks = Mapping[str, torch.Tensor]
LATENCY_TABLE_FORMAT = "consensus-tutorial-latency-table"


@dataclass(frozen=True)
class CostModel:
    """The cost of a gated model's extracted networks (see the module docstring)."""

    total: Callable[[Masks], float]
    unit_costs: Callable[[], dict[str, torch.Tensor]]
    unit: str

    def dense(self, model: ResNet) -> float:
        """The cost of the dense network (every unit kept)."""
        return self.total({n: torch.ones(g.units, dtype=torch.bool) for n, g in gate_modules(model).items()})


def flops_cost(model: ResNet, latency_table: str | os.PathLike | Mapping | None = None) -> CostModel:
    """Multiply-accumulates per image."""
    return CostModel(lambda masks: float(predicted_flops(model, masks)), lambda: unit_flops(model), "MACs")


def load_latency_table(table: str | os.PathLike | Mapping) -> dict[str, Any]:
    """A latency table from its JSON file (or a dict already loaded), checked."""
    if isinstance(table, Mapping):
        data = dict(table)
    else:
        path = Path(table)
        if not path.is_file():
            raise FileNotFoundError(f"latency table {path} does not exist; build one for this device with "
                                    "python benchmarks/latency_table.py --out FILE.")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise ValueError(f"latency table {path} is not valid JSON ({error}).") from None
    if not isinstance(data, dict) or data.get("format") != LATENCY_TABLE_FORMAT:
        raise ValueError(f"not a latency table (format {LATENCY_TABLE_FORMAT!r}); build one with "
                         "python benchmarks/latency_table.py.")
    for name, row in data["blocks"].items():
        if len(row["widths"]) != len(row["ms"]) or len(row["widths"]) < 2 or sorted(row["widths"]) != row["widths"]:
            raise ValueError(f"latency table: block {name} needs at least two increasing widths, one ms each.")
    return data


def _interpolate(row: Mapping[str, list], width: float) -> float:
    """The block's latency at ``width`` hidden channels (0 for a block whose branch is gone)."""
    return 0.0 if width <= 0 else float(np.interp(width, row["widths"], row["ms"]))


def _slope(row: Mapping[str, list]) -> float:
    """ms per hidden channel: the least-squares slope through the block's row (at least 0)."""
    return max(0.0, float(np.polyfit(row["widths"], row["ms"], 1)[0]))


def _check_table_fits(model: ResNet, table: Mapping[str, Any]) -> None:
    blocks = [name for name, _ in model.blocks()]
    missing = [name for name in blocks if name not in table["blocks"]]
    if missing:
        raise ValueError(f"the latency table has no row for blocks {missing}: it was built for another "
                         f"network ({table.get('arch')}); build one for this one.")
    if model.gating == "channel" and model.position != "b":
        raise ValueError("a latency table gives a block's latency per hidden width: use it with channel gates "
                         f"at position b or with layer gates, not position {model.position!r}.")


def latency_cost(model: ResNet, latency_table: str | os.PathLike | Mapping | None = None) -> CostModel:
    """Milliseconds per batch, read from a latency table (see the module docstring)."""
    if latency_table is None:
        raise ValueError("cost 'latency' needs a latency table (--latency-table FILE); build one with "
                         "python benchmarks/latency_table.py.")
    table = load_latency_table(latency_table)
    _check_table_fits(model, table)
    rows = table["blocks"]
    gates = {name: block.gate for name, block in model.blocks()}

    def total(masks: Masks) -> float:
        ms = float(table["fixed_ms"])
        for name, block in model.blocks():
            mask = masks.get(f"{name}.gate") if gates[name] is not None else None
            width = block.out_channels if mask is None else int(torch.as_tensor(mask).sum())
            if model.gating == "layer" and mask is not None:
                width = block.out_channels if width else 0
            ms += _interpolate(rows[name], width)
        return ms

    def unit_costs() -> dict[str, torch.Tensor]:
        costs = {}
        for name, gate in gates.items():
            if gate is None:
                continue
            row = rows[name]
            each = _interpolate(row, row["widths"][-1]) if model.gating == "layer" else _slope(row)
            costs[f"{name}.gate"] = torch.full((gate.units,), each, dtype=torch.float64)
        return costs

    return CostModel(total, unit_costs, "ms")


#: name -> (model, latency table or None) -> CostModel; the choices of ``--cost``
COSTS: dict[str, Callable[..., CostModel]] = {"flops": flops_cost, "latency": latency_cost}


# ----------------------------------------------------------------------------- measuring a table


def block_input_shapes(model: ResNet, batch_size: int) -> dict[str, tuple[int, ...]]:
    """{block name: its input shape, batch ``batch_size`` included}, read from one forward pass."""
    shapes: dict[str, tuple[int, ...]] = {}
    hooks = [block.register_forward_hook(lambda mod, inp, out, name=name: shapes.__setitem__(name, inp[0].shape[1:]))
             for name, block in model.blocks()]
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, *model.input_shape, device=next(model.parameters()).device))
    finally:
        for hook in hooks:
            hook.remove()
    return {name: (batch_size, *shape) for name, shape in shapes.items()}


def block_at_width(name: str, block: torch.nn.Module, width: int) -> torch.nn.Module:
    """The extracted form of residual block ``block`` with ``width`` hidden channels (the
    shape channel gates at position b leave), freshly initialised, in eval mode."""
    from .extraction import PrunedBasicBlock, block_spec

    spec = dict(block_spec(name, block, None), mid_channels=width)
    return PrunedBasicBlock(spec).to(next(block.parameters()).device).eval()


def _width_grid(channels: int, points: int) -> list[int]:
    return sorted({max(1, round(w)) for w in np.linspace(1, channels, max(2, points))} | {channels})


def time_alternating(jobs: dict[tuple, tuple[torch.nn.Module, tuple[int, ...]]], *, rounds: int, repeats: int,
                     clock: str, warmup: int = 2) -> dict[tuple, float]:
    """{key: median seconds of ``module`` on an input of ``shape``} for ``jobs`` {key: (module,
    shape)}: every job warmed up (``warmup`` passes), then ``rounds`` rounds of ``repeats``
    passes each, in alternating order (first to last, then last to first), so that a
    change of the machine's load hits every job alike."""
    from .flops import measure_latency

    times: dict[tuple, list[float]] = {key: [] for key in jobs}
    for key, (module, shape) in jobs.items():  # untimed warm-up of every job
        measure_latency(module, shape, repeats=1, warmup=warmup, clock=clock)
    for r in range(rounds):
        for key in (list(jobs) if r % 2 == 0 else list(reversed(jobs))):
            module, shape = jobs[key]
            times[key].append(measure_latency(module, shape, repeats=repeats, warmup=0, clock=clock))
    return {key: float(np.median(ts)) for key, ts in times.items()}


def _hook_timer(parts: Mapping[str, torch.nn.Module], now: Callable[[], float], sync: Callable[[], None],
                times: dict[str, list[float]]) -> list:
    """Hooks that append each part's seconds per forward pass to ``times[name]``; returns
    their handles (remove them when done)."""
    started: dict[str, float] = {}

    def enter(name: str) -> Callable:
        def hook(module, args):
            sync()
            started[name] = now()
        return hook

    def leave(name: str) -> Callable:
        def hook(module, args, output):
            sync()
            times[name].append(now() - started[name])
        return hook

    handles = []
    for name, part in parts.items():
        handles += [part.register_forward_pre_hook(enter(name)), part.register_forward_hook(leave(name))]
    return handles


def _network_at(model: ResNet, widths: Mapping[str, int]) -> tuple[torch.nn.Sequential, dict[str, torch.nn.Module]]:
    """The extracted form of ``model`` with ``widths[block]`` hidden channels per block (eval
    mode, fresh weights), as a sequence of parts: stem, every block, head."""
    import copy

    last = model.blocks()[-1][1]
    parts = {"stem": torch.nn.Sequential(copy.deepcopy(model.conv1), copy.deepcopy(model.bn1), torch.nn.ReLU())}
    parts |= {name: block_at_width(name, block, widths[name]) for name, block in model.blocks()}
    parts["head"] = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                                        torch.nn.Linear(last.out_channels, model.num_classes))
    return torch.nn.Sequential(*parts.values()).to(next(model.parameters()).device).eval(), parts


def measure_latency_table(model: ResNet, *, batch_size: int = 64, points: int = 64, rounds: int = 3,
                          repeats: int = 3, clock: str = "wall") -> dict[str, Any]:
    """Measure a latency table of ``model``'s architecture on the device it sits on.

    Every residual block is timed at ``points`` hidden widths from 1 to full (the shape of
    an extracted block with channel gates at position b) *inside a forward pass of a whole
    network*: the k-th of ``points`` networks has every block at the k-th width of its grid,
    and hooks on each block's entry and exit time it, so that it sees the inputs, caches and
    memory layouts it sees in a real network. The fixed part is the stem (conv, BN, ReLU)
    and the head (pooling, classifier). Milliseconds per batch of ``batch_size`` images,
    medians over ``rounds`` rounds of ``repeats`` passes (the networks in alternating
    order). The default of 64 points times every width of a CIFAR ResNet: kernels change
    at some widths (on the CPU of this package's book a 32-channel block took 5.4 ms with
    16 hidden channels and 7.4 ms with 17), which a coarse grid interpolates away.
    Returns the table (save it with ``json.dump``).
    """
    if clock not in ("wall", "cpu"):
        raise ValueError(f"clock must be 'wall' or 'cpu'; got {clock!r}.")
    device = next(model.parameters()).device
    grids = {name: _width_grid(block.out_channels, points) for name, block in model.blocks()}
    steps = max(len(g) for g in grids.values())
    now = time.perf_counter if clock == "wall" else time.process_time
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    samples: dict[tuple, list[float]] = {}
    networks = []
    for k in range(steps):
        widths = {name: grid[min(k, len(grid) - 1)] for name, grid in grids.items()}
        net, parts = _network_at(model, widths)
        times: dict[str, list[float]] = {name: [] for name in parts}
        networks.append((net, _hook_timer(parts, now, sync, times), times, widths))
    x = torch.randn(batch_size, *model.input_shape, device=device)
    try:
        with torch.no_grad():
            for r in range(-1, rounds):  # round -1: untimed warm-up
                for net, _, times, widths in (networks if r % 2 == 0 else networks[::-1]):
                    for _ in range(repeats if r >= 0 else 2):
                        net(x)
                    for name, ts in times.items():
                        key = (name, widths.get(name))
                        samples.setdefault(key, []).extend(ts if r >= 0 else [])
                        ts.clear()
    finally:
        for _, handles, _, _ in networks:
            for handle in handles:
                handle.remove()
    ms = {key: 1e3 * float(np.median(ts)) for key, ts in samples.items()}
    blocks = {name: {"widths": grid, "ms": [round(ms[(name, w)], 5) for w in grid]} for name, grid in grids.items()}
    fixed = ms[("stem", None)] + ms[("head", None)]
    return {"format": LATENCY_TABLE_FORMAT, "version": 2, "batch_size": batch_size, "device": str(device),
            "clock": clock, "method": "in-network", "fixed_ms": round(fixed, 5), "blocks": blocks}
