"""The latency-repeatability benchmark: it times a committed run in separate processes
and refuses settings that cannot measure a spread."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "latency_repeatability.py"
RUN = ROOT / "results" / "cifar10-resnet20" / "layer-0.5"


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, cwd=ROOT)


def test_repeatability_measures_one_ratio_per_process(tmp_path: Path):
    out = tmp_path / "rep.json"
    done = _run("--runs", str(RUN), "--processes", "2", "--batch-sizes", "1", "2", "--rounds", "1",
                "--repeats", "1", "--warmup", "0", "--threads", "1", "--json", str(out))
    assert done.returncode == 0, done.stderr
    bench = json.loads(out.read_text())
    assert [(r["run"], r["batch"]) for r in bench["rows"]] == [("layer-0.5", 1), ("layer-0.5", 2)]
    for row in bench["rows"]:
        assert len(row["ratios"]) == 2
        assert row["min"] <= row["median"] <= row["max"]
        assert all(0 < x < 10 for x in row["ratios"])
    assert "| layer-0.5 | 2 |" in done.stdout


def test_repeatability_refuses_a_single_process_and_a_missing_run(tmp_path: Path):
    one = _run("--runs", str(RUN), "--processes", "1")
    assert one.returncode == 2 and "--processes must be >= 2" in one.stderr
    missing = _run("--runs", str(tmp_path))
    assert missing.returncode == 2 and "no subnetwork.pt" in missing.stderr
