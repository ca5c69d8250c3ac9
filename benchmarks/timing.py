"""Helpers shared by the benchmarks: the timing options, loading a recorded run's extracted
network with its dense counterpart, the ABBA-interleaved measurement of the two, and
training whole runs through the command line (for the benchmarks that time runs)."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

import consensus_tutorial as ct
from consensus_tutorial.data import data_root
from consensus_tutorial.training import select_device

ROOT = Path(__file__).resolve().parents[1]


def add_timing_args(p: argparse.ArgumentParser, batch_sizes: list[int]) -> None:
    """Add --batch-sizes, --rounds, --repeats, --warmup, --device, --threads and --clock."""
    p.add_argument("--batch-sizes", nargs="+", type=int, default=batch_sizes)
    p.add_argument("--rounds", type=int, default=4, help="alternations of dense and extracted per batch size")
    p.add_argument("--repeats", type=int, default=5, help="timed passes per model per round")
    p.add_argument("--warmup", type=int, default=3, help="untimed passes per model before timing")
    p.add_argument("--device", default="cpu", help="cpu, cuda, mps or auto")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads; None leaves torch's own choice")
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                   help="wall: elapsed time; cpu: the process's CPU time (with --threads 1 the same work, far "
                        "less disturbed by other jobs on the machine)")


def check_timing_args(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Stop with a usage error when the timing options are out of range."""
    if min(args.batch_sizes) < 1 or args.rounds < 1 or args.repeats < 1 or args.warmup < 0:
        p.error("batch sizes, --rounds and --repeats must be >= 1, --warmup >= 0")


def timing_device(args: argparse.Namespace) -> torch.device:
    """Apply --threads and return the device that --device names."""
    if args.threads:
        torch.set_num_threads(args.threads)
    return select_device(args.device)


def load_run(folder: Path, device: torch.device) -> tuple[dict, ct.PrunedResNet, ct.ResNet]:
    """A run folder's ``metrics.json``, its extracted network loaded from ``subnetwork.pt``
    alone, and a freshly built dense network of the run's architecture; both in eval mode
    on ``device``."""
    metrics = json.loads((folder / "metrics.json").read_text())
    subnet = ct.load_subnetwork(folder / "subnetwork.pt", map_location=device).eval()
    dense = ct.build_model(metrics["config"]["arch"], subnet.spec["num_classes"]).to(device).eval()
    return metrics, subnet, dense


def paired_latency(dense, subnet, batch: int, input_shape, device, rounds: int, repeats: int,
                   warmup: int, clock: str = "wall") -> tuple[float, float]:
    """Latency (seconds) of dense and extracted: the median over ``rounds`` of
    ``ct.measure_latency`` (itself the median of ``repeats`` passes), rounds in ABBA order."""
    size = (batch, *input_shape)
    times = {"dense": [], "sub": []}
    models = {"dense": dense, "sub": subnet}
    for name, m in models.items():  # untimed warm-up of both first
        ct.measure_latency(m, size, repeats=1, warmup=warmup, device=device, clock=clock)
    for r in range(rounds):
        for name in (("dense", "sub") if r % 2 == 0 else ("sub", "dense")):
            times[name].append(ct.measure_latency(models[name], size, repeats=repeats, warmup=0, device=device,
                                                   clock=clock))
    return statistics.median(times["dense"]), statistics.median(times["sub"])


def add_run_args(p: argparse.ArgumentParser, epochs: int) -> None:
    """The data and schedule of benchmarks that train whole runs through the command line."""
    p.add_argument("--data-root", default=str(data_root() / "cifar10"), help="CIFAR-10 folder")
    p.add_argument("--limit-train", type=int, default=4096)
    p.add_argument("--epochs", type=int, default=epochs)
    p.add_argument("--batch-size", type=int, default=128, help="the (global) batch")
    p.add_argument("--json", type=Path, default=None, help="also write the result and the machine here")
    p.add_argument("--no-verify-checksums", dest="verify_checksums", action="store_false",
                   help="train on CIFAR files whose md5 sums are not the published ones (generated test data)")


