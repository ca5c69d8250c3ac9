"""Latency of one residual block at every hidden width: does a multiple of 4, 8 or 16
channels run faster than its neighbours on this device?

Why: the package can round each layer's kept channels up to a multiple (``round_to``),
which pays off only where the kernels are faster at such widths (on many GPUs, multiples
of 8 for tensor cores). This measures it: the first block of each stage of ``--arch`` is
timed alone with 1, 2, ..., all of its hidden channels (the shape an extracted block has
with channel gates at position b), in alternating order over ``--rounds`` rounds
(``ct.measure_latency`` medians). For each k it prints how often rounding a width up to
the next multiple of k is *faster* than the width itself (a kernel effect), and the mean
ratio latency(rounded up) / latency(width). Rounding helps where that ratio is below 1.

Run (from the repository root; a few minutes on a 2-core CPU)::

    .venv/bin/python benchmarks/width_sweep.py --threads 1 --clock cpu --json results/benchmarks/width_sweep.json
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from pathlib import Path

from machine import command_line, machine_info, machine_line, write_json
from timing import timing_device

import consensus_tutorial as ct
from consensus_tutorial.costs import block_at_width, block_input_shapes, time_alternating


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--arch", default="resnet20")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall")
    p.add_argument("--json", type=Path, default=None)
    return p.parse_args(argv)


def sweep(name: str, block, shape, args) -> dict[int, float]:
    """Median seconds of the block at each hidden width 1 ... out_channels."""
    jobs = {(w,): (block_at_width(name, block, w), shape) for w in range(1, block.out_channels + 1)}
    seconds = time_alternating(jobs, rounds=args.rounds, repeats=args.repeats, clock=args.clock)
    return {key[0]: s for key, s in seconds.items()}


def rounding_effect(latency: dict[int, float], k: int) -> tuple[float, float]:
    """(share of widths not a multiple of k whose round-up is faster, mean ratio rounded / width)."""
    full = max(latency)
    pairs = [(w, min(full, math.ceil(w / k) * k)) for w in latency if w % k]
    if not pairs:
        return 0.0, 1.0
    faster = sum(latency[r] < latency[w] for w, r in pairs) / len(pairs)
    return faster, statistics.mean(latency[r] / latency[w] for w, r in pairs)


def main(argv=None) -> int:
    args = parse_args(argv)
    device = timing_device(args)
    model = ct.build_model(args.arch, 10).to(device).eval()
    shapes = block_input_shapes(model, args.batch_size)
    result = {}
    for name, block in [(n, b) for n, b in model.blocks() if n.endswith(".0")]:  # the first of each stage
        latency = sweep(name, block, shapes[name], args)
        result[name] = {"ms": {w: 1e3 * s for w, s in latency.items()},
                        "rounding": {k: rounding_effect(latency, k) for k in (4, 8, 16)}}
    info = machine_info(device)
    print(f"{args.arch}: first block of each stage at every hidden width, batch {args.batch_size}, "
          f"{args.clock} clock; does rounding the width up to a multiple of k make it faster?")
    print(machine_line(info))
    print("| block | full width ms | k | round-up faster for | mean ms(rounded) / ms(width) |")
    print("|---|---|---|---|---|")
    for name, r in result.items():
        for k, (faster, ratio) in r["rounding"].items():
            print(f"| {name} | {max(r['ms'].items())[1]:.2f} | {k} | {100 * faster:.0f}% of widths | {ratio:.3f} |")
    if args.json:
        write_json(args.json, {"what": "block latency at every hidden width; effect of rounding widths up",
                               "command": command_line(__file__, argv),
                               "machine": info, "blocks": result})
    return 0


if __name__ == "__main__":
    sys.exit(main())
