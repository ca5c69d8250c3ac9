"""Step time of one process against two (torchrun, gloo) on this machine's CPU.

A CPU check of the multi-process path, not a GPU result: both runs train the same settings
(the package's default consensus method)
with the same global batch, one as a single process with ``--threads 2``, one as two
processes of one thread each under ``torchrun --nproc_per_node=2`` (each process then sees
half of every batch, and the gradients, firing rates and penalty means are all-reduced
over gloo every step). It prints the mean training seconds per epoch of each and their
ratio, measured one after the other in this run. On a GPU machine the same command with
``--device cuda`` compares one GPU with two.

Run (from the repository root; a few minutes on a 2-core CPU)::

    .venv/bin/python benchmarks/processes.py --limit-train 4096 --epochs 3 --json results/benchmarks/processes.json
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from machine import command_line, machine_info, machine_line, write_json
from timing import add_run_args, train_history


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_run_args(p, epochs=3)
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    if args.epochs < 2:
        p.error("--epochs must be >= 2 (the first epoch warms up and is not counted)")
    return args


def _train(args: argparse.Namespace, processes: int, out: Path) -> list[float]:
    """Seconds of each epoch of one run of ``processes`` processes sharing two CPU threads."""
    threads = 2 // processes if args.device == "cpu" else 1
    history = train_history(args, out, ["--device", args.device], processes=processes, threads=threads)
    return [h["seconds"] for h in history]


def main(argv=None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        seconds = {n: _train(args, n, Path(tmp) / f"p{n}") for n in (1, 2)}
    mean = {n: sum(s[1:]) / len(s[1:]) for n, s in seconds.items()}
    info = machine_info(args.device)
    print(f"Seconds per epoch as history.json records them (training on {args.limit_train} images, global batch "
          f"{args.batch_size}, and rank 0's evaluation of 500 test images), mean of epochs 2-{args.epochs}; "
          f"a CPU check of the multi-process path, run one after the other")
    print(machine_line(info))
    print("| processes | threads each | s per epoch |")
    print("|---|---|---|")
    for n in (1, 2):
        print(f"| {n} | {2 // n} | {mean[n]:.1f} |")
    print(f"two processes / one process: {mean[2] / mean[1]:.2f}")
    if args.json:
        write_json(args.json, {"what": "training seconds per epoch, one process vs two (torchrun, gloo)",
                               "command": command_line(__file__, argv),
                               "machine": info, "seconds": {str(n): s for n, s in seconds.items()},
                               "ratio": mean[2] / mean[1]})
    return 0


if __name__ == "__main__":
    sys.exit(main())
