"""Batch grading: run every submitted notebook, collect its checks, print a score table.

    python -m consensus_tutorial.assignments grade SUBMISSIONS_DIR [--timeout S] [--csv FILE]

``SUBMISSIONS_DIR`` holds either one folder per student (``alice/01_straight_through.ipynb``,
the student is the folder's name) or the notebooks themselves (the student column is
then empty). Each notebook is

1. recognised by its metadata (``metadata["consensus_assignment"]["id"]``, kept by the
   release step) or, failing that, by its file name;
2. copied into a fresh working folder and run there by papermill (kernel ``python3``)
   with the assignment's small, fixed ``grade_parameters`` (plus any ``--param``), with
   ``$CONSENSUS_ASSIGNMENT_RESULTS`` naming a file that every check appends its result to;
3. scored: each check the assignment expects is PASS or FAIL as reported; one that never
   reported (the notebook stopped before it, or the student deleted it) is FAIL.

A notebook that raises stops there (papermill's behaviour): its later checks count as
failed, and the error is shown in the table; ``keep_going=True`` (``--keep-going``) runs
the remaining cells anyway, for partial credit. A crash, a timeout or a dead kernel is
a row of the table, never a crash of the grader.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nbformat

from .checks import RESULTS_ENV
from .registry import ASSIGNMENTS, Assignment, all_checks, find_assignment

LINE = re.compile(r"^CHECK (?P<name>[A-Za-z0-9_.-]+): (?P<status>PASS|FAIL)\b ?(?P<message>.*)$")


@dataclass
class NotebookGrade:
    """The score of one submitted notebook.

    Attributes:
        student: the sub-folder of the submissions folder ("" for a notebook at its top).
        file: the notebook's path relative to the submissions folder.
        assignment: the assignment's id ("a1" ...), or None if it was not recognised.
        checks: {check name: ("PASS" | "FAIL", message)} for every check the assignment expects.
        error: where and why the run stopped, if it did.
        seconds: run time.
        executed: the executed notebook, if kept.
    """

    student: str
    file: str
    assignment: str | None
    checks: dict[str, tuple[str, str]] = field(default_factory=dict)
    error: str | None = None
    seconds: float = 0.0
    executed: str | None = None

    @property
    def passed(self) -> int:
        return sum(1 for status, _ in self.checks.values() if status == "PASS")

    @property
    def total(self) -> int:
        return len(self.checks)

    def status(self, check: str) -> str:
        return self.checks.get(check, ("", ""))[0]


def read_results_file(path: str | os.PathLike) -> dict[str, tuple[str, str]]:
    """{check: (status, message)} from a JSON-lines file the checks wrote (the last record
    of a check wins); {} if the file does not exist."""
    path = Path(path)
    results: dict[str, tuple[str, str]] = {}
    if not path.is_file():
        return results
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
            results[str(record["check"])] = (str(record["status"]), str(record.get("message", "")))
        except (ValueError, KeyError, TypeError):
            continue  # a torn or foreign line does not spoil the others
    return results


def results_from_outputs(nb: nbformat.NotebookNode) -> dict[str, tuple[str, str]]:
    """{check: (status, message)} parsed from the ``CHECK <name>: PASS|FAIL`` lines that the
    checks print (the fallback when no results file was written)."""
    results: dict[str, tuple[str, str]] = {}
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            if output.get("output_type") != "stream":
                continue
            for line in str(output.get("text", "")).splitlines():
                match = LINE.match(line.strip())
                if match:
                    results[match["name"]] = (match["status"], match["message"])
    return results


def _describe_error(error: BaseException) -> str:
    ename = getattr(error, "ename", None)
    if ename is not None:  # papermill.PapermillExecutionError
        evalue = str(getattr(error, "evalue", "")).strip().splitlines()
        first = evalue[0] if evalue else ""
        count = getattr(error, "exec_count", None)
        text = f"{ename}: {first}" + (f" (cell [{count}])" if count is not None else "")
    else:
        lines = str(error).strip().splitlines()
        text = f"{type(error).__name__}: {lines[0] if lines else ''}"
    return text[:300]


def first_error(nb: nbformat.NotebookNode) -> str | None:
    """``ename: evalue (cell [n])`` of the first cell that raised, with how many others did; None if none did."""
    errors = []
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                lines = str(output.get("evalue", "")).strip().splitlines()
                count = cell.get("execution_count")
                errors.append(f"{output.get('ename')}: {lines[0] if lines else ''}"
                              + (f" (cell [{count}])" if count is not None else ""))
                break
    if not errors:
        return None
    more = f"; {len(errors) - 1} more cells raised" if len(errors) > 1 else ""
    return errors[0][:300] + more


def _student_and_file(path: Path, root: Path) -> tuple[str, str]:
    relative = path.relative_to(root)
    student = "/".join(relative.parts[:-1])
    return student, relative.as_posix()


def find_submissions(root: str | os.PathLike) -> list[Path]:
    """Every ``*.ipynb`` under ``root`` (checkpoints and files the grader writes left out), sorted."""
    root = Path(root)
    return sorted(
        p for p in root.rglob("*.ipynb")
        if ".ipynb_checkpoints" not in p.parts and not p.name.endswith(".graded.ipynb")
    )


#: the file, next to each executed notebook, that receives its kernel's own log lines
KERNEL_LOG = "kernel.log"


def _execute(source: Path, executed: Path, workdir: Path, parameters: Mapping[str, Any], *,
             timeout: float | None, kernel: str, keep_going: bool) -> tuple[str | None, bool]:
    """Run ``source`` into ``executed`` with papermill; (error or None, whether a cell raised)."""
    import papermill

    try:
        papermill.execute_notebook(
            str(source), str(executed), parameters=parameters, kernel_name=kernel, cwd=str(workdir),
            progress_bar=False, execution_timeout=timeout, allow_errors=keep_going, language="python",
        )
    except Exception as error:  # noqa: BLE001 - errors, timeouts, dead kernels all end up in the table
        return _describe_error(error), getattr(error, "ename", None) is not None
    return None, False


@contextlib.contextmanager
def _environment(values: Mapping[str, str]):
    """Set environment variables (which the kernel inherits) for the block, then restore them."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def _kernel_log(path: Path):
    """Send this process's standard error, which the kernel inherits, to ``path`` for the block.

    The kernel's own log lines are not the student's output and would otherwise interleave
    with the grader's table: Jupyter's TCP warning, and "KeyboardInterrupt caught in kernel",
    which ipykernel writes when jupyter_client shuts a kernel down (it sends an interrupt,
    SIGINT, before the shutdown request, even when nothing is running)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(path, "ab") as log:
            os.dup2(log.fileno(), 2)
            try:
                yield
            finally:
                sys.stderr.flush()
                os.dup2(saved, 2)
    finally:
        os.close(saved)


def grade_notebook(
    path: str | os.PathLike,
    root: str | os.PathLike,
    workdir: str | os.PathLike,
    *,
    parameters: Mapping[str, Any] | None = None,
    timeout: float | None = 600,
    kernel: str = "python3",
    keep_going: bool = False,
    threads: int | None = None,
) -> NotebookGrade:
    """Run one notebook (in a copy, inside ``workdir``) and score its checks; the kernel's
    own log lines go to ``workdir/kernel.log``."""
    # absolute paths: the kernel runs inside workdir, where a relative path means something else
    path, root, workdir = Path(path).resolve(), Path(root).resolve(), Path(workdir).resolve()
    student, file = _student_and_file(path, root)
    grade = NotebookGrade(student, file, None)
    try:
        nb = nbformat.read(path, as_version=4)
    except Exception as error:  # noqa: BLE001 - an unreadable file is a row, not a crash
        grade.error = f"unreadable notebook: {_describe_error(error)}"
        return grade
    assignment = find_assignment(nb.metadata, path.name)
    if assignment is None:
        known = ", ".join(a.filename for a in ASSIGNMENTS)
        grade.error = f"not an assignment notebook (no {'consensus_assignment'!r} metadata; file name matches none of {known})"
        return grade
    grade.assignment = assignment.id
    workdir.mkdir(parents=True, exist_ok=True)
    source = workdir / path.name
    shutil.copy2(path, source)
    executed = workdir / (path.stem + ".graded.ipynb")
    results_file = workdir / "checks.jsonl"
    results_file.unlink(missing_ok=True)
    run_parameters = _declared(source, {**assignment.grade_parameters, **(parameters or {})})
    env = {RESULTS_ENV: str(results_file)}
    if threads:
        env |= {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    started = time.perf_counter()
    with _environment(env), _kernel_log(workdir / KERNEL_LOG):
        grade.error, cell_error = _execute(source, executed, workdir, run_parameters, timeout=timeout,
                                           kernel=kernel, keep_going=keep_going)
    grade.seconds = time.perf_counter() - started
    reported = read_results_file(results_file)
    executed_nb = _read_executed(executed)
    if executed_nb is not None:
        if not reported:
            reported = results_from_outputs(executed_nb)
        if cell_error:  # name the first cell that raised (papermill names the last)
            grade.error = first_error(executed_nb) or grade.error
    grade.executed = str(executed) if executed.is_file() else None
    _score_checks(grade, assignment.checks, reported, keep_going)
    return grade


def _read_executed(executed: Path) -> nbformat.NotebookNode | None:
    """The executed notebook, or None if it was not written or cannot be read."""
    if not executed.is_file():
        return None
    try:
        return nbformat.read(executed, as_version=4)
    except Exception:  # noqa: BLE001 - a half-written file: keep what the results file says
        return None


def _score_checks(grade: NotebookGrade, checks: Sequence[str], reported: Mapping[str, tuple[str, str]],
                  keep_going: bool) -> None:
    """Fill ``grade.checks``: each expected check as reported, or FAIL saying why it was not reached."""
    for check in checks:
        if check in reported:
            grade.checks[check] = reported[check]
        else:
            if keep_going:
                why = "its cell raised before the check reported, or the check was removed"
            elif grade.error:
                why = f"the notebook stopped before it: {grade.error}"
            else:
                why = "the check cell did not run (removed?)"
            grade.checks[check] = ("FAIL", f"not reached ({why})")


def _declared(notebook: Path, parameters: Mapping[str, Any]) -> dict[str, Any]:
    """The ``parameters`` that ``notebook``'s parameters cell declares: a parameter shared by
    the grader (``--param DOWNLOAD=False``) but unknown to one assignment is left out for
    that notebook, instead of papermill's "Passed unknown parameter" warning."""
    import papermill

    declared = papermill.inspect_notebook(str(notebook))
    return {k: v for k, v in parameters.items() if k in declared}


