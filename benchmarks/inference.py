"""Inference cost of extracted sub-networks against the dense network, measured side by side.

What it measures: for CIFAR ResNets (default ResNet-20 and ResNet-56) and several gatings
and pruning levels, the FLOPs ratio (``ct.count_flops``), the parameter ratio
(``ct.count_params``) and the measured forward latency ratio (``ct.measure_latency``,
median, eval mode, no gradients) of the extracted sub-network over the plain dense
ResNet, at the batch sizes of ``--batch-sizes`` (default 1 and 64).

No training is needed: latency depends on shapes only. For each row a gated model is
built, random masks close the given share of units (``round(share * C)`` channels of
every channel gate, or that share of the residual blocks for layer gating; a closed
down-sampling block keeps its shortcut), the gates are frozen and the network is
extracted with ``ct.extract_subnetwork``. The dense network and the extracted one are
then timed in alternation (dense, extracted, extracted, dense, ...) for ``--rounds``
rounds of ``--repeats`` passes each, so that machine load hits both; each round gives
``ct.measure_latency``'s median, and the ratio is that of the medians over the rounds.
The "0%" row extracts with every gate open: it shows what the extracted module costs beside the plain ResNet when nothing is cut.

Run (from the repository root; a few minutes on a 2-core CPU):

    .venv/bin/python benchmarks/inference.py --threads 1
    .venv/bin/python benchmarks/inference.py --device cuda --batch-sizes 1 64 256
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch
from machine import command_line, machine_info, machine_line, write_json
from timing import add_timing_args, check_timing_args, paired_latency, timing_device
from tqdm.auto import tqdm

import consensus_tutorial as ct

# (label, gating, position, share of units closed)
DEFAULT_CASES = [
    ("channel (b) 0%", "channel", "b", 0.0),
    ("channel (b) 30%", "channel", "b", 0.3),
    ("channel (b) 50%", "channel", "b", 0.5),
    ("channel (b) 70%", "channel", "b", 0.7),
    ("channel (a) 50%", "channel", "a", 0.5),
    ("channel (c) 50%", "channel", "c", 0.5),
    ("layer 30% of blocks", "layer", "b", 0.3),
    ("layer 50% of blocks", "layer", "b", 0.5),
    ("layer 70% of blocks", "layer", "b", 0.7),
]



def random_masks(model: ct.ResNet, gating: str, share: float, generator: torch.Generator) -> dict:
    """Masks closing ``round(share * C)`` units of every channel gate, or ``round(share * blocks)``
    randomly chosen blocks for layer gating."""
    gates = ct.gate_modules(model)
    if gating == "layer":
        names = list(gates)
        closed = set(torch.randperm(len(names), generator=generator)[: round(share * len(names))].tolist())
        return {n: torch.tensor([i not in closed]) for i, n in enumerate(names)}
    masks = {}
    for n, g in gates.items():
        mask = torch.ones(g.units, dtype=torch.bool)
        mask[torch.randperm(g.units, generator=generator)[: round(share * g.units)]] = False
        masks[n] = mask
    return masks


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--archs", nargs="+", default=["resnet20", "resnet56"],
                   choices=[a for a in ct.models.ARCHS if a != "resnet18"], help="CIFAR ResNets")
    add_timing_args(p, batch_sizes=[1, 64])
    p.add_argument("--seed", type=int, default=0, help="seed of the random masks")
    p.add_argument("--json", type=Path, default=None, help="also write the rows and the machine to this JSON file")
    args = p.parse_args(argv)
    check_timing_args(p, args)
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    device = timing_device(args)
    generator = torch.Generator().manual_seed(args.seed)
    rows, dense_ms = [], {}
    jobs = [(arch, case) for arch in args.archs for case in DEFAULT_CASES]
    for arch, (label, gating, position, share) in tqdm(jobs, desc="rows", file=sys.stderr):
        torch.manual_seed(args.seed)
        dense = ct.build_model(arch, 10).to(device).eval()
        gated = ct.build_model(arch, 10, gating=gating, position=position, gate="static").to(device)
        masks = random_masks(gated, gating, share, generator)
        subnet = ct.extract_subnetwork(ct.freeze_gates(gated, masks).eval())
        row = {
            "model": arch, "gating": label,
            "flops": ct.count_flops(subnet) / ct.count_flops(dense),
            "params": ct.count_params(subnet) / ct.count_params(dense),
        }
        for b in args.batch_sizes:
            d, s = paired_latency(dense, subnet, b, dense.input_shape, device, args.rounds, args.repeats,
                                  args.warmup, args.clock)
            row[f"lat{b}"] = s / d
            dense_ms.setdefault((arch, b), []).append(d * 1e3)
        rows.append(row)

    print()
    print(f"Inference: extracted / dense, {device}, median over {args.rounds} rounds (ABBA interleaved) of "
          f"ct.measure_latency medians of {args.repeats} passes ({args.clock} clock), random masks (seed {args.seed}), 10 classes")
    print(machine_line(machine_info(device)))
    print()
    head = ["model", "gating (share of units closed)", "FLOPs ratio", "params ratio"]
    head += [f"latency ratio (batch {b})" for b in args.batch_sizes]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in rows:
        cells = [r["model"], r["gating"], f"{r['flops']:.3f}", f"{r['params']:.3f}"]
        cells += [f"{r[f'lat{b}']:.3f}" for b in args.batch_sizes]
        print("| " + " | ".join(cells) + " |")
    print()
    for (arch, b), values in dense_ms.items():
        print(f"dense {arch}, batch {b}: median {statistics.median(values):.2f} ms per forward pass "
              f"(median over the rows' dense timings)")
    if args.json:
        write_json(args.json, {
            "what": "extracted / dense ratios of FLOPs, parameters and latency (lat<batch>), random masks",
            "command": command_line(__file__, argv),
            "machine": machine_info(device), "clock": args.clock, "rounds": args.rounds, "repeats": args.repeats, "seed": args.seed,
            "batch_sizes": args.batch_sizes, "rows": rows,
            "dense_ms": {f"{arch} batch {b}": statistics.median(v) for (arch, b), v in dense_ms.items()},
        })
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
