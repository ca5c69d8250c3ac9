"""Machine description and JSON output of the benchmark scripts (both from the package's
``io`` module, re-exported here for the scripts), and the two lines every benchmark
records: the machine it ran on and the command that ran it."""

import sys
from pathlib import Path

from consensus_tutorial.io import atomic_json as write_json
from consensus_tutorial.io import machine_info

__all__ = ["command_line", "machine_info", "machine_line", "write_json"]


def machine_line(info: dict[str, str]) -> str:
    """``machine: cpu ...; cores ...``: the line every benchmark prints under its title."""
    return "machine: " + "; ".join(f"{k} {v}" for k, v in info.items())


def command_line(script: str, argv: list[str] | None) -> str:
    """``python benchmarks/SCRIPT ARGS``, the command a benchmark records in its JSON
    (``argv``: the arguments ``main`` was given; None: the command line's)."""
    return f"python benchmarks/{Path(script).name} " + " ".join(sys.argv[1:] if argv is None else argv)
