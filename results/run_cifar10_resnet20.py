"""Train the CIFAR-10 / ResNet-20 result set of the results chapter, two runs at a time.

Every run uses one schedule (``COMMON``: 10 epochs, batch 128, the package's default
one-cycle SGD, all 50,000 train and 10,000 test images) and seed 0; the runs differ only
in method, gating and target rate. Two runs are repeated with seed 1 (``SEEDS``) to show
how far apart two seeds of one run land. Each run is one ``python -m consensus_tutorial train``
command writing ``results/cifar10-resnet20/<name>/``; the command is stored in that run's
``metrics.json``. A run whose ``metrics.json`` exists is skipped, and every command passes
``--resume``, so a killed batch continues from each run's last finished epoch::

    python results/run_cifar10_resnet20.py --data-root ../shared/data/cifar10          # all
    python results/run_cifar10_resnet20.py --data-root ../shared/data/cifar10 dense    # one
    python results/run_cifar10_resnet20.py --list                                      # commands

Paths are relative to the repository root, whatever folder the script is started from.

These runs are the record of the package's *first* default, gates live to the end of
training; ``COMMON`` pins it, so the commands reproduce them under later defaults (the
commands stored in their ``metrics.json`` predate those flags). The seed study of the
current default is ``scripts/run_study.py``.

On a 2-core CPU, two jobs with one torch thread each are faster than one job with two
threads. A 10-epoch run then takes about 35 minutes, and the whole set about 3 hours.
"""

from __future__ import annotations

import sys
from pathlib import Path

from consensus_tutorial.runset import RunSet, train_command

ROOT = Path(__file__).resolve().parent.parent  # the repository root; paths below are relative to it
OUT = Path("results") / "cifar10-resnet20"
COMMON = ["--dataset", "cifar10", "--arch", "resnet20", "--epochs", "10", "--batch-size", "128",
          # the package's first defaults, under which these runs were trained: gates live to the
          # end, and the pruned baselines trained as gated models with frozen gates
          "--settle", "live", "--no-train-extracted"]
#: the seed of every run, except the repeats in SEEDS
SEED = 0

# name -> the flags that set the method; in the order they are worth running
RUNS: dict[str, list[str]] = {
    "channel-b-0.5": ["--method", "consensus", "--gating", "channel", "--position", "b", "--target-rate", "0.5"],
    "dense": ["--method", "dense"],
    "channel-b-0.3": ["--method", "consensus", "--gating", "channel", "--position", "b", "--target-rate", "0.3"],
    "layer-0.5": ["--method", "consensus", "--gating", "layer", "--target-rate", "0.5"],
    "random-0.5": ["--method", "random", "--target-rate", "0.5"],
    "l1-0.5": ["--method", "l1", "--target-rate", "0.5"],
    "bn-polarization-0.5": ["--method", "bn-polarization", "--target-rate", "0.5"],
    # position (a) cuts only conv1's input channels: at most 46.5% of ResNet-20's FLOPs sit
    # behind its gates, so 0.5 cannot be reached there (the trainer says so and stops)
    "channel-a-0.3": ["--method", "consensus", "--gating", "channel", "--position", "a", "--target-rate", "0.3"],
    "channel-c-0.5": ["--method", "consensus", "--gating", "channel", "--position", "c", "--target-rate", "0.5"],
    "channel-b-0.7": ["--method", "consensus", "--gating", "channel", "--position", "b", "--target-rate", "0.7"],
    "layer-0.3": ["--method", "consensus", "--gating", "layer", "--target-rate", "0.3"],
    # the two runs of the closest comparison again, with another seed: how far apart do two
    # seeds of one run land?
    "channel-b-0.5-seed1": ["--method", "consensus", "--gating", "channel", "--position", "b", "--target-rate", "0.5"],
    "random-0.5-seed1": ["--method", "random", "--target-rate", "0.5"],
}

#: runs repeated with another seed: name -> seed (the name ends in "-seed<seed>")
SEEDS: dict[str, int] = {"channel-b-0.5-seed1": 1, "random-0.5-seed1": 1}


def seed(name: str) -> int:
    """The seed of run ``name``."""
    return SEEDS.get(name, SEED)


def command(name: str, data_root: str, threads: int) -> list[str]:
    """The training command of run ``name``."""
    return train_command(OUT / name, [*COMMON, "--seed", str(seed(name)), *RUNS[name]], data_root, threads)


def main(argv: list[str] | None = None) -> int:
    return RunSet(list(RUNS), lambda name: OUT / name, command).main(argv, __doc__.split("\n\n")[0], ROOT)


if __name__ == "__main__":
    sys.exit(main())