def grade(
    submissions: str | os.PathLike,
    *,
    timeout: float | None = 600,
    parameters: Mapping[str, Any] | None = None,
    kernel: str = "python3",
    keep_going: bool = False,
    threads: int | None = None,
    executed_dir: str | os.PathLike | None = None,
    log=None,
) -> list[NotebookGrade]:
    """Grade every notebook under ``submissions``; returns one :class:`NotebookGrade` each.

    Args:
        submissions: folder of submissions (``<student>/<notebook>.ipynb`` or flat).
        timeout: seconds a single cell may run (papermill's ``execution_timeout``); None: no limit.
        parameters: papermill parameters for every notebook, over the assignments' ``grade_parameters``.
        kernel: the Jupyter kernel to run them with.
        keep_going: run the cells after an error too (partial credit).
        threads: set ``OMP_NUM_THREADS`` for the kernels (1 is fastest on a busy machine).
        executed_dir: keep the executed notebooks there (``<student>/<name>.graded.ipynb``);
            default: a temporary folder, deleted afterwards.
        log: a file to print progress to (e.g. ``sys.stderr``); None: quiet.
    """
    root = Path(submissions).resolve()
    if not root.is_dir():
        raise FileNotFoundError(f"no submissions folder at {submissions}.")
    temporary = None
    if executed_dir is None:
        temporary = tempfile.mkdtemp(prefix="consensus-grading-")
        base = Path(temporary)
    else:
        base = Path(executed_dir).resolve()
    # a folder of executed notebooks inside the submissions must not be graded itself
    paths = [p for p in find_submissions(root) if not p.resolve().is_relative_to(base.resolve())]
    grades = []
    try:
        for index, path in enumerate(paths):
            relative = path.relative_to(root)
            workdir = base / relative.parent / relative.stem
            if log:
                print(f"[{index + 1}/{len(paths)}] {relative.as_posix()} ...", file=log, flush=True)
            result = grade_notebook(
                path, root, workdir, parameters=parameters, timeout=timeout, kernel=kernel,
                keep_going=keep_going, threads=threads,
            )
            if temporary is not None:
                result.executed = None
            if log:
                print(f"    {result.passed}/{result.total} checks passed ({result.seconds:.0f} s)"
                      + (f"; {result.error}" if result.error else ""), file=log, flush=True)
            grades.append(result)
    finally:
        if temporary is not None:
            shutil.rmtree(temporary, ignore_errors=True)
    return grades


