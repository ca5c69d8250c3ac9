"""Training overhead of one-pass gated training over dense training, measured side by side.

What it measures: seconds per training epoch of

* **dense**: the plain ResNet, cross-entropy only (``method="dense"``);
* **gated**: the same ResNet with channel gates at position (b), dynamic gates and the
  full one-pass objective (cross-entropy + sparsity penalty + polarizer, gates on their
  own Adam), i.e. the package's default ``method="consensus"``;

same architecture, same training images (in the same order and augmentation), same batch
size, in one process. Both go through the package's own loop,
:func:`consensus_tutorial.training.fit`, one epoch per call, and the two are interleaved
in ABBA order (dense, gated, gated, dense, dense, gated, ...) after one untimed warm-up
epoch each, so that a change in machine load hits both; the medians are compared.

Two times are reported per epoch: the training pass alone (every batch: augmentation,
forward, loss, backward, optimizer steps; wall seconds, and on the CPU also the process's
CPU seconds, which other jobs on the machine disturb less), and the epoch as ``fit`` records it (the
training pass plus its per-epoch evaluation on the ``--limit-test`` test images, which
for the gated model also counts consensus disagreements and predicts the FLOPs of the
current masks). Gated training still computes every convolution at full width (the
gates multiply, they do not skip), so the overhead is the gate modules, the regularizers
and the bookkeeping; the savings come after extraction.

Run (from the repository root; the real CIFAR-10 data, a few minutes on a 2-core CPU):

    .venv/bin/python benchmarks/training_overhead.py --threads 1
    # on a machine shared with other jobs: shorter epochs, more rounds
    .venv/bin/python benchmarks/training_overhead.py --threads 1 --limit-train 1280 --epochs 8
    .venv/bin/python benchmarks/training_overhead.py --arch resnet56 --limit-train 50000 --device cuda

Data: ``--data-root`` (default: the package's data folder, ``$CONSENSUS_TUTORIAL_DATA`` or
else ``~/.cache/consensus-tutorial/data``; ``make`` points the variable at ``../shared/data``
when that folder exists) holding CIFAR-10 as the official layout or the JPEG packs.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from machine import command_line, machine_info, machine_line, write_json
from tqdm.auto import tqdm

import consensus_tutorial as ct
from consensus_tutorial.data import BatchLoader, data_root, load_dataset
from consensus_tutorial.training import TrainConfig, build_for, fit, select_device



def default_root() -> str:
    return str(data_root())



class TimedLoader:
    """Wraps a :class:`BatchLoader` and records how long each full pass over it took,
    from the first batch requested to the request that finds no more (by then ``fit``
    has finished the last batch's step; its ``loss.item()`` synchronises a GPU): wall
    seconds and CPU seconds of this process (all its threads)."""

    def __init__(self, loader: BatchLoader):
        self.loader = loader
        self.passes: list[tuple[float, float]] = []

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        wall, cpu = time.perf_counter(), time.process_time()
        yield from self.loader
        self.passes.append((time.perf_counter() - wall, time.process_time() - cpu))

    def state_dict(self):
        return self.loader.state_dict()

    def load_state_dict(self, state):
        self.loader.load_state_dict(state)


class Runner:
    """One model with its loaders; :meth:`epoch` trains it for one more epoch through ``fit``."""

    def __init__(self, name: str, config: TrainConfig, train, test, device: torch.device):
        self.name, self.config = name, config
        channels_last = device.type == "cuda"
        torch.manual_seed(config.seed)
        self.model = build_for(config).to(device)
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.train = TimedLoader(BatchLoader(train, config.batch_size, train=True, device=device,
                                             seed=config.seed, channels_last=channels_last))
        self.test = BatchLoader(test, 500, train=False, device=device, channels_last=channels_last)
        self.train_s: list[float] = []
        self.train_cpu_s: list[float] = []
        self.epoch_s: list[float] = []

    def epoch(self, record: bool = True) -> None:
        history = fit(self.model, self.train, self.test, self.config, progress=False).history
        if record:
            wall, cpu = self.train.passes[-1]
            self.train_s.append(wall)
            self.train_cpu_s.append(cpu)
            self.epoch_s.append(history[-1]["seconds"])


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--arch", default="resnet20", choices=[a for a in ct.models.ARCHS if a != "resnet18"],
                   help="CIFAR ResNet to train")
    p.add_argument("--epochs", type=int, default=3,
                   help="timed epochs per mode (plus one untimed warm-up epoch each), interleaved ABBA")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--limit-train", type=int, default=5000, help="class-balanced subset of CIFAR-10 train images")
    p.add_argument("--limit-test", type=int, default=1000,
                   help="test images of fit's per-epoch evaluation (counted in the 'whole epoch' column only)")
    p.add_argument("--data-root", default=default_root(), help="folder with CIFAR-10")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, mps")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads; None leaves torch's own choice")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None, help="also write the timings and the machine to this JSON file")
    args = p.parse_args(argv)
    if args.epochs < 1 or args.limit_train < args.batch_size:
        p.error("--epochs must be >= 1 and --limit-train at least one batch")
    return args


def _row(name: str, values: list[float], cpu: list[float] | None = None) -> str:
    cpu_cell = f"{statistics.median(cpu):.2f}" if cpu else "-"
    return (f"| {name} | {len(values)} | {statistics.median(values):.2f} | {min(values):.2f} | "
            f"{max(values):.2f} | {cpu_cell} |")


def print_ratios(dense: Runner, gated: Runner, device: torch.device) -> float:
    """Print the gated / dense ratios; return the median of the per-round wall ratios."""

    def ratio(g: list[float], d: list[float]) -> str:
        return f"{statistics.median(g) / statistics.median(d):.3f}"

    paired = statistics.median(g / d for g, d in zip(gated.train_s, dense.train_s))
    print("gated / dense:")
    print(f"  training pass, wall, median of the per-round ratios (each round's two epochs ran "
          f"back to back): {paired:.3f}")
    print(f"  training pass, wall, ratio of the medians: {ratio(gated.train_s, dense.train_s)}")
    print(f"  training pass, wall, ratio of the fastest epochs (least disturbed by other jobs): "
          f"{min(gated.train_s) / min(dense.train_s):.3f}")
    if device.type == "cpu":
        print(f"  training pass, CPU time of the process, ratio of the medians: "
              f"{ratio(gated.train_cpu_s, dense.train_cpu_s)}")
    print(f"  whole epoch as fit records it (incl. its per-epoch test eval), wall, ratio of the medians: "
          f"{ratio(gated.epoch_s, dense.epoch_s)}")
    return paired


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = select_device(args.device)
    common = dict(dataset="cifar10", arch=args.arch, batch_size=args.batch_size, epochs=1, seed=args.seed,
                  device=str(device), threads=args.threads, data_root=args.data_root)
    dense_cfg = TrainConfig(method="dense", **common).validate()
    gated_cfg = TrainConfig(method="consensus", gating="channel", position="b", gate="dynamic", settle="live",
                            **common).validate()

    print(f"loading CIFAR-10 from {args.data_root} ...", file=sys.stderr)
    train = load_dataset("cifar10", args.data_root, "train", limit=args.limit_train, seed=args.seed)
    test = load_dataset("cifar10", args.data_root, "test", limit=args.limit_test, seed=args.seed)
    dense = Runner("dense", dense_cfg, train, test, device)
    gated = Runner("gated", gated_cfg, train, test, device)

    order = []
    for i in range(args.epochs):  # ABBA: D G G D D G ...
        order += [dense, gated] if i % 2 == 0 else [gated, dense]
    with tqdm(total=2 + len(order), desc="epochs", file=sys.stderr) as bar:
        for runner in (dense, gated):  # warm-up: allocator, caches, one-time set-up
            runner.epoch(record=False)
            bar.update()
        for runner in order:
            bar.set_postfix(mode=runner.name)
            runner.epoch()
            bar.update()

    info = machine_info(device)
    gates = ct.gate_modules(gated.model)
    print()
    print(f"Training overhead: {args.arch}, CIFAR-10, {len(train)} train images "
          f"({len(dense.train)} batches of {args.batch_size}), {len(test)} test images for fit's per-epoch eval")
    print(f"gated = channel gates at (b), dynamic K=1, {len(gates)} gates / "
          f"{sum(g.units for g in gates.values())} channels, full objective (target rate {gated_cfg.target_rate})")
    print(machine_line(info))
    print()
    print("| mode | epochs timed | median wall s | min wall s | max wall s | median CPU s |")
    print("|---|---|---|---|---|---|")
    print(_row("dense, training pass", dense.train_s, dense.train_cpu_s))
    print(_row("gated, training pass", gated.train_s, gated.train_cpu_s))
    print(_row("dense, whole epoch (fit)", dense.epoch_s))
    print(_row("gated, whole epoch (fit)", gated.epoch_s))
    print()

    paired = print_ratios(dense, gated, device)
    if args.json:
        write_json(args.json, {
            "what": "seconds per training epoch, dense vs gated (channel gates at b, full objective), ABBA order",
            "command": command_line(__file__, argv),
            "machine": info, "arch": args.arch, "train_images": len(train), "test_images": len(test),
            "batch_size": args.batch_size,
            "dense": {"train_s": dense.train_s, "train_cpu_s": dense.train_cpu_s, "epoch_s": dense.epoch_s},
            "gated": {"train_s": gated.train_s, "train_cpu_s": gated.train_cpu_s, "epoch_s": gated.epoch_s},
            "ratio_train_wall_paired": paired,
        })
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
