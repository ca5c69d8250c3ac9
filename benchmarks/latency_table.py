"""Measure a latency table: every residual block's latency at a grid of hidden widths.

Why: FLOPs do not say what a block costs on a given device (chapter 4 measures how far
they are off on this CPU). A latency table measured on the device that will run the
network lets the sparsity target count milliseconds instead of multiply-accumulates::

    python -m consensus_tutorial train ... --cost latency --latency-table TABLE.json

What it measures: the network of ``--arch``, each residual block timed with 1 ... all of
its hidden channels (``--points`` widths; the shape an extracted block has with channel
gates at position b) inside forward passes of whole networks (hooks at each block's entry
and exit), plus the fixed stem and head, at batch ``--batch-size``; medians over
``--rounds`` rounds in alternating order of ``--repeats`` passes each
(:func:`consensus_tutorial.costs.measure_latency_table`). Tables written before version 2
timed each block alone; on this CPU those times summed to about 1.5 times the whole
network's. It prints the table and each
block's slope (ms per channel, what one gated unit of that block costs) against its MACs
per channel.

Run (from the repository root; a minute or two on a 2-core CPU)::

    .venv/bin/python benchmarks/latency_table.py --threads 1 --clock cpu --out results/benchmarks/latency_table_resnet20_fine.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from machine import command_line, machine_info, write_json
from timing import timing_device

import consensus_tutorial as ct
from consensus_tutorial.costs import latency_cost, measure_latency_table


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--arch", default="resnet20", help="a network of ct.build_model")
    p.add_argument("--num-classes", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=64, help="images per timed pass (the training batch is larger)")
    p.add_argument("--points", type=int, default=64,
                   help="hidden widths per block, from 1 to full (64: every width of a CIFAR ResNet)")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds over all the networks")
    p.add_argument("--repeats", type=int, default=3, help="timed passes per network per round")
    p.add_argument("--device", default="cpu", help="cpu, cuda, mps or auto")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads; None leaves torch's own choice")
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                   help="wall: elapsed time; cpu: CPU seconds of this process (CPU only)")
    p.add_argument("--out", type=Path, required=True, help="where to write the table (JSON)")
    args = p.parse_args(argv)
    if min(args.batch_size, args.points - 1, args.rounds, args.repeats) < 1:
        p.error("--batch-size, --rounds and --repeats must be >= 1 and --points >= 2")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    device = timing_device(args)
    torch.manual_seed(0)
    model = ct.build_model(args.arch, args.num_classes).to(device).eval()
    table = measure_latency_table(model, batch_size=args.batch_size, points=args.points, rounds=args.rounds,
                                  repeats=args.repeats, clock=args.clock)
    table |= {"arch": args.arch, "machine": machine_info(device),
              "command": command_line(__file__, argv)}
    gated = ct.build_model(args.arch, args.num_classes, gating="channel", position="b", gate="static")
    slopes = {n.removesuffix(".gate"): float(c[0]) for n, c in latency_cost(gated, table).unit_costs().items()}
    macs = {n.removesuffix(".gate"): float(c[0]) for n, c in ct.unit_flops(gated).items()}
    print(f"Latency table of {args.arch} on {table['device']}, batch {args.batch_size}, {args.clock} clock "
          f"(ms per batch, medians); fixed part (stem and head) {table['fixed_ms']:.3f} ms")
    print("| block | widths | ms | ms per channel | k MACs per channel |")
    print("|---|---|---|---|---|")
    for name, row in table["blocks"].items():
        print(f"| {name} | {', '.join(map(str, row['widths']))} | {', '.join(f'{m:.2f}' for m in row['ms'])} "
              f"| {slopes[name]:.3f} | {macs[name] / 1e3:.1f} |")
    write_json(args.out, table)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
