"""The course assignments: which notebook, which checks, how long, how to grade fast.

The grader reads this table to know which checks a submitted notebook must report
(a check that never reports counts as failed) and which small parameters to run it
with. A notebook names its assignment in its metadata
(``metadata["consensus_assignment"]["id"]``, kept by the release step).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

METADATA_KEY = "consensus_assignment"


@dataclass(frozen=True)
class Assignment:
    """One assignment notebook.

    Attributes:
        id: short name ("a1" ... "a5"), stored in the notebook's metadata.
        filename: the notebook's file name in ``assignments/solutions/``.
        title: what the notebook's title says.
        checks: the check names its check cells report, in order.
        minutes: the time a student needs, as told in the teachers' guide.
        grade_parameters: the papermill parameters the grader runs it with (small and
            fixed, so that a student's edits of the parameters cell do not change the cost).
        optional: open-ended work, not part of the core set.
    """

    id: str
    filename: str
    title: str
    checks: tuple[str, ...]
    minutes: str
    grade_parameters: Mapping[str, Any] = field(default_factory=dict)
    optional: bool = False


ASSIGNMENTS: tuple[Assignment, ...] = (
    Assignment(
        "a1", "01_straight_through.ipynb", "The straight-through binarizer",
        ("binarize", "binarize_clipped"), "30-45 min", {"SEED": 0},
    ),
    Assignment(
        "a2", "02_polarizer_and_sparsity.ipynb", "The polarizer and the sparsity target",
        ("polarizer", "sparsity_penalty", "toy_polarization"), "45-60 min",
        {"SEED": 0, "UNITS": 40, "STEPS": 300},
    ),
    Assignment(
        "a3", "03_gate_and_extraction.ipynb", "A gate of your own, and exact surgery",
        ("extraction_mid", "extraction_out"), "60-90 min", {"SEED": 0},
    ),
    Assignment(
        "a4", "04_flops_budget_study.ipynb", "A FLOPs budget: choosing the pruning target",
        ("study_results", "study_choice", "study_plot"), "60-90 min, plus a few minutes of CPU",
        {"SEED": 0, "LIMIT_TRAIN": 2000, "LIMIT_TEST": 1000, "EPOCHS": 2, "BATCH_SIZE": 64, "GATE_LR": 0.05,
         "BUDGET": 0.5},
    ),
    Assignment(
        "a5", "05_latency_target.ipynb", "Open-ended: a latency-aware target",
        ("latency_study",), "2-4 hours",
        {"SEED": 0, "LIMIT_TRAIN": 1000, "LIMIT_TEST": 500, "EPOCHS": 2, "BATCH_SIZE": 64},
        optional=True,
    ),
)

BY_ID: Mapping[str, Assignment] = MappingProxyType({a.id: a for a in ASSIGNMENTS})


def all_checks() -> list[str]:
    """Every check name, in assignment order (the columns of the grader's CSV)."""
    return [name for a in ASSIGNMENTS for name in a.checks]


def find_assignment(metadata: Mapping[str, Any] | None, filename: str) -> Assignment | None:
    """The assignment of a notebook: from its metadata, else from its file name
    (``01_straight_through.ipynb``, ``alice_01_straight_through.ipynb``,
    ``01_straight_through-Copy1.ipynb`` ...); None if neither says."""
    entry = (metadata or {}).get(METADATA_KEY) or {}
    if isinstance(entry, Mapping) and entry.get("id") in BY_ID:
        return BY_ID[entry["id"]]
    name = filename.lower()
    for assignment in ASSIGNMENTS:
        if assignment.filename.removesuffix(".ipynb") in name:
            return assignment
    return None
