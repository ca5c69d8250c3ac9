"""Latency of each residual block of a dense CIFAR ResNet, measured side by side.

Why: FLOPs weigh every multiply-accumulate the same, but a CPU does not run every layer
at the same rate. In a CIFAR ResNet each stage costs about the same FLOPs (stage 1: 16
channels at 32x32, stage 3: 64 channels at 8x8), so a FLOPs-weighted sparsity term treats
a block of stage 1 and a block of stage 3 as equally expensive. This benchmark measures
what each block really costs.

What it measures: the dense network (``--arch``, default ResNet-20) is run once on a
random batch to record every block's input shape. Each block is then timed alone
(``ct.measure_latency``, eval mode, no gradients) on an input of that shape, at each
batch size of ``--batch-sizes``. The blocks are timed in turn, in alternating order
from round to round (first to last, then last to first), so that a change of machine
load hits all of them; each block's latency is the median over ``--rounds`` rounds of
``ct.measure_latency``'s median of ``--repeats`` passes. The table gives each block's
MACs per image (``ct.count_flops`` at batch 1), its latency, its share of the summed
block latency against its share of the summed block MACs, and its throughput in
MACs per microsecond.

Run (from the repository root; about a minute on a 2-core CPU):

    .venv/bin/python benchmarks/block_latency.py --threads 1 --clock cpu
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from machine import command_line, machine_info, machine_line, write_json
from timing import add_timing_args, check_timing_args, timing_device

import consensus_tutorial as ct
from consensus_tutorial.costs import block_input_shapes, time_alternating


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--arch", default="resnet20", help="a CIFAR ResNet of ct.build_model: resnet20, resnet56, ...")
    add_timing_args(p, batch_sizes=[1, 128])
    p.add_argument("--json", type=Path, default=None, help="also write the timings and the machine to this JSON file")
    args = p.parse_args(argv)
    check_timing_args(p, args)
    return args


def print_table(rows: list[dict], batch_sizes: list[int]) -> None:
    """The per-block table: MACs, and time, share of time and MACs per µs at each batch size."""
    print()
    header = "| block | input (C x H x W) | M MACs per image | share of MACs |"
    rule = "|---|---|---|---|"
    for batch in batch_sizes:
        header += f" ms, batch {batch} | share of time, batch {batch} | MACs per µs, batch {batch} |"
        rule += "---|---|---|"
    print(header)
    print(rule)
    for row in rows:
        line = f"| {row['block']} | {row['input']} | {row['macs'] / 1e6:.2f} | {100 * row['macs_share']:.1f}% |"
        for batch in batch_sizes:
            line += (f" {1e3 * row[f'latency_b{batch}_s']:.3f} | {100 * row[f'latency_share_b{batch}']:.1f}% |"
                     f" {row[f'macs_per_us_b{batch}']:.0f} |")
        print(line)


def main(argv=None) -> int:
    args = parse_args(argv)
    device = timing_device(args)
    torch.manual_seed(0)
    model = ct.build_model(args.arch, 10).to(device).eval()
    blocks = {f"stages.{i}.{j}": block for i, stage in enumerate(model.stages) for j, block in enumerate(stage)}
    shapes = {name: shape[1:] for name, shape in block_input_shapes(model, 1).items()}  # (C, H, W)
    macs = {name: ct.count_flops(blocks[name], (1, *shapes[name])) for name in blocks}

    latency: dict[int, dict[str, float]] = {}
    for batch in args.batch_sizes:  # blocks warmed up, then timed in alternating order
        jobs = {(name,): (blocks[name], (batch, *shapes[name])) for name in blocks}
        seconds = time_alternating(jobs, rounds=args.rounds, repeats=args.repeats, clock=args.clock,
                                   warmup=args.warmup)
        latency[batch] = {name: seconds[(name,)] for name in blocks}

    rows = []
    total_macs = sum(macs.values())
    for name in blocks:
        stage, index = (int(k) for k in name.split(".")[1:])
        row = {"block": f"s{stage + 1}.b{index + 1}", "input": "x".join(str(s) for s in shapes[name]),
               "macs": macs[name], "macs_share": macs[name] / total_macs}
        for batch in args.batch_sizes:
            seconds = latency[batch][name]
            row[f"latency_b{batch}_s"] = seconds
            row[f"latency_share_b{batch}"] = seconds / sum(latency[batch].values())
            row[f"macs_per_us_b{batch}"] = batch * macs[name] / (1e6 * seconds)
        rows.append(row)

    info = machine_info(device)
    print(f"Latency of each residual block of a dense {args.arch}, timed alone in turn: batch sizes "
          f"{args.batch_sizes}, {args.rounds} rounds of {args.repeats} passes, {args.clock} clock (medians)")
    print(machine_line(info))
    print_table(rows, args.batch_sizes)
    print()
    for batch in args.batch_sizes:
        first, last = rows[0], rows[-1]
        print(f"batch {batch}: block {first['block']} takes {first[f'latency_b{batch}_s'] / last[f'latency_b{batch}_s']:.2f}x "
              f"the time of block {last['block']} for {first['macs'] / last['macs']:.2f}x its MACs")
    if args.json:
        write_json(args.json, {
            "what": "latency of each residual block of a dense network, timed alone, medians over rounds",
            "command": command_line(__file__, argv),
            "machine": info, "arch": args.arch, "batch_sizes": args.batch_sizes, "rounds": args.rounds,
            "repeats": args.repeats, "clock": args.clock, "rows": rows,
        })
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
