"""Does a latency-aware run land on the latency it asks for?

What it measures: one training run with the latency-aware target (``--cost latency
--latency-table TABLE --target-rate T --allocation global``), then its extracted network
against the dense network of the same architecture, timed in the conditions the table
was measured in (its batch size, clock and thread count; eager mode, eval mode), in ABBA
rounds. The run asks for ``(1 - T)`` of the dense latency; the script prints what the
table predicts for the extracted network's widths, what the clock says, and the measured
latency against the asked one (``measured / asked - 1``). One process's latency ratio at
a large batch can be off by more than 5% on a shared machine: keep the run and time it
again in fresh processes with ``benchmarks/latency_repeatability.py``.

Run (from the repository root; about a minute on a 2-core CPU, and under a minute for
five repeats)::

    .venv/bin/python benchmarks/latency_target.py --data-root ../shared/data/cifar10 \\
        --latency-table results/benchmarks/latency_table_resnet20_fine.json --keep-run runs/latency-seed0
    .venv/bin/python benchmarks/latency_repeatability.py --runs runs/latency-seed0 --processes 5 \\
        --batch-sizes 64 --threads 1 --clock cpu
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch
from machine import command_line, machine_info, machine_line, write_json
from timing import add_run_args, load_run, paired_latency, train_history

import consensus_tutorial as ct
from consensus_tutorial.costs import latency_cost, load_latency_table

ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_run_args(p, epochs=3)
    p.add_argument("--latency-table", type=Path, default=ROOT / "results/benchmarks/latency_table_resnet20_fine.json",
                   help="a table written by benchmarks/latency_table.py on this machine")
    p.add_argument("--target-rate", type=float, default=0.2, help="the share of the measured latency to remove")
    p.add_argument("--seed", type=int, default=0, help="the training run's seed")
    p.add_argument("--keep-run", type=Path, default=None,
                   help="train into this (new) folder and keep it, e.g. to time it again in fresh processes with "
                        "benchmarks/latency_repeatability.py --runs FOLDER")
    p.add_argument("--train-threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=6, help="ABBA rounds of the latency measurement")
    p.add_argument("--repeats", type=int, default=10, help="timed passes per model per round")
    args = p.parse_args(argv)
    if not 0.0 < args.target_rate < 1.0:
        p.error("--target-rate must lie in (0, 1)")
    return args


def table_conditions(table: dict) -> tuple[int, str, int | None]:
    """The batch size, clock and torch thread count a latency table was measured with."""
    threads = table.get("machine", {}).get("torch threads")
    return int(table["batch_size"]), str(table.get("clock", "wall")), int(threads) if threads else None


def train_and_time(args: argparse.Namespace, table: dict) -> dict:
    """Train the latency-aware run; time its extracted network against the dense one in
    the table's conditions; return the numbers."""
    batch, clock, threads = table_conditions(table)
    with tempfile.TemporaryDirectory() as tmp:
        out = args.keep_run or Path(tmp) / "latency-run"
        train_history(args, out, ["--cost", "latency", "--latency-table", str(args.latency_table.resolve()),
                                  "--target-rate", str(args.target_rate), "--allocation", "global",
                                  "--seed", str(args.seed)],
                      threads=args.train_threads)
        if threads:
            torch.set_num_threads(threads)
        device = torch.device("cpu")
        metrics, subnet, dense = load_run(out, device)
    gated = ct.build_model(metrics["config"]["arch"], subnet.spec["num_classes"], gating="channel", position="b",
                           gate="static")
    masks = {n: torch.arange(g.units) < metrics["kept_units"][n] for n, g in ct.gate_modules(gated).items()}
    cost = latency_cost(gated, table)
    t_dense, t_sub = paired_latency(dense, subnet, batch, tuple(subnet.spec["input_shape"]), device,
                                    args.rounds, args.repeats, warmup=3, clock=clock)
    return {"batch": batch, "clock": clock, "threads": threads, "metrics": metrics,
            "table_dense_ms": cost.dense(gated), "predicted_share": cost.total(masks) / cost.dense(gated),
            "dense_s": t_dense, "extracted_s": t_sub, "asked_s": (1.0 - args.target_rate) * t_dense}


def main(argv=None) -> int:
    args = parse_args(argv)
    table = load_latency_table(args.latency_table)
    r = train_and_time(args, table)
    metrics, measured, error = r["metrics"], r["extracted_s"] / r["dense_s"], r["extracted_s"] / r["asked_s"] - 1
    info = machine_info("cpu")
    print(f"Latency-aware target {args.target_rate} (asks for {1 - args.target_rate:.2f} of the dense latency); "
          f"table {args.latency_table.name}; batch {r['batch']}, {r['clock']} clock, {r['threads'] or 'default'} "
          "thread(s), eager mode")
    print(machine_line(info))
    print(f"kept widths: {list(metrics['kept_units'].values())}; FLOPs removed {metrics['pruning_rate_flops']:.3f}; "
          f"top-1 {metrics['top1_extracted']:.2f} ({args.epochs} epochs on {args.limit_train} images)")
    print(f"dense {1e3 * r['dense_s']:.2f} ms (table {r['table_dense_ms']:.2f} ms); extracted "
          f"{1e3 * r['extracted_s']:.2f} ms; asked {1e3 * r['asked_s']:.2f} ms")
    print(f"latency kept: table predicts {r['predicted_share']:.3f}, measured {measured:.3f}, asked "
          f"{1 - args.target_rate:.3f}; measured / asked - 1 = {error:+.3f}")
    if args.json:
        write_json(args.json, {
            "what": "latency-aware target: measured latency of the extracted network against the asked latency",
            "command": command_line(__file__, argv),
            "machine": info, "table": str(args.latency_table), "target_rate": args.target_rate, "seed": args.seed,
            "kept_units": metrics["kept_units"], "pruning_rate_flops": metrics["pruning_rate_flops"],
            **{k: r[k] for k in ("dense_s", "extracted_s", "asked_s", "predicted_share", "table_dense_ms")},
            "measured_share": measured, "relative_error": error})
    return 0


if __name__ == "__main__":
    sys.exit(main())
