"""Re-evaluate and time the extracted networks of a results folder, from their files alone.

What it does, for every run folder under ``--results`` (default
``results/cifar10-resnet20``) that holds a ``subnetwork.pt``:

* loads ``subnetwork.pt`` alone with ``ct.load_subnetwork`` (no gated model, no
  checkpoint) and counts its FLOPs (``ct.count_flops``);
* with ``--data-root``, evaluates it on the whole test set found there and compares the
  top-1 with the ``top1_extracted`` that the run recorded in ``metrics.json``;
* times it against the plain dense ResNet of the same architecture, side by side in one
  process: for each batch size of ``--batch-sizes``, ``--rounds`` alternations in ABBA
  order (dense, extracted, extracted, dense, ...) of ``ct.measure_latency`` medians of
  ``--repeats`` passes; reported are the medians over the rounds and their ratio.

It writes everything to ``measured.json`` in the results folder (with the machine it ran
on), which ``results/report.py`` turns into the latency figure and table of the results
chapter, and prints a table. It exits with status 1 if a re-evaluated top-1 differs from
the recorded one.

Run (from the repository root; about 4 minutes for 11 runs on an idle 2-core CPU):

    .venv/bin/python benchmarks/results_check.py --data-root ../shared/data/cifar10 --threads 1
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

from machine import command_line, machine_info, write_json
from timing import add_timing_args, check_timing_args, load_run, paired_latency, timing_device
from tqdm.auto import tqdm

import consensus_tutorial as ct
from consensus_tutorial.data import BatchLoader, load_dataset
from consensus_tutorial.training import evaluate


def run_folders(results: Path) -> list[Path]:
    """Run folders under ``results`` (those holding a ``subnetwork.pt``), sorted by name."""
    return sorted(p.parent for p in results.glob("*/subnetwork.pt"))


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--results", type=Path, default=Path("results/cifar10-resnet20"), help="folder of run folders")
    p.add_argument("--data-root", default=None,
                   help="folder with the test set; without it the accuracy is not re-evaluated")
    add_timing_args(p, batch_sizes=[1, 128])
    args = p.parse_args(argv)
    check_timing_args(p, args)
    if not run_folders(args.results):
        p.error(f"no run folder with a subnetwork.pt under {args.results}; train the runs first "
                "(results/run_cifar10_resnet20.py).")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    device = timing_device(args)
    runs: dict[str, dict] = {}
    mismatches = []
    test_sets: dict[str, ct.data.ImageSet] = {}
    for folder in tqdm(run_folders(args.results), desc="runs", file=sys.stderr):
        metrics, subnet, dense = load_run(folder, device)
        config = metrics["config"]
        row = {"flops": ct.count_flops(subnet), "flops_dense": ct.count_flops(dense),
               "recorded_top1_extracted": metrics["top1_extracted"]}
        if args.data_root:
            if config["dataset"] not in test_sets:
                test_sets[config["dataset"]] = load_dataset(config["dataset"], args.data_root, "test",
                                                            limit=config.get("limit_test"), seed=config["seed"])
            test = test_sets[config["dataset"]]
            top1 = evaluate(subnet, BatchLoader(test, 500, train=False, device=device))["top1"]
            row["top1_extracted"] = round(top1, 2)
            row["test_images"] = len(test)
            if row["top1_extracted"] != metrics["top1_extracted"]:
                mismatches.append(folder.name)
        for b in args.batch_sizes:
            d, s = paired_latency(dense, subnet, b, dense.input_shape, device, args.rounds, args.repeats,
                                  args.warmup, args.clock)
            row[f"latency_dense_b{b}_s"], row[f"latency_b{b}_s"] = d, s
            row[f"latency_ratio_b{b}"] = round(s / d, 4)
        runs[folder.name] = row

    out = {
        "what": "extracted networks re-loaded from subnetwork.pt alone: FLOPs, re-evaluated top-1 and "
                "latency against the dense network, measured side by side (benchmarks/results_check.py)",
        "command": command_line(__file__, argv),
        "machine": machine_info(device),
        "timing": {"batch_sizes": args.batch_sizes, "clock": args.clock, "rounds": args.rounds, "repeats": args.repeats,
                   "order": "ABBA interleaved, median over rounds of ct.measure_latency medians"},
        "runs": runs,
    }
    path = args.results / "measured.json"
    write_json(path, out)

    head = ["run", "FLOPs ratio", "recorded top-1", "re-evaluated top-1"]
    head += [f"latency ratio (batch {b})" for b in args.batch_sizes]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for name, r in runs.items():
        cells = [name, f"{r['flops'] / r['flops_dense']:.3f}", f"{r['recorded_top1_extracted']:.2f}",
                 f"{r['top1_extracted']:.2f}" if "top1_extracted" in r else "-"]
        cells += [f"{r[f'latency_ratio_b{b}']:.3f}" for b in args.batch_sizes]
        print("| " + " | ".join(cells) + " |")
    for b in args.batch_sizes:
        dense_ms = statistics.median(1e3 * r[f"latency_dense_b{b}_s"] for r in runs.values())
        print(f"dense, batch {b}: median {dense_ms:.2f} ms per forward pass")
    print(f"wrote {path}")
    if mismatches:
        print(f"re-evaluated top-1 differs from metrics.json for {mismatches}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
