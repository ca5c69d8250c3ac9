"""Every third-party module the package imports is declared in pyproject.toml: the core
dependencies for the library, an extra for the parts that need more (the course grader,
the notebook widgets). Checked statically, from the imports in the source, with the
installed distributions naming which package provides each module."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "consensus_tutorial"
#: module (relative to the package) -> the extra whose dependencies it may also use
EXTRAS = {"assignments": "course", "widgets.py": "notebooks"}


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return {n for n in names if n not in sys.stdlib_module_names and n != "consensus_tutorial"}


def test_every_import_is_declared():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = {_name(r) for r in project["dependencies"]}
    extras = {k: {_name(r) for r in v} for k, v in project["optional-dependencies"].items()}
    provides = importlib.metadata.packages_distributions()
    missing = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE).as_posix()
        allowed = set(core)
        for prefix, extra in EXTRAS.items():
            if relative.startswith(prefix):
                allowed |= extras[extra]
        for module in sorted(_imports(path)):
            dists = {d.lower().replace("_", "-") for d in provides.get(module, [module])}
            if not dists & allowed:
                missing.append(f"{relative} imports {module} ({', '.join(sorted(dists))})")
    assert not missing, "undeclared in pyproject.toml:\n" + "\n".join(missing)


#: the book helpers and the course grader: products built on the library, never below it
HELPERS = {"plots", "comparison", "toy", "widgets", "assignments", "shipped_runs", "runset"}


def _package_imports(path: Path) -> set[str]:
    """The package modules ``path`` imports (first component after ``consensus_tutorial``)."""
    names = set()
    depth = len(path.relative_to(PACKAGE).parts) - 1  # how deep in sub-packages the file sits
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level > 0:
            parts = (node.module or "").split(".")
            if node.level - 1 < depth:  # relative to a sub-package: first part is its sibling
                parts = [path.relative_to(PACKAGE).parts[0]]
            names |= {parts[0]} if parts[0] else {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("consensus_tutorial."):
            names.add(node.module.split(".")[1])
    return names


def test_the_core_library_does_not_import_the_book_helpers_or_the_grader():
    core = [p for p in PACKAGE.rglob("*.py")
            if p.relative_to(PACKAGE).parts[0].removesuffix(".py") not in HELPERS | {"__init__", "__main__"}]
    assert len(core) > 15
    for path in core:
        wrong = _package_imports(path) & HELPERS
        assert not wrong, f"{path.relative_to(ROOT)} imports {sorted(wrong)}: the core must not depend on them"


def test_the_readme_python_blocks_run_as_written(tmp_path):
    """Every ```python block of the README runs, in order, in one fresh interpreter."""
    import subprocess

    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    assert len(blocks) >= 2
    script = "\n".join(blocks) + "\nfrom consensus_tutorial.training import TrainConfig\n" \
        "assert TrainConfig(polarizer='squared', method='consensus-static').validate().gate == 'static'\n"
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
