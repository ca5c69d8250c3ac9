"""The method screen and the seed study: every committed run re-loads as the network its
metrics.json describes, the report scripts rebuild the committed tables from the run
folders alone, and the results chapter shows only files those scripts write."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import consensus_tutorial as ct

ROOT = Path(__file__).resolve().parents[1]
SCREEN = ROOT / "results" / "screening"
STUDY = ROOT / "results" / "cifar10-resnet20-v2"
RUN_DIRS = sorted(p.parent for folder in (SCREEN, STUDY) for p in folder.glob("*/subnetwork.pt"))


def _metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def test_the_screen_is_committed():
    assert len(list(SCREEN.glob("*-seed*/metrics.json"))) >= 30


@pytest.mark.parametrize("run_dir", RUN_DIRS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_run_reloads_as_recorded(run_dir):
    metrics = _metrics(run_dir)
    subnet = ct.load_subnetwork(run_dir / "subnetwork.pt")
    assert ct.gate_modules(subnet) == {}
    assert ct.count_flops(subnet) == metrics["flops_extracted"]
    assert ct.count_params(subnet) == metrics["params_extracted"]
    settle = metrics.get("settle")
    if settle:  # frozen and handed over: the gated top-1 is the extracted network's
        assert metrics["top1_gated"] == metrics["top1_extracted"]
        assert abs(settle["removed"] - metrics["pruning_rate_flops"]) < 1e-3
        assert settle.get("trace", [[0]])[-1][0] <= settle["step"]  # (the trace is recorded since the study)


@pytest.mark.parametrize("script, folder, tables", [
    ("screen_report.py", SCREEN, ["screen.md", "screen_variants.md"]),
    ("study_report.py", STUDY, ["report/summary.md", "report/seeds.md", "report/settle.md"]),
])
def test_reports_rebuild_the_committed_tables(script, folder, tables, tmp_path):
    if not list(folder.glob("*-seed*/metrics.json")):
        pytest.skip(f"no finished runs in {folder}")
    copy = tmp_path / folder.name
    shutil.copytree(folder, copy, ignore=shutil.ignore_patterns("*.pt", "*.log", "*.png"))
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / script), "--folder", str(copy)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    for table in tables:
        assert (copy / table).read_text() == (folder / table).read_text(), table


def test_the_results_chapter_shows_only_written_files():
    chapter = (ROOT / "book" / "results.md").read_text()
    shown = re.findall(r"\{(?:include|figure)\}\s+\.\./(\S+)", chapter)
    assert shown
    missing = [path for path in shown if not (ROOT / path).is_file()]
    assert not missing, missing


def test_the_consensus_default_keeps_the_random_runs_widths():
    """With the default allocation, random channels at the consensus widths is the random run."""
    pairs = [(STUDY / f"consensus-b-0.5-seed{k}", STUDY / f"random-0.5-seed{k}") for k in range(3)]
    pairs = [(c, r) for c, r in pairs if (c / "metrics.json").is_file() and (r / "metrics.json").is_file()]
    if not pairs:
        pytest.skip("no finished pair of runs")
    for consensus, random in pairs:
        assert _metrics(consensus)["kept_units"] == _metrics(random)["kept_units"]
        assert _metrics(consensus)["flops_extracted"] == _metrics(random)["flops_extracted"]
