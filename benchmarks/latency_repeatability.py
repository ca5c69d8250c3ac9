"""How far apart the extracted-to-dense latency ratio lands in separate processes.

Why: ``benchmarks/results_check.py`` times each extracted network against the dense one
in one process, in ABBA order, which cancels slow drifts of the machine's speed. It
cannot cancel what stays fixed for a whole process. On the shared 2-core virtual
machine this book was built on, the batch-128 ratio of one network moved by far more
between processes than within one, while the batch-1 ratio stayed put. This benchmark
measures that spread, so that the chapter can say which latency ratios can be read.

What it measures: for each run folder of ``--runs``, ``--processes`` fresh Python
processes are started one after another. Each loads the run's ``subnetwork.pt`` alone,
builds the dense network of its architecture, and times both with the same side-by-side
measurement as ``results_check.py`` (``--rounds`` ABBA rounds of ``--repeats`` passes,
medians) at each batch size of ``--batch-sizes``. The table gives each process's ratio
and their minimum, median and maximum.

Run (from the repository root; about 2 minutes on a 2-core CPU):

    .venv/bin/python benchmarks/latency_repeatability.py --threads 1 --clock cpu --json results/benchmarks/latency_repeatability.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

from machine import command_line, machine_info, machine_line, write_json
from timing import add_timing_args, check_timing_args, load_run, paired_latency, timing_device

DEFAULT_RUNS = ["results/cifar10-resnet20/random-0.5", "results/cifar10-resnet20/channel-b-0.5",
                "results/cifar10-resnet20/layer-0.5"]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--runs", nargs="+", type=Path, default=[Path(r) for r in DEFAULT_RUNS],
                   help="run folders, each with a subnetwork.pt")
    p.add_argument("--processes", type=int, default=5, help="fresh processes per run")
    add_timing_args(p, batch_sizes=[1, 128])
    p.add_argument("--json", type=Path, default=None, help="also write the ratios and the machine to this JSON file")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)  # one process's measurement
    args = p.parse_args(argv)
    check_timing_args(p, args)
    if args.processes < 2:
        p.error("--processes must be >= 2: a spread needs at least two processes")
    missing = [str(r) for r in args.runs if not ((r / "subnetwork.pt").is_file() and (r / "metrics.json").is_file())]
    if missing:
        p.error(f"no subnetwork.pt and metrics.json in {missing}; train the runs first (results/run_cifar10_resnet20.py)")
    return args


def measure_once(args: argparse.Namespace) -> dict[str, float]:
    """{"b<batch>": extracted/dense latency ratio} for the single run of ``args.runs``, in this process."""
    device = timing_device(args)
    _, subnet, dense = load_run(args.runs[0], device)
    ratios = {}
    for b in args.batch_sizes:
        d, s = paired_latency(dense, subnet, b, dense.input_shape, device, args.rounds, args.repeats,
                              args.warmup, args.clock)
        ratios[f"b{b}"] = s / d
    return ratios


def child_command(args: argparse.Namespace, run: Path) -> list[str]:
    command = [sys.executable, __file__, "--child", "--runs", str(run), "--processes", str(args.processes),
               "--batch-sizes", *map(str, args.batch_sizes), "--rounds", str(args.rounds),
               "--repeats", str(args.repeats), "--warmup", str(args.warmup), "--device", args.device,
               "--clock", args.clock]
    return command + (["--threads", str(args.threads)] if args.threads else [])


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.child:
        print(json.dumps(measure_once(args)))
        return 0
    rows = []
    for run in args.runs:
        per_process = []
        for i in range(args.processes):
            done = subprocess.run(child_command(args, run), capture_output=True, text=True)
            if done.returncode != 0:
                print(done.stderr, file=sys.stderr)
                print(f"the timing process for {run} failed (exit {done.returncode}); its error is above",
                      file=sys.stderr)
                return 1
            per_process.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(f"{run.name}: process {i + 1}/{args.processes} done", file=sys.stderr)
        for b in args.batch_sizes:
            ratios = [p[f"b{b}"] for p in per_process]
            rows.append({"run": run.name, "batch": b, "ratios": ratios, "min": min(ratios),
                         "median": statistics.median(ratios), "max": max(ratios)})

    info = machine_info(timing_device(args))
    print(f"Extracted/dense latency ratio in {args.processes} separate processes per run: {args.rounds} ABBA "
          f"rounds of {args.repeats} passes each, {args.clock} clock (medians)")
    print(machine_line(info))
    print()
    print("| run | batch | ratio in each process | min | median | max | max - min |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['run']} | {r['batch']} | {', '.join(f'{x:.2f}' for x in r['ratios'])} | {r['min']:.2f} | "
              f"{r['median']:.2f} | {r['max']:.2f} | {r['max'] - r['min']:.2f} |")
    if args.json:
        write_json(args.json, {
            "what": "extracted/dense latency ratio of committed runs, measured in separate processes",
            "command": command_line(__file__, argv),
            "machine": info, "batch_sizes": args.batch_sizes, "processes": args.processes, "rounds": args.rounds,
            "repeats": args.repeats, "clock": args.clock, "rows": rows,
        })
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
