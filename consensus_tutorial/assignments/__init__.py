"""Course assignments built on the package, with automatic checks.

The notebooks live in ``assignments/solutions/`` of the repository (the teacher's
versions, with the answers between ``### BEGIN SOLUTION`` and ``### END SOLUTION``);
this subpackage holds what they and a grader need:

* the checks (:mod:`.checks`): ``check_binarize``, ``check_binarize_clipped``,
  ``check_polarizer``, ``check_sparsity_penalty``, ``check_toy_polarization``,
  ``check_extraction``, ``check_study_results``, ``check_study_choice``,
  ``check_study_plot`` (or ``check_study`` for all three), ``check_latency_study``. Each prints
  ``CHECK <name>: PASS`` and returns a :class:`CheckResult`, or prints
  ``CHECK <name>: FAIL ...`` and raises :class:`AssignmentCheckError`;
* :class:`ToyBlock`, the small residual block of assignment 3;
* the release step (:func:`release`): student notebooks with the answers cut out;
* the batch grader (:func:`grade`, :func:`format_table`, :func:`write_csv`);
* :data:`ASSIGNMENTS`, the list of assignments and their checks.

Command line::

    python -m consensus_tutorial.assignments release assignments/solutions release/
    python -m consensus_tutorial.assignments grade submissions/ --csv scores.csv
    python -m consensus_tutorial.assignments list
"""

from .checks import (
    RESULTS_ENV,
    AssignmentCheckError,
    CheckResult,
    check_binarize,
    check_binarize_clipped,
    check_extraction,
    check_latency_study,
    check_polarizer,
    check_sparsity_penalty,
    check_study,
    check_study_choice,
    check_study_plot,
    check_study_results,
    check_toy_polarization,
)
from .grading import NotebookGrade, format_table, grade, write_csv
from .registry import ASSIGNMENTS, Assignment
from .release import release, strip_solutions, student_notebook
from .toyblock import ToyBlock

__all__ = [
    "ASSIGNMENTS",
    "RESULTS_ENV",
    "Assignment",
    "AssignmentCheckError",
    "CheckResult",
    "NotebookGrade",
    "ToyBlock",
    "check_binarize",
    "check_binarize_clipped",
    "check_extraction",
    "check_latency_study",
    "check_polarizer",
    "check_sparsity_penalty",
    "check_study",
    "check_study_choice",
    "check_study_plot",
    "check_study_results",
    "check_toy_polarization",
    "format_table",
    "grade",
    "release",
    "strip_solutions",
    "student_notebook",
    "write_csv",
]
