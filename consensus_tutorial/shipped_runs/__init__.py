"""Finished runs shipped with the package, so that a reader can look at a real full-data
run without training one (chapter 6 shows one when it is not asked to train).

Each folder here is a byte-for-byte copy of a committed run folder of the repository
(``SOURCES`` names it; a test checks the copy): ``metrics.json``, ``history.json`` and
``subnetwork.pt``, as ``python -m consensus_tutorial train`` writes them::

    from consensus_tutorial import shipped_runs
    shipped_runs.names()                     # ['cifar10-resnet20-channel-b-rate0.5-10ep-seed0']
    folder = shipped_runs.folder("cifar10-resnet20-channel-b-rate0.5-10ep-seed0")
    ct.load_subnetwork(folder / "subnetwork.pt")
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

FOLDER = Path(__file__).resolve().parent

#: shipped run -> the committed run folder of the repository it copies
SOURCES: dict[str, str] = {
    "cifar10-resnet20-channel-b-rate0.5-10ep-seed0": "results/cifar10-resnet20-v2/consensus-b-0.5-seed0",
}
#: the files of a run folder that are shipped
FILES = ("metrics.json", "history.json", "subnetwork.pt")


def names() -> list[str]:
    """The names of the shipped runs."""
    return sorted(SOURCES)


def folder(name: str) -> Path:
    """The folder of a shipped run; ``ValueError`` naming the shipped runs for an unknown name."""
    if name not in SOURCES:
        raise ValueError(f"no shipped run is called {name!r}; the shipped runs are: {', '.join(names())}.")
    return FOLDER / name


def settings(name: str) -> dict[str, Any]:
    """The training settings (``TrainConfig`` fields) the shipped run was trained with."""
    return json.loads((folder(name) / "metrics.json").read_text())["config"]
