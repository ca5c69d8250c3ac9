"""The latency-repeatability benchmark: it times a committed run in separate processes
and refuses settings that cannot measure a spread."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

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


@pytest.mark.parametrize("mode", [["--clock", "wall"], ["--side-by-side", "--clock", "cpu"]])
def test_gated_epoch_benchmark_times_live_gates_against_dense(tmp_path: Path, mode: list[str]):
    """benchmarks/gated_epoch.py trains a live-gated and a dense run per pair (one after the
    other, or at the same time) and reports each pair's time ratio."""
    from fakedata import make_cifar

    make_cifar(tmp_path / "data", "cifar10", n_per_file=8, n_test=8)
    out = tmp_path / "gated.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gated_epoch.py"), "--data-root", str(tmp_path / "data"),
         "--limit-train", "32", "--epochs", "1", "--batch-size", "16", "--threads", "1", "--pairs", "1",
         "--no-verify-checksums", "--json", str(out), *mode], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stderr
    bench = json.loads(out.read_text())
    assert bench["clock"] == mode[-1] and bench["side_by_side"] == ("--side-by-side" in mode)
    assert len(bench["ratios"]) == 1
    assert bench["ratios"][0] == bench["seconds"]["gated"][0] / bench["seconds"]["dense"][0]
    assert "gated epoch / dense epoch: median" in done.stdout
