"""Sets of training runs: train many ``python -m consensus_tutorial train`` commands a few
at a time (the scripts that make the results chapter's run sets), and read them back.

A run set names its runs and gives, for each name, its output folder and its command. A
run whose ``metrics.json`` exists is skipped; the commands pass ``--resume``, so a killed
set continues from each run's last finished epoch. Each run logs to ``train.log`` in its
folder. Run names of repeated settings end in ``-seed<k>``.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO


@dataclass
class RunSet:
    """``names`` in training order; ``folder(name)`` and ``command(name, data_root,
    threads)``; ``ready(name)`` may hold a run back until others have finished (a control
    that reads another run's widths)."""

    names: Sequence[str]
    folder: Callable[[str], Path]
    command: Callable[[str, str, int], list[str]]
    ready: Callable[[str], bool] = lambda name: True

    def train(self, names: Sequence[str], data_root: str, threads: int = 1, jobs: int = 2) -> int:
        """Train the unfinished runs of ``names``, ``jobs`` at a time; 0 when all succeeded."""
        todo = [n for n in names if not (self.folder(n) / "metrics.json").is_file()]
        print(f"{len(names) - len(todo)} of {len(names)} runs already finished; training {todo}", flush=True)
        running: dict[str, tuple[subprocess.Popen, IO]] = {}
        failed: list[str] = []
        while todo or running:
            for name in [n for n in todo if self.ready(n)][: max(0, jobs - len(running))]:
                todo.remove(name)
                running[name] = self._start(name, data_root, threads)
            if not running and todo:
                print(f"cannot start {todo}: the runs they read failed", file=sys.stderr)
                failed += todo
                break
            time.sleep(5)
            for name, (proc, log) in list(running.items()):
                if proc.poll() is not None:
                    log.close()
                    del running[name]
                    print(f"{time.strftime('%H:%M:%S')} {name} exited with {proc.returncode}", flush=True)
                    failed += [name] if proc.returncode else []
        if failed:
            print(f"failed: {failed}; see each run's train.log", file=sys.stderr)
        return 1 if failed else 0

    def _start(self, name: str, data_root: str, threads: int) -> tuple[subprocess.Popen, IO]:
        self.folder(name).mkdir(parents=True, exist_ok=True)
        log = open(self.folder(name) / "train.log", "a")  # noqa: SIM115  (closed when the run exits)
        print(f"{time.strftime('%H:%M:%S')} start {name}", flush=True)
        return subprocess.Popen(self.command(name, data_root, threads), stdout=log, stderr=log), log

    def main(self, argv: Sequence[str] | None, description: str, root: Path) -> int:
        """The command line of a run-set script: run names (default all), ``--data-root``,
        ``--jobs``, ``--threads``, ``--list``. Paths are relative to ``root``."""
        parser = argparse.ArgumentParser(description=description)
        parser.add_argument("names", nargs="*", help="runs to train (default: all; see --list)")
        parser.add_argument("--data-root", default="../shared/data/cifar10",
                            help="CIFAR-10 folder (packs or official layout), relative to the repository root")
        parser.add_argument("--jobs", type=int, default=2, help="runs trained at the same time")
        parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
        parser.add_argument("--list", action="store_true", help="print the commands and stop")
        args = parser.parse_args(argv)
        os.chdir(root)
        unknown = sorted(set(args.names) - set(self.names))
        if unknown:
            parser.error(f"unknown run(s) {unknown}; known: {', '.join(self.names)}")
        names = args.names or list(self.names)
        if args.list:
            for name in names:
                print(shlex.join(["python", *self.command(name, args.data_root, args.threads)[1:]]))
            return 0
        return self.train(names, args.data_root, args.threads, args.jobs)


def train_command(out: Path, flags: Sequence[str], data_root: str, threads: int) -> list[str]:
    """``python -m consensus_tutorial train FLAGS --data-root .. --threads .. --out OUT --resume``."""
    return [sys.executable, "-m", "consensus_tutorial", "train", *flags, "--data-root", data_root,
            "--threads", str(threads), "--out", str(out), "--resume"]


def split_seed(name: str) -> tuple[str, int]:
    """``"random-0.5-seed2"`` -> ``("random-0.5", 2)``."""
    setting, seed = name.rsplit("-seed", 1)
    return setting, int(seed)


def load_seed_runs(folder: Path) -> dict[str, list[dict]]:
    """{setting: [metrics.json of each finished seed, in seed order]} of ``folder/<setting>-seed<k>``."""
    runs: dict[str, list[tuple[int, dict]]] = defaultdict(list)
    for path in sorted(Path(folder).glob("*-seed*/metrics.json")):
        setting, seed = split_seed(path.parent.name)
        runs[setting].append((seed, json.loads(path.read_text())))
    return {s: [m for _, m in sorted(r, key=lambda t: t[0])] for s, r in runs.items()}
