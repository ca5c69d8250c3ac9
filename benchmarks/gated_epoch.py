"""What an epoch of gated training costs against a dense epoch (the phase before the switch).

What it measures: a consensus run whose gates stay live for the whole run (``--settle
live``: no freeze, no hand-over, so every epoch is an epoch of the search phase, with the
gates, the STE, both penalties and the firing rates) against a dense run (``--method
dense``), with the same data, schedule and threads, in ABBA order (dense, gated, gated,
dense, ...) for ``--pairs`` pairs. Each run's time is the sum of its epochs' training and
evaluation seconds from ``history.json``; the script prints every pair's ratio and their
median. ``benchmarks/one_pass_time.py`` times whole default runs, whose gated phase is
too short (one or two epochs) to measure this ratio on its own.

Run (from the repository root; about 5 minutes on a 2-core CPU)::

    .venv/bin/python benchmarks/gated_epoch.py --data-root ../shared/data/cifar10 --json results/benchmarks/gated_epoch.json
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

from machine import command_line, machine_info, machine_line, write_json
from timing import add_pair_args, add_run_args, train_pairs

FLAGS = {"dense": ["--method", "dense"], "gated": ["--method", "consensus", "--settle", "live"]}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_run_args(p, epochs=2)
    add_pair_args(p, pairs=3)
    args = p.parse_args(argv)
    if args.pairs < 1:
        p.error("--pairs must be >= 1")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    key = "seconds" if args.clock == "wall" else "cpu_seconds"
    with tempfile.TemporaryDirectory() as tmp:
        histories = train_pairs(args, Path(tmp), FLAGS)
    seconds = {kind: [sum(h[key] for h in run) for run in runs] for kind, runs in histories.items()}
    ratios = [g / d for g, d in zip(seconds["gated"], seconds["dense"])]
    info = machine_info("cpu")
    how = "side by side" if args.side_by_side else "in ABBA order"
    print(f"Gated (live gates, no hand-over) against dense: {args.epochs} epochs on {args.limit_train} images, "
          f"batch {args.batch_size}, {args.threads} thread(s) per run, pairs {how}, {args.clock}-clock seconds of "
          "training + evaluation of 500 images per epoch")
    print(machine_line(info))
    for pair, (d, g) in enumerate(zip(seconds["dense"], seconds["gated"])):
        print(f"pair {pair + 1}: dense {d:.1f} s, gated {g:.1f} s, ratio {g / d:.3f}")
    print(f"gated epoch / dense epoch: median {statistics.median(ratios):.3f} over {args.pairs} pair(s)")
    if args.json:
        write_json(args.json, {"what": "gated (live) epoch against dense epoch, same schedule",
                               "command": command_line(__file__, argv),
                               "machine": info, "clock": args.clock, "side_by_side": args.side_by_side,
                               "seconds": seconds, "ratios": ratios,
                               "median_ratio": statistics.median(ratios)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
