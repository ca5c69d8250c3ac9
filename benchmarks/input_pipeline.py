"""Share of a training step spent in the input pipeline, measured side by side.

What it measures, on the real CIFAR-10 training images:

* **decoding**: seconds to load the split into memory as uint8 tensors
  (``load_dataset``: JPEG packs or the official pickles, decoded once per run);
* **input pipeline**: seconds per batch of ``BatchLoader`` alone (permutation, random
  crop with padding, flip, float conversion and normalisation of a whole batch at once);
* **training step**: seconds per batch of a dense ResNet-20 training step (forward,
  cross-entropy, backward, SGD) on batches prepared in advance, no loader involved.

The two are timed in ABBA order (pipeline, step, step, pipeline, ...) over ``--batches``
batches per round, on the process's CPU clock and on the wall clock. The share printed
is pipeline / (pipeline + step): the part of an epoch the input pipeline costs. The
dense step is the cheapest step the trainer runs (gated training adds about 10%), so the
share is an upper bound.

Run (from the repository root; about a minute on a 2-core CPU):

    .venv/bin/python benchmarks/input_pipeline.py --threads 1
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from machine import command_line, machine_info, machine_line, write_json

import consensus_tutorial as ct
from consensus_tutorial.data import DATA_ENV, BatchLoader, data_root, load_dataset



def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data-root", default=str(data_root()),
                   help="folder with CIFAR-10 (packs or official layout); default: the package's data folder "
                   f"(${DATA_ENV}, else ~/.cache/consensus-tutorial/data)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--batches", type=int, default=20, help="batches per timed round")
    p.add_argument("--rounds", type=int, default=4, help="ABBA rounds")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads; None leaves torch's own choice")
    p.add_argument("--json", type=Path, default=None, help="also write the timings and the machine to this JSON file")
    args = p.parse_args(argv)
    if args.batch_size < 1 or args.batches < 1 or args.rounds < 1:
        p.error("--batch-size, --batches and --rounds must be >= 1")
    return args


def timed(fn) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of ``fn()``."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    wall, cpu = time.perf_counter(), time.process_time()
    train = load_dataset("cifar10", args.data_root, "train")
    decode = {"wall_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu, "images": len(train)}
    loader = BatchLoader(train, args.batch_size, train=True, seed=0)
    if args.batches > len(loader):
        raise SystemExit(f"error: --batches {args.batches} is more than one epoch ({len(loader)} batches).")

    def pipeline() -> None:
        for i, _ in enumerate(loader):
            if i + 1 == args.batches:
                break

    torch.manual_seed(0)
    model = ct.build_model("resnet20", 10).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    it = iter(loader)
    batches = [next(it) for _ in range(args.batches)]

    def steps() -> None:
        for x, y in batches:
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    pipeline(), steps()  # warm-up
    times: dict[str, list[tuple[float, float]]] = {"pipeline": [], "step": []}
    for r in range(args.rounds):
        for name in (("pipeline", "step") if r % 2 == 0 else ("step", "pipeline")):
            times[name].append(timed(pipeline if name == "pipeline" else steps))

    per_batch = {name: {"wall_s": statistics.median(t[0] for t in ts) / args.batches,
                        "cpu_s": statistics.median(t[1] for t in ts) / args.batches}
                 for name, ts in times.items()}
    share = {clock: per_batch["pipeline"][clock] / (per_batch["pipeline"][clock] + per_batch["step"][clock])
             for clock in ("wall_s", "cpu_s")}
    info = machine_info(torch.device("cpu"))
    print(f"Input pipeline against a dense ResNet-20 training step: CIFAR-10, batch {args.batch_size}, "
          f"{args.batches} batches per round, {args.rounds} ABBA rounds (medians)")
    print(machine_line(info))
    print(f"\ndecoding {decode['images']} training images once: {decode['wall_s']:.1f} s wall, "
          f"{decode['cpu_s']:.1f} s CPU\n| per batch | wall ms | CPU ms |\n|---|---|---|")
    for name, words in (("pipeline", "input pipeline (BatchLoader)"), ("step", "training step (dense)")):
        print(f"| {words} | {1e3 * per_batch[name]['wall_s']:.1f} | {1e3 * per_batch[name]['cpu_s']:.1f} |")
    print(f"\ninput pipeline / (pipeline + step): wall {share['wall_s']:.3f}, CPU {share['cpu_s']:.3f}")
    if args.json:
        write_json(args.json, {
            "what": "input pipeline vs dense training step, per batch, ABBA medians",
            "command": command_line(__file__, argv),
            "machine": info, "batch_size": args.batch_size, "batches": args.batches, "rounds": args.rounds,
            "decode": decode, "per_batch": per_batch, "share": share,
        })
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
