"""The method screen: which way of sharing the FLOPs budget, and whether to settle then
train, gives the best consensus sub-network on a small CIFAR-10 subset.

Setting (one for every run): ResNet-20, 5,000 class-balanced training and 2,000 test
images of CIFAR-10, 6 epochs, batch 128, the package's one-cycle SGD at 0.1, target rate
0.5 (share of FLOPs removed), one torch thread, seeds 0, 1 and 2. The variants differ
only in the flags of ``VARIANTS``; each run writes ``results/screening/<variant>-seed<k>/``.
``random-widths*`` are controls: random channels at the widths that the ``freeze`` (or
``freeze-costlr``, ``sgd-floor25``) run of the same seed kept, which measure an allocation
without the cost of its search phase. ``python scripts/screen_report.py`` turns the runs into the table of
the results chapter::

    python scripts/run_screen.py --data-root ../shared/data/cifar10        # all (about 50 min, 2 cores)
    python scripts/run_screen.py --list                                     # the commands
    python scripts/run_screen.py random-seed0 freeze-seed0                  # some
"""

from __future__ import annotations

import sys
from pathlib import Path

from consensus_tutorial.runset import RunSet, split_seed, train_command

ROOT = Path(__file__).resolve().parent.parent
OUT = Path("results") / "screening"
SEEDS = (0, 1, 2)
COMMON = ["--dataset", "cifar10", "--arch", "resnet20", "--epochs", "6", "--batch-size", "128",
          "--limit-train", "5000", "--limit-test", "2000", "--target-rate", "0.5",
          # the defaults when the screen ran, pinned so that these commands still reproduce it
          # (the package's defaults changed after it: see the results chapter)
          "--allocation", "global", "--sparsity-start", "0", "--settle-flips", "0.01"]

#: variant -> the flags that make it (everything else is the package default)
VARIANTS: dict[str, list[str]] = {
    "dense": ["--method", "dense"],
    "random": ["--method", "random"],
    "live": ["--settle", "live"],
    "freeze": [],
    "freeze-uniform": ["--allocation", "uniform"],
    "freeze-uniform-late": ["--allocation", "uniform", "--sparsity-start", "0.1"],
    "freeze-floor25": ["--min-keep", "0.25"],
    "freeze-costlr": ["--gate-lr-scale", "cost"],
    "sgd-floor25": ["--gate-optimizer", "sgd", "--gate-lr", "1.0", "--gate-input-lr-scale", "0.1",
                    "--min-keep", "0.25"],
    "random-widths": ["--method", "random", "--widths-from", str(OUT / "freeze-seed{seed}")],
    # the allocations of two variants, without their search phase: random channels at their widths
    "random-widths-costlr": ["--method", "random", "--widths-from", str(OUT / "freeze-costlr-seed{seed}")],
    "random-widths-sgd": ["--method", "random", "--widths-from", str(OUT / "sgd-floor25-seed{seed}")],
}
#: variant -> the variant whose run of the same seed it reads
NEEDS = {"random-widths": "freeze", "random-widths-costlr": "freeze-costlr", "random-widths-sgd": "sgd-floor25"}


def run_name(variant: str, seed: int) -> str:
    return f"{variant}-seed{seed}"


def command(name: str, data_root: str, threads: int) -> list[str]:
    variant, seed = split_seed(name)
    flags = [f.format(seed=seed) for f in VARIANTS[variant]]
    return train_command(OUT / name, [*COMMON, "--seed", str(seed), *flags, "--quiet"], data_root, threads)


def ready(name: str) -> bool:
    variant, seed = split_seed(name)
    return variant not in NEEDS or (OUT / run_name(NEEDS[variant], seed) / "metrics.json").is_file()


RUNS = RunSet([run_name(v, s) for s in SEEDS for v in VARIANTS], lambda name: OUT / name, command, ready)

if __name__ == "__main__":
    sys.exit(RUNS.main(None, __doc__.split("\n\n")[0], ROOT))
