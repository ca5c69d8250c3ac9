"""Run training commands a few at a time, each logging to its run folder (used by the
run-set scripts in this folder). A run whose ``metrics.json`` exists is skipped; every
command passes ``--resume``, so a killed batch continues from each run's last epoch."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO


def run_all(names: Sequence[str], out_of: Callable[[str], Path], command_of: Callable[[str], list[str]],
            jobs: int = 2, ready: Callable[[str], bool] = lambda name: True) -> int:
    """Train every run in ``names`` (skipping finished ones), ``jobs`` at a time.

    ``ready(name)`` may hold a run back until others have finished (for example a control
    that reads another run's widths). Returns 0 when all succeeded, else 1."""
    todo = [n for n in names if not (out_of(n) / "metrics.json").is_file()]
    print(f"{len(names) - len(todo)} of {len(names)} runs already finished; training {todo}", flush=True)
    running: dict[str, tuple[subprocess.Popen, IO]] = {}
    failed: list[str] = []
    while todo or running:
        startable = [n for n in todo if ready(n)]
        while startable and len(running) < jobs:
            name = startable.pop(0)
            todo.remove(name)
            out_of(name).mkdir(parents=True, exist_ok=True)
            log = open(out_of(name) / "train.log", "a")  # noqa: SIM115  (closed when the run exits)
            print(f"{time.strftime('%H:%M:%S')} start {name}", flush=True)
            running[name] = (subprocess.Popen(command_of(name), stdout=log, stderr=log), log)
        if not running and todo:
            print(f"cannot start {todo}: what they wait for failed", file=sys.stderr)
            failed += todo
            break
        time.sleep(5)
        for name, (proc, log) in list(running.items()):
            if proc.poll() is not None:
                log.close()
                del running[name]
                print(f"{time.strftime('%H:%M:%S')} {name} exited with {proc.returncode}", flush=True)
                if proc.returncode:
                    failed.append(name)
    if failed:
        print(f"failed: {failed}; see each run's train.log", file=sys.stderr)
    return 1 if failed else 0
