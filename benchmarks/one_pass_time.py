"""Total training time of one-pass pruning against dense training, same schedule.

What it measures: the package's default consensus run (gates live until the mask settles,
then the hand-over to the extracted network, whose epochs cost what the smaller network
costs) and a dense run (``--method dense``), with the same data, schedule and threads,
trained in ABBA order (dense, consensus, consensus, dense, ...) for ``--pairs`` pairs, so
that a change of machine load hits both. Each run's time is the sum of its epochs'
training and evaluation seconds as ``history.json`` records them; the script prints the
medians and their ratio, and the gated epochs before the hand-over against the same dense
epochs.

Run (from the repository root; about 3 minutes a pair on a 2-core CPU with the default 4,096
images, about 30 minutes a pair with ``--limit-train 50000``, the whole training set)::

    .venv/bin/python benchmarks/one_pass_time.py --data-root ../shared/data/cifar10 --json results/benchmarks/one_pass_time.json
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

from machine import command_line, machine_info, machine_line, write_json
from timing import add_pair_args, add_run_args, train_pairs

FLAGS = {"dense": ["--method", "dense"], "consensus": ["--method", "consensus"]}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_run_args(p, epochs=10)
    add_pair_args(p, pairs=1)
    return p.parse_args(argv)


def gated_epochs_ratio(histories: dict[str, list[list[dict]]], key: str) -> tuple[int | None, float | None]:
    """The number of whole epochs before the first consensus run's hand-over, and their time
    (history ``key``) against the same epochs of the dense runs (medians over runs;
    epoch-aligned, so the first epoch's warm-up is on both sides). (None, None) when the
    run never handed over or did so in its first epoch."""
    run = histories["consensus"][0]
    handover = next((i for i, h in enumerate(run) if "handover_step" in h), None)
    if not handover:
        return handover, None
    gated = statistics.median(sum(h[key] for h in r[:handover]) for r in histories["consensus"])
    dense = statistics.median(sum(h[key] for h in r[:handover]) for r in histories["dense"])
    return handover, gated / dense


def main(argv=None) -> int:
    args = parse_args(argv)
    key = "seconds" if args.clock == "wall" else "cpu_seconds"
    with tempfile.TemporaryDirectory() as tmp:
        histories = train_pairs(args, Path(tmp), FLAGS)
    total = {m: statistics.median(sum(h[key] for h in run) for run in runs) for m, runs in histories.items()}
    handover, gated_ratio = gated_epochs_ratio(histories, key)
    info = machine_info("cpu")
    how = "side by side" if args.side_by_side else "in ABBA order"
    print(f"Total {args.clock}-clock seconds (training + per-epoch evaluation of 500 images), {args.epochs} epochs "
          f"on {args.limit_train} images, batch {args.batch_size}, {args.threads} thread(s) per run, "
          f"{args.pairs} pair(s) {how}")
    print(machine_line(info))
    print(f"dense: {total['dense']:.1f} s; one pass (default consensus): {total['consensus']:.1f} s; "
          f"one pass / dense: {total['consensus'] / total['dense']:.2f}")
    if gated_ratio is not None:
        print(f"the {handover} epoch(s) before the hand-over (in epoch {handover + 1}) against the same dense "
              f"epochs: gated epoch / dense epoch {gated_ratio:.2f}")
    if args.json:
        write_json(args.json, {"what": "total one-pass training time against dense training, same schedule",
                               "command": command_line(__file__, argv),
                               "machine": info, "clock": args.clock, "side_by_side": args.side_by_side,
                               "total_s": total, "ratio": total["consensus"] / total["dense"],
                               "handover_epoch": None if handover is None else handover + 1,
                               "gated_epoch_ratio": gated_ratio,
                               "histories_seconds": {m: [[h[key] for h in r] for r in runs]
                                                     for m, runs in histories.items()}})
    return 0


if __name__ == "__main__":
    sys.exit(main())
