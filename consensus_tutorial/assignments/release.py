"""Student versions of the solution notebooks (nbgrader-style solution blocks).

In a solution notebook, every line from ``### BEGIN SOLUTION`` to ``### END SOLUTION``
(markers included) is the teacher's answer:

* in a code cell the block becomes ``raise NotImplementedError("write your solution here")``
  at the indentation of the ``BEGIN`` marker, so the gap fails loudly when run;
* in a markdown cell (a written answer) it becomes ``*Write your answer here.*``.

The release also clears every output and execution count, removes papermill's and
Jupyter's run metadata, marks the notebook as a student version in
``metadata["consensus_assignment"]``, and locks the cells tagged ``check`` (Jupyter's
``editable``/``deletable`` flags) so that students do not edit the checks by accident.

    python -m consensus_tutorial.assignments release assignments/solutions release/
"""

from __future__ import annotations

import ast
import os
from pathlib import Path

import nbformat

from .registry import METADATA_KEY

BEGIN = "### BEGIN SOLUTION"
END = "### END SOLUTION"
CODE_STUB = 'raise NotImplementedError("write your solution here")'
MARKDOWN_STUB = "*Write your answer here.*"
CHECK_TAG = "check"
_RUN_METADATA = ("papermill", "execution", "ExecuteTime")


class ReleaseError(ValueError):
    """A solution notebook whose markers do not pair up, or whose student code is not valid Python."""


def strip_solutions(source: str, *, markdown: bool = False, where: str = "cell") -> str:
    """Replace every solution block of ``source`` by the stub (see the module docstring).

    Raises:
        ReleaseError: an END without BEGIN, a BEGIN without END, or nested blocks.
    """
    out: list[str] = []
    inside_since: int | None = None
    for number, line in enumerate(source.splitlines(), start=1):
        stripped = line.strip()
        if stripped.startswith(BEGIN):
            if inside_since is not None:
                raise ReleaseError(f"{where}, line {number}: {BEGIN!r} inside the block opened on line {inside_since}.")
            inside_since = number
            indent = line[: len(line) - len(line.lstrip())]
            out.append(indent + (MARKDOWN_STUB if markdown else CODE_STUB))
        elif stripped.startswith(END):
            if inside_since is None:
                raise ReleaseError(f"{where}, line {number}: {END!r} without a {BEGIN!r} before it.")
            inside_since = None
        elif inside_since is None:
            out.append(line)
    if inside_since is not None:
        raise ReleaseError(f"{where}, line {inside_since}: {BEGIN!r} is never closed by {END!r}.")
    return "\n".join(out) + ("\n" if source.endswith("\n") else "")


def _python_only(source: str) -> str:
    """The cell without IPython magics and shell escapes, for a syntax check."""
    return "\n".join("pass" if line.lstrip().startswith(("%", "!")) else line for line in source.splitlines())


def student_notebook(nb: nbformat.NotebookNode, name: str = "notebook") -> tuple[nbformat.NotebookNode, int]:
    """A student version of the solution notebook ``nb`` (a new object) and the number
    of solution blocks removed."""
    nb = nbformat.from_dict(nb)  # deep copy
    blocks = 0
    for index, cell in enumerate(nb.cells):
        where = f"{name}, cell {index}"
        source = cell.source
        if BEGIN in source or END in source:
            blocks += sum(1 for line in source.splitlines() if line.strip().startswith(BEGIN))
            cell.source = strip_solutions(source, markdown=cell.cell_type == "markdown", where=where)
            if cell.cell_type == "code":
                try:
                    ast.parse(_python_only(cell.source))
                except SyntaxError as error:
                    raise ReleaseError(
                        f"{where}: the student version is not valid Python ({error.msg}, line {error.lineno}); "
                        "put the markers around whole statements."
                    ) from None
        for key in _RUN_METADATA:
            cell.metadata.pop(key, None)
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
            if CHECK_TAG in cell.metadata.get("tags", []):
                cell.metadata["editable"] = False
                cell.metadata["deletable"] = False
    nb.metadata.pop("papermill", None)
    entry = dict(nb.metadata.get(METADATA_KEY, {}))
    entry["version"] = "student"
    nb.metadata[METADATA_KEY] = entry
    return nb, blocks


def release(source_dir: str | os.PathLike, out_dir: str | os.PathLike) -> list[Path]:
    """Write the student version of every ``*.ipynb`` under ``source_dir`` (sub-folders
    kept) into ``out_dir``; returns the written paths.

    Raises:
        ReleaseError: a notebook's markers do not pair up, or it has no solution block.
        FileNotFoundError: ``source_dir`` holds no notebook.
    """
    source_dir, out_dir = Path(source_dir), Path(out_dir)
    sources = sorted(p for p in source_dir.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)
    if not sources:
        raise FileNotFoundError(f"no notebooks (*.ipynb) under {source_dir}.")
    if out_dir.resolve() == source_dir.resolve():
        raise ReleaseError("the output folder must differ from the source folder (it would overwrite the solutions).")
    written = []
    for path in sources:
        nb = nbformat.read(path, as_version=4)
        student, blocks = student_notebook(nb, name=str(path.relative_to(source_dir)))
        if blocks == 0:
            raise ReleaseError(f"{path}: no {BEGIN!r} block, so the student version would hold the answers.")
        target = out_dir / path.relative_to(source_dir)
        target.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(student, target)
        written.append(target)
    return written
