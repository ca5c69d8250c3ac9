"""Latency of an extracted network against the dense one in each deployment mode.

What it measures: a ResNet (``--arch``) with channel gates at position b, its channels
cut to remove ``--target`` of the FLOPs (random channels, the same share per layer, the
package's budget cut), extracted; then, for each mode of ``consensus_tutorial.deploy``
(eager; batch norm folded; folded and channels-last; compiled), the dense and the
extracted network in that mode are timed in alternation (``ct.measure_latency`` medians,
ABBA rounds) at each batch size. It prints, per mode and batch size, the latency ratio
and the share of the FLOPs reduction that became a latency reduction,
``(1 - latency ratio) / (1 - FLOPs ratio)``. Which mode a number uses is in its row.

Run (from the repository root; several minutes on a 2-core CPU, most of it compiling)::

    .venv/bin/python benchmarks/deploy.py --threads 1 --clock cpu --json results/benchmarks/deploy.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from machine import command_line, machine_info, machine_line, write_json
from timing import add_timing_args, check_timing_args, paired_latency, timing_device

import consensus_tutorial as ct
from consensus_tutorial.baselines import masks_for_flops
from consensus_tutorial.deploy import MODES, deployed


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--arch", default="resnet20")
    p.add_argument("--target", type=float, default=0.5, help="share of the FLOPs the extracted network removes")
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    add_timing_args(p, batch_sizes=[1, 64])
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    check_timing_args(p, args)
    return args


def networks(arch: str, target: float, device: torch.device) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The dense network and an extracted one that removes ``target`` of its FLOPs."""
    torch.manual_seed(0)
    gated = ct.build_model(arch, 10, gating="channel", position="b", gate="static")
    scores = {n: torch.rand(g.units) for n, g in ct.gate_modules(gated).items()}
    subnet = ct.extract_subnetwork(ct.freeze_gates(gated, masks_for_flops(gated, scores, target)))
    return ct.build_model(arch, 10).to(device).eval(), subnet.to(device).eval()


def main(argv=None) -> int:
    args = parse_args(argv)
    device = timing_device(args)
    dense, subnet = networks(args.arch, args.target, device)
    flops_ratio = ct.count_flops(subnet) / ct.count_flops(dense)
    rows = []
    for mode in args.modes:
        pair = deployed(dense, mode), deployed(subnet, mode)
        for batch in args.batch_sizes:
            t_dense, t_sub = paired_latency(*pair, batch, dense.input_shape, device, args.rounds, args.repeats,
                                            args.warmup, args.clock)
            ratio = t_sub / t_dense
            rows.append({"mode": mode, "batch": batch, "dense_ms": 1e3 * t_dense, "extracted_ms": 1e3 * t_sub,
                         "latency_ratio": ratio, "share_of_flops_cut": (1 - ratio) / (1 - flops_ratio)})
            print(f"  {mode}, batch {batch}: {ratio:.3f}", file=sys.stderr)
    info = machine_info(device)
    print(f"{args.arch}, channel gates at b, {100 * (1 - flops_ratio):.1f}% of the FLOPs removed "
          f"(FLOPs ratio {flops_ratio:.3f}); {args.clock} clock, {args.rounds} rounds of {args.repeats} passes")
    print(machine_line(info))
    print("| mode | batch | dense ms | extracted ms | latency ratio | latency cut / FLOPs cut |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['mode']} | {r['batch']} | {r['dense_ms']:.2f} | {r['extracted_ms']:.2f} | "
              f"{r['latency_ratio']:.3f} | {r['share_of_flops_cut']:.2f} |")
    if args.json:
        write_json(args.json, {"what": "latency ratio extracted / dense per deployment mode", "machine": info,
                               "command": command_line(__file__, argv),
                               "flops_ratio": flops_ratio, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