def _train_command(args: argparse.Namespace, out: Path, flags: list[str], processes: int,
                   threads: int) -> tuple[list[str], dict[str, str]]:
    """The command line and environment of one training run (see :func:`train_history`)."""
    command = ["train", "--data-root", args.data_root, "--epochs", str(args.epochs), "--limit-train",
               str(args.limit_train), "--limit-test", "500", "--batch-size", str(args.batch_size),
               "--threads", str(threads), "--quiet", "--out", str(out), *flags]
    if not getattr(args, "verify_checksums", True):
        command.append("--no-verify-checksums")
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(ROOT)}
    return [*(launcher if processes > 1 else [sys.executable]), "-m", "consensus_tutorial", *command], env


def _history(out: Path, done: subprocess.CompletedProcess | subprocess.Popen, stderr: str) -> list[dict]:
    if done.returncode != 0:
        raise SystemExit(f"the training run for {out.name} failed:\n{stderr[-3000:]}")
    return json.loads((out / "history.json").read_text())


def train_history(args: argparse.Namespace, out: Path, flags: list[str], processes: int = 1,
                  threads: int = 1) -> list[dict]:
    """Train one run (``python -m consensus_tutorial train``, under torchrun with ``processes``
    > 1) with the data and schedule of ``args`` plus ``flags``; return its ``history.json``."""
    command, env = _train_command(args, out, flags, processes, threads)
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    return _history(out, done, done.stderr)


def train_side_by_side(args: argparse.Namespace, runs: dict[str, tuple[Path, list[str]]],
                       threads: int = 1) -> dict[str, list[dict]]:
    """Train the ``runs`` {name: (out folder, flags)} at the same time, one process each with
    ``threads`` threads (on a machine with a core per run, whatever disturbs the machine
    disturbs all of them alike); return {name: history}."""
    procs, logs = {}, {}
    for name, (out, flags) in runs.items():
        command, env = _train_command(args, out, flags, 1, threads)
        logs[name] = tempfile.TemporaryFile(mode="w+")  # not a pipe: a full pipe would stall the run
        procs[name] = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=logs[name],
                                       text=True)
    histories = {}
    for name, proc in procs.items():
        proc.wait()
        logs[name].seek(0)
        histories[name] = _history(runs[name][0], proc, logs[name].read())
        logs[name].close()
    return histories


def add_pair_args(p: argparse.ArgumentParser, pairs: int) -> None:
    """--threads, --pairs, --side-by-side and --clock of the benchmarks that time pairs of runs."""
    p.add_argument("--threads", type=int, default=2, help="torch threads per run")
    p.add_argument("--pairs", type=int, default=pairs, help="pairs of runs (ABBA order, or side by side)")
    p.add_argument("--side-by-side", action="store_true",
                   help="train the two runs of a pair at the same time (use --threads 1 on a 2-core "
                        "machine): a change of the machine's load then hits both alike")
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                   help="sum the epochs' wall seconds, or the processes' CPU seconds (history's cpu_seconds)")


def train_pairs(args: argparse.Namespace, folder: Path, flags: dict[str, list[str]]) -> dict[str, list[list[dict]]]:
    """``args.pairs`` pairs of runs, one run of each of the two ``flags`` {name: flags} per
    pair, side by side (``args.side_by_side``) or one after the other in ABBA order; returns
    {name: [history of each run]}."""
    first, second = flags
    histories: dict[str, list[list[dict]]] = {name: [] for name in flags}
    for pair in range(args.pairs):
        runs = {name: (folder / f"{pair}-{name}", flags[name]) for name in flags}
        if args.side_by_side:
            for name, history in train_side_by_side(args, runs, threads=args.threads).items():
                histories[name].append(history)
            continue
        for name in ((first, second) if pair % 2 == 0 else (second, first)):
            histories[name].append(train_history(args, runs[name][0], runs[name][1], threads=args.threads))
    return histories
