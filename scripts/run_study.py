"""The seed study of the results chapter: the package's default consensus method against
the baselines on all of CIFAR-10, ResNet-20, over three seeds.

Every run uses one schedule (``COMMON``: 10 epochs, batch 128, the package's one-cycle SGD,
all 50,000 train and 10,000 test images; the same as ``results/cifar10-resnet20/``) and
the package defaults for everything else, so that a command names only what it studies.
Runs, in the order they are trained (the comparison that matters first):

* ``consensus-b-0.5``, ``random-0.5`` (seeds 0, 1, 2): the method at position b against
  random channels, at half the FLOPs;
* (no separate "random channels at the consensus widths" control: with the default
  allocation the consensus run keeps the same share of every layer, so its widths are the
  random run's widths exactly, and ``random-0.5`` is that control; a test checks it);
* ``l1-0.5`` (seeds 0, 1, 2);
* ``consensus-b-0.3``, ``consensus-b-0.7``, ``layer-0.5`` (seed 0).

Each run writes ``results/cifar10-resnet20-v2/<name>/`` (``metrics.json`` holds its
command); finished runs are skipped and every command passes ``--resume``::

    python scripts/run_study.py --data-root ../shared/data/cifar10     # all (hours; resumes)
    python scripts/run_study.py --list                                  # the commands
"""

from __future__ import annotations

import sys
from pathlib import Path

from consensus_tutorial.runset import RunSet, split_seed, train_command

ROOT = Path(__file__).resolve().parent.parent
OUT = Path("results") / "cifar10-resnet20-v2"
COMMON = ["--dataset", "cifar10", "--arch", "resnet20", "--epochs", "10", "--batch-size", "128"]
SEEDS = (0, 1, 2)
CONSENSUS_B = ["--method", "consensus", "--gating", "channel", "--position", "b"]

#: setting -> (flags, seeds), in the order the runs are trained
SETTINGS: dict[str, tuple[list[str], tuple[int, ...]]] = {
    "consensus-b-0.5": ([*CONSENSUS_B, "--target-rate", "0.5"], SEEDS),
    "random-0.5": (["--method", "random", "--target-rate", "0.5"], SEEDS),
    "l1-0.5": (["--method", "l1", "--target-rate", "0.5"], SEEDS),
    "consensus-b-0.3": ([*CONSENSUS_B, "--target-rate", "0.3"], (0,)),
    "consensus-b-0.7": ([*CONSENSUS_B, "--target-rate", "0.7"], (0,)),
    "layer-0.5": (["--method", "consensus", "--gating", "layer", "--target-rate", "0.5"], (0,)),
}
#: setting -> the setting whose run of the same seed it reads (none at present)
NEEDS: dict[str, str] = {}


def run_names() -> list[str]:
    """Every run, seeds of the first settings interleaved so that pairs finish together."""
    names = []
    for seed in SEEDS:
        names += [f"{s}-seed{seed}" for s in ("consensus-b-0.5", "random-0.5")]
    for setting, (_, seeds) in SETTINGS.items():
        names += [f"{setting}-seed{seed}" for seed in seeds if f"{setting}-seed{seed}" not in names]
    return names


def command(name: str, data_root: str, threads: int) -> list[str]:
    setting, seed = split_seed(name)
    flags = [f.format(seed=seed) for f in SETTINGS[setting][0]]
    return train_command(OUT / name, [*COMMON, "--seed", str(seed), *flags, "--quiet"], data_root, threads)


def ready(name: str) -> bool:
    setting, seed = split_seed(name)
    return setting not in NEEDS or (OUT / f"{NEEDS[setting]}-seed{seed}" / "metrics.json").is_file()


RUNS = RunSet(run_names(), lambda name: OUT / name, command, ready)

if __name__ == "__main__":
    sys.exit(RUNS.main(None, __doc__.split("\n\n")[0], ROOT))