def format_table(grades: Sequence[NotebookGrade]) -> str:
    """The score table: one block per assignment (its checks as columns), one row per notebook."""
    lines: list[str] = []
    groups: list[tuple[Assignment | None, list[NotebookGrade]]] = [
        (a, [g for g in grades if g.assignment == a.id]) for a in ASSIGNMENTS
    ]
    groups.append((None, [g for g in grades if g.assignment is None]))
    for assignment, rows in groups:
        if not rows:
            continue
        checks = list(assignment.checks) if assignment else []
        header = ["student", "file", *checks, "total", "error"]
        body = [[g.student or "-", g.file, *[g.status(c) for c in checks], f"{g.passed}/{g.total}", g.error or ""]
                for g in rows]
        widths = [max(len(str(r[i])) for r in [header, *body]) for i in range(len(header) - 1)]
        title = f"{assignment.id}: {assignment.title} ({assignment.filename})" if assignment else "not recognised"
        if lines:
            lines.append("")
        lines.append(title)
        for row in [header, *body]:
            cells = [str(c).ljust(w) for c, w in zip(row[:-1], widths)]
            lines.append("  ".join(cells + [str(row[-1])]).rstrip())
    passed = sum(g.passed for g in grades)
    total = sum(g.total for g in grades)
    lines.append("")
    lines.append(f"{len(grades)} notebooks, {passed}/{total} checks passed")
    return "\n".join(lines)


