"""Session fixtures shared by the notebook and book tests.

The notebooks are executed once per test session by papermill, with the small
parameters below, inside a copy of the book; the book test then builds that copy with
notebook execution turned off, so every notebook runs once, not twice. (`make book`
builds the real book, executing every notebook with its own default parameters.)
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"

# Small parameters per notebook: enough to draw every figure, fast on a 2-core CPU.
NOTEBOOK_PARAMETERS: dict[str, dict] = {
    "01_gates_and_ste": {"BATCH_SIZE": 4, "TOY_STEPS": 20},
    "02_polarization_dynamics": {"EPOCHS": 1, "LIMIT_TRAIN": 64, "LIMIT_TEST": 64, "BATCH_SIZE": 32,
                                 "TOY_UNITS": 8, "TOY_STEPS": 30},
    "03_gate_histograms": {"EPOCHS": 1, "LIMIT_TRAIN": 64, "LIMIT_TEST": 64, "BATCH_SIZE": 32},
    "04_layer_vs_channel": {"EPOCHS": 1, "LIMIT_TRAIN": 256, "LIMIT_TEST": 128, "LATENCY_REPEATS": 3},
    "05_baselines": {"EPOCHS": 2, "LIMIT_TRAIN": 256, "LIMIT_TEST": 128},
    "06_full_runs": {"TRAIN": True, "EPOCHS": 2, "LIMIT_TRAIN": 256, "LIMIT_TEST": 128},
}


def toc_files() -> list[str]:
    """Every file of _toc.yml (root first), without suffix, relative to the repository."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]]
    for part in toc.get("parts", [{"chapters": toc.get("chapters", [])}]):
        files += [c["file"] for c in part["chapters"]]
    return files


def notebook_names() -> list[str]:
    return [Path(f).name for f in toc_files() if f.startswith("notebooks/")]


def data_environment() -> dict[str, str]:
    env = dict(os.environ)
    if "CONSENSUS_TUTORIAL_DATA" not in env and SHARED_DATA.is_dir():
        env["CONSENSUS_TUTORIAL_DATA"] = str(SHARED_DATA)
    return env


@pytest.fixture(autouse=True, scope="session")
def _single_thread():
    """The unit tests' tensors are tiny: one intra-op thread is as fast, and much faster
    when the machine's few cores are busy (no OpenMP threads spinning against others)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def book_copy(tmp_path_factory) -> Path:
    """The book's sources copied to a temporary folder."""
    copy = tmp_path_factory.mktemp("book")
    for name in ("_config.yml", "_toc.yml"):
        shutil.copy2(ROOT / name, copy / name)
    for folder in ("book", "notebooks", "_static"):
        shutil.copytree(ROOT / folder, copy / folder, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    # the tables and figures the results pages include (not the run files behind them)
    shutil.copytree(ROOT / "results", copy / "results",
                    ignore=shutil.ignore_patterns("*.pt", "*.json", "*.log", "*.py", "__pycache__"))
    return copy


@pytest.fixture(scope="session")
def executed_notebooks(book_copy) -> dict[str, BaseException | None]:
    """Run every notebook of the book through papermill; {name: error or None}."""
    import papermill

    env = data_environment()
    old = dict(os.environ)
    os.environ.update(env)
    errors: dict[str, BaseException | None] = {}
    try:
        for name in notebook_names():
            path = book_copy / "notebooks" / f"{name}.ipynb"
            parameters = {"DOWNLOAD": False, "SEED": 0, **NOTEBOOK_PARAMETERS.get(name, {})}
            try:
                papermill.execute_notebook(
                    str(path), str(path), parameters=parameters, kernel_name="python3",
                    cwd=str(path.parent), progress_bar=False,
                )
                errors[name] = None
            except Exception as error:  # reported by the test of that notebook
                errors[name] = error
    finally:
        os.environ.clear()
        os.environ.update(old)
    return errors


@pytest.fixture(scope="session")
def built_book(book_copy, executed_notebooks) -> subprocess.CompletedProcess:
    """Build the copied book (its notebooks already executed) with warnings as errors."""
    config = yaml.safe_load((book_copy / "_config.yml").read_text())
    config.setdefault("execute", {})["execute_notebooks"] = "off"
    (book_copy / "_config.yml").write_text(yaml.safe_dump(config))
    jupyter_book = Path(sys.executable).parent / "jupyter-book"
    return subprocess.run(
        [str(jupyter_book), "build", str(book_copy), "-n", "-W", "--keep-going"],
        capture_output=True, text=True, env=data_environment(), timeout=1200,
    )
