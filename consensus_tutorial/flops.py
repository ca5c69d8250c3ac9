"""FLOPs, parameters and latency.

FLOPs here are **multiply-accumulates (MACs) of the convolutions and fully-connected
layers**, per image: the convention of the pruning literature (He et al. give 125.49 M for
CIFAR ResNet-56). Batch norm, ReLU, pooling and additions are not counted.

* :func:`count_flops` measures any model (PyTorch's ``FlopCounterMode``, halved);
* :func:`predicted_flops` predicts, from masks alone, the FLOPs the extracted network
  will have (it equals :func:`count_flops` on that network);
* :func:`unit_flops` gives the FLOPs each gated unit costs, the weights of a FLOPs-aware
  sparsity target; :func:`unit_params` the parameters it holds.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from .consensus import gate_modules
from .extraction import block_spec, subnetwork_spec
from .models import ResNet

def _default_input_size(model: nn.Module) -> tuple[int, ...]:
    shape = getattr(model, "input_shape", (3, 32, 32))
    return (1, *shape)


def count_flops(model: nn.Module, input_size: Sequence[int] | None = None) -> int:
    """MACs of the convolutions and linear layers of one forward pass (eval mode).

    Counted by PyTorch's own ``torch.utils.flop_counter.FlopCounterMode``, which counts
    the matrix products and convolutions (``aten.convolution``, ``aten.addmm``,
    ``aten.mm``, ...) and nothing else (no batch norm, activation, pooling or gather), in
    FLOPs of 2 per multiply-accumulate: the count is halved. This is the convention of
    the pruning literature (a test checks He et al.'s 125.49 M for ResNet-56).

    Args:
        model: any module taking a (B, 3, H, W) tensor.
        input_size: the input shape, batch included; default ``(1, *model.input_shape)``,
            or (1, 3, 32, 32) for a model without that attribute. Use batch 1 for per-image FLOPs.
    """
    from torch.utils.flop_counter import FlopCounterMode

    input_size = tuple(input_size or _default_input_size(model))
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None else torch.float32
    was_training = model.training
    model.eval()
    try:
        # with autograd on: the counter's module tracker hooks the gradients of tensors that
        # require them, and under no_grad a view of a parameter (a pruned block's constant
        # hidden map) requires grad without a gradient function, which it cannot hook
        with torch.enable_grad(), FlopCounterMode(display=False) as counter:
            model(torch.zeros(input_size, device=device, dtype=dtype))
    finally:
        model.train(was_training)
    return int(counter.get_total_flops()) // 2


def count_params(model: nn.Module, *, include_gates: bool = True) -> int:
    """Number of parameters; ``include_gates=False`` leaves out the gate modules'."""
    gate_params = set()
    if not include_gates:
        gate_params = {id(p) for g in gate_modules(model).values() for p in g.parameters()}
    return sum(p.numel() for p in model.parameters() if id(p) not in gate_params)


def _conv_out(size: int, stride: int) -> int:
    return (size - 1) // stride + 1  # 3x3 padding 1 and 1x1 padding 0 agree


def block_flops(spec: Mapping, height: int, width: int) -> tuple[int, int, int]:
    """MACs of a block of :func:`~consensus_tutorial.extraction.block_spec` on an
    input of ``height x width``; returns (flops, output height, output width)."""
    h, w = _conv_out(height, spec["stride"]), _conv_out(width, spec["stride"])
    pixels = h * w
    flops = 0
    if spec["shortcut"] == "B":
        flops += spec["in_channels"] * spec["out_channels"] * pixels
    branch = spec["branch"]
    conv2_out = spec["out_channels"] if spec["out_index"] is None else len(spec["out_index"])
    if branch == "conv":
        conv1_in = spec["in_channels"] if spec["in_index"] is None else len(spec["in_index"])
        flops += conv1_in * spec["mid_channels"] * 9 * pixels
    if branch in ("conv", "const_hidden"):
        flops += spec["mid_channels"] * conv2_out * 9 * pixels
    return flops, h, w


def spec_flops(spec: Mapping, input_size: Sequence[int] | None = None) -> int:
    """MACs of the network a sub-network spec describes, per image."""
    height, width = (input_size[-2:] if input_size else spec["input_shape"][-2:])
    flops = 3 * spec["stem_channels"] * 9 * height * width
    for b in spec["blocks"]:
        f, height, width = block_flops(b, height, width)
        flops += f
    return flops + spec["final_channels"] * spec["num_classes"]


def predicted_flops(
    model: ResNet,
    masks: Mapping[str, torch.Tensor] | None = None,
    input_size: Sequence[int] | None = None,
) -> int:
    """Per-image MACs of the network :func:`~consensus_tutorial.extract_subnetwork` would
    return for ``masks`` (same default masks), computed without extracting it."""
    return spec_flops(subnetwork_spec(model, masks), input_size)


def unit_flops(model: ResNet, input_size: Sequence[int] | None = None) -> dict[str, torch.Tensor]:
    """{gate name: (C,) float tensor}: the MACs the extracted network saves when unit j
    alone closes in that gate (all other units open). The FLOPs-aware sparsity target
    weighs each unit's firing probability by these numbers."""
    height, width = (input_size[-2:] if input_size else model.input_shape[-2:])
    costs = {}
    for name, block in model.blocks():
        full, h_out, w_out = block_flops(block_spec(name, block, None), height, width)
        if block.gate is not None:
            units = block.gate.units
            cost = torch.empty(units)
            for j in range(units):
                mask = torch.ones(units, dtype=torch.bool)
                mask[j] = False
                cost[j] = full - block_flops(block_spec(name, block, mask), height, width)[0]
            costs[f"{name}.gate"] = cost
        height, width = h_out, w_out
    return costs


def unit_params(model: ResNet) -> dict[str, torch.Tensor]:
    """{gate name: (C,) float tensor}: the parameters the extracted network loses when unit
    j alone closes in that gate (all units of one gate cost the same)."""
    from .extraction import PrunedBasicBlock

    def params(spec) -> int:
        return 0 if spec["dropped"] else sum(p.numel() for p in PrunedBasicBlock(spec).parameters())

    costs = {}
    for name, block in model.blocks():
        if block.gate is not None:
            one_closed = torch.ones(block.gate.units, dtype=torch.bool)
            one_closed[0] = False
            saved = params(block_spec(name, block, None)) - params(block_spec(name, block, one_closed))
            costs[f"{name}.gate"] = torch.full((block.gate.units,), float(saved))
    return costs


@torch.inference_mode()
def measure_latency(
    model: nn.Module,
    input_size: Sequence[int] | None = None,
    *,
    repeats: int = 30,
    warmup: int = 5,
    device: str | torch.device | None = None,
    clock: str = "wall",
) -> float:
    """Median seconds of one forward pass (eval mode) on ``device``.

    Args:
        model: the network to time (moved to ``device``; put back in its former mode).
        input_size: batch included, default ``(1, *model.input_shape)``.
        repeats: timed passes; the median is returned.
        warmup: untimed passes first (allocations, cuDNN autotuning).
        device: default the model's own device.
        clock: "wall" (elapsed time) or "cpu" (CPU seconds of this process, CPU only).
            On a machine shared with other jobs the CPU clock is far less disturbed; with
            one torch thread (``torch.set_num_threads(1)``) it measures the same work as
            the wall clock, with more threads it sums them.
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats must be >= 1 and warmup >= 0; got {repeats}, {warmup}.")
    if clock not in ("wall", "cpu"):
        raise ValueError(f"clock must be 'wall' or 'cpu'; got {clock!r}.")
    param = next(model.parameters())
    device = torch.device(device) if device is not None else param.device
    if clock == "cpu" and device.type != "cpu":
        raise ValueError(f"clock='cpu' times CPU work; use clock='wall' on {device.type}.")
    now = time.perf_counter if clock == "wall" else time.process_time
    model = model.to(device)
    x = torch.randn(tuple(input_size or _default_input_size(model)), device=device, dtype=param.dtype)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    was_training = model.training
    model.eval()
    try:
        for _ in range(warmup):
            model(x)
        sync()
        times = []
        for _ in range(repeats):
            start = now()
            model(x)
            sync()
            times.append(now() - start)
    finally:
        model.train(was_training)
    return statistics.median(times)
