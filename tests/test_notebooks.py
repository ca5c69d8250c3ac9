"""Every chapter notebook runs top to bottom under papermill with small CPU parameters,
and keeps the book's conventions."""

from __future__ import annotations

import json

import pytest

from conftest import NOTEBOOK_PARAMETERS, ROOT, notebook_names

NOTEBOOKS = notebook_names()


def _cells(name: str) -> list[dict]:
    return json.loads((ROOT / "notebooks" / f"{name}.ipynb").read_text())["cells"]


def test_every_notebook_is_a_chapter():
    on_disk = sorted(p.stem for p in (ROOT / "notebooks").glob("*.ipynb"))
    assert on_disk == sorted(NOTEBOOKS), "every notebook must be listed in _toc.yml, and only once"
    assert set(NOTEBOOK_PARAMETERS) == set(NOTEBOOKS), "tests/conftest.py needs small parameters per notebook"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_conventions(name):
    cells = _cells(name)
    code = [c for c in cells if c["cell_type"] == "code"]
    assert cells[0]["cell_type"] == "markdown" and "".join(cells[0]["source"]).lstrip().startswith("# ")
    assert "google.colab" in "".join(code[0]["source"]), "the first code cell installs the package in Colab"
    tagged = [c for c in code if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, "exactly one cell tagged 'parameters' (papermill)"
    source = "".join(tagged[0]["source"])
    for parameter in ("DEVICE", "DATA_ROOT", "DOWNLOAD", "SEED"):
        assert parameter in source, f"the parameters cell sets {parameter}"
    for parameter in NOTEBOOK_PARAMETERS[name]:
        assert parameter in source, f"tests pass {parameter}, which the parameters cell must define"
    assert all(not c.get("outputs") for c in code), "notebooks are stored without outputs; the build executes them"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs(name, executed_notebooks):
    error = executed_notebooks[name]
    if error is not None:
        pytest.fail(f"{name}.ipynb failed under papermill: {error}")


def test_full_runs_notebook_shows_the_shipped_run_without_training(tmp_path):
    """As the book is built (TRAIN = False), chapter 6 shows the run shipped with the
    package: its command and figures, in seconds, with no data and no training."""
    import papermill

    out = tmp_path / "06.ipynb"
    papermill.execute_notebook(str(ROOT / "notebooks" / "06_full_runs.ipynb"), str(out), kernel_name="python3",
                               parameters={"DATA_ROOT": str(tmp_path / "no-data"), "DOWNLOAD": False},
                               cwd=str(tmp_path), progress_bar=False)
    cells = json.loads(out.read_text())["cells"]
    text = "".join("".join(o.get("text", "")) for c in cells if c["cell_type"] == "code" for o in c["outputs"])
    images = sum("image/png" in o.get("data", {}) for c in cells if c["cell_type"] == "code" for o in c["outputs"])
    assert "python -m consensus_tutorial train" in text and "training" not in text.replace("trained", "")
    assert images == 4
    assert not (tmp_path / "runs").exists(), "nothing is written when only the shipped run is shown"