CSV_FIELDS = ("student", "file", "assignment", "passed", "total", "score", "error", "seconds")


def write_csv(grades: Sequence[NotebookGrade], path: str | os.PathLike) -> None:
    """One row per notebook: student, file, assignment, passed, total, score (0-1), error,
    seconds, then one column per check of every assignment (PASS, FAIL, or empty when
    the check is not part of that notebook's assignment)."""
    checks = all_checks()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow([*CSV_FIELDS, *checks])
        for g in grades:
            score = f"{g.passed / g.total:.3f}" if g.total else ""
            writer.writerow([g.student, g.file, g.assignment or "", g.passed, g.total, score, g.error or "",
                             f"{g.seconds:.1f}", *[g.status(c) for c in checks]])


def parse_parameter(text: str) -> tuple[str, Any]:
    """``NAME=VALUE`` from the command line; VALUE is read as a Python literal (``3``,
    ``0.5``, ``False``, ``None``, ``[0.3, 0.5]``), ``true``/``false``/``null``, else kept as text."""
    import ast

    if "=" not in text:
        raise ValueError(f"--param takes NAME=VALUE; got {text!r}.")
    name, raw = text.split("=", 1)
    name = name.strip()
    if not name.isidentifier():
        raise ValueError(f"--param: {name!r} is not a Python name.")
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        value = {"true": True, "false": False, "null": None, "none": None}.get(raw.strip().lower(), raw)
    return name, value


__all__ = [
    "NotebookGrade",
    "find_submissions",
    "format_table",
    "grade",
    "grade_notebook",
    "parse_parameter",
    "read_results_file",
    "results_from_outputs",
    "write_csv",
]
