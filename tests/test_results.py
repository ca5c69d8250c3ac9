"""The committed results: every run's extracted network is gate-free and matches its
metrics.json, the run set follows one schedule, and the results chapter's tables are
rebuilt, unchanged, from results/ alone by results/report.py."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import consensus_tutorial as ct
from consensus_tutorial.comparison import kept_widths

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results"
RUNS_DIR = RESULTS / "cifar10-resnet20"
RUN_DIRS = sorted(p.parent for p in RUNS_DIR.glob("*/subnetwork.pt"))
REPORT = RESULTS / "report"


def _metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def _results_module(name: str):
    """Import ``results/<name>.py`` (the results scripts are not part of the package)."""
    import importlib

    sys.path.insert(0, str(RESULTS))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(RESULTS))


def _runner():
    return _results_module("run_cifar10_resnet20")


def test_results_are_committed():
    assert len(RUN_DIRS) >= 2, f"no committed runs under {RUNS_DIR}"
    names = {p.name for p in RUN_DIRS}
    assert {"dense", "channel-b-0.5"} <= names
    for run_dir in RUN_DIRS:
        assert {"metrics.json", "history.json", "subnetwork.pt"} <= {p.name for p in run_dir.iterdir()}


@pytest.mark.parametrize("run_dir", RUN_DIRS, ids=[p.name for p in RUN_DIRS])
def test_subnetwork_has_no_gates_and_the_recorded_flops(run_dir):
    metrics = _metrics(run_dir)
    net = ct.load_subnetwork(run_dir / "subnetwork.pt")
    modules = list(net.modules())
    assert not any(isinstance(m, ct.Gate) for m in modules)
    assert not any("gate" in type(m).__name__.lower() for m in modules)
    assert not any("gate" in name for name, _ in net.named_parameters())
    assert ct.count_flops(net) == metrics["flops_extracted"]
    assert ct.count_params(net) == metrics["params_extracted"]
    assert 1.0 - metrics["flops_extracted"] / metrics["flops_dense"] == pytest.approx(
        metrics["pruning_rate_flops"], abs=1e-4)
    with torch.no_grad():
        logits = net(torch.zeros(2, 3, 32, 32))
    assert logits.shape == (2, 10) and torch.isfinite(logits).all()


@pytest.mark.parametrize("run_dir", RUN_DIRS, ids=[p.name for p in RUN_DIRS])
def test_kept_units_of_the_spec_match_the_recorded_masks(run_dir):
    metrics = _metrics(run_dir)
    if not metrics["kept_units"]:  # dense: nothing gated
        return
    config = metrics["config"]
    position = "layer" if config["gating"] == "layer" else config["position"]
    spec = ct.load_subnetwork(run_dir / "subnetwork.pt").spec
    recorded = {name.removesuffix(".gate"): kept for name, kept in metrics["kept_units"].items()}
    assert kept_widths(spec, position) == recorded


def test_runs_follow_one_schedule_on_the_full_data():
    configs = {p.name: _metrics(p)["config"] for p in RUN_DIRS}
    for key in _results_module("report").SCHEDULE_KEYS:
        values = {c[key] for c in configs.values()}
        assert len(values) == 1, f"{key} differs between runs: {values}"
    runner = _runner()
    for name, config in configs.items():
        assert config["seed"] == runner.seed(name), f"{name} ran with seed {config['seed']}, the runner gives it {runner.seed(name)}"
    first = next(iter(configs.values()))
    assert first["epochs"] >= 10 and first["limit_train"] is None and first["limit_test"] is None
    for name, config in configs.items():
        if name in runner.RUNS:
            assert config["method"] == runner.RUNS[name][runner.RUNS[name].index("--method") + 1]
        history = json.loads((RUNS_DIR / name / "history.json").read_text())
        assert [h["epoch"] for h in history] == list(range(1, first["epochs"] + 1))


def test_runner_commands_share_the_schedule_and_resume():
    runner = _runner()
    assert {"dense", "channel-b-0.3", "channel-b-0.5", "random-0.5", "l1-0.5", "bn-polarization-0.5"} <= set(runner.RUNS)
    out = subprocess.run([sys.executable, str(RESULTS / "run_cifar10_resnet20.py"), "--list"],
                         capture_output=True, text=True, check=True).stdout.splitlines()
    assert len(out) == len(runner.RUNS)
    for name, seed in runner.SEEDS.items():
        assert name in runner.RUNS and name.endswith(f"-seed{seed}") and seed != runner.SEED
    for line, name in zip(out, runner.RUNS):
        assert " ".join(runner.COMMON) in line and line.endswith("--resume")
        assert f" --seed {runner.seed(name)} " in line
        assert f"--out results/cifar10-resnet20/{name} " in line
    bad = subprocess.run([sys.executable, str(RESULTS / "run_cifar10_resnet20.py"), "no-such-run"],
                         capture_output=True, text=True, check=False)
    assert bad.returncode == 2 and "unknown run" in bad.stderr


def test_measured_json_matches_the_runs():
    measured = json.loads((RUNS_DIR / "measured.json").read_text())
    assert set(measured["runs"]) == {p.name for p in RUN_DIRS}, (
        "measured.json does not cover the committed runs: run benchmarks/results_check.py")
    for name, row in measured["runs"].items():
        metrics = _metrics(RUNS_DIR / name)
        assert row["flops"] == metrics["flops_extracted"]
        assert row["recorded_top1_extracted"] == metrics["top1_extracted"]
        if "top1_extracted" in row:  # re-evaluated on the full test set by benchmarks/results_check.py
            assert row["top1_extracted"] == metrics["top1_extracted"]


def test_report_rebuilds_the_committed_tables(tmp_path):
    done = subprocess.run([sys.executable, str(RESULTS / "report.py"), "--out", str(tmp_path)],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    committed = {p.name for p in REPORT.iterdir()}
    rebuilt = {p.name for p in tmp_path.iterdir()}
    assert rebuilt == committed, "results/report/ is stale: run python results/report.py"
    for name in sorted(rebuilt):
        if name.endswith(".md"):
            assert (tmp_path / name).read_text() == (REPORT / name).read_text(), (
                f"results/report/{name} differs from what results/ gives: run python results/report.py")
        else:
            assert (tmp_path / name).stat().st_size > 10_000  # a real figure, not an empty canvas


def test_a_run_repeated_with_another_seed_goes_to_the_seed_table_not_the_figures(tmp_path):
    import shutil

    runs_dir = tmp_path / "cifar10-resnet20"
    for name in ("dense", "channel-b-0.5"):
        shutil.copytree(RUNS_DIR / name, runs_dir / name, ignore=shutil.ignore_patterns("checkpoint.pt", "*.log"))
    repeat = runs_dir / "channel-b-0.5-seed7"
    shutil.copytree(runs_dir / "channel-b-0.5", repeat)
    metrics = _metrics(repeat)
    metrics["config"]["seed"] = 7
    metrics["top1_extracted"] = round(metrics["top1_extracted"] - 1.25, 2)
    (repeat / "metrics.json").write_text(json.dumps(metrics))

    report = _results_module("report")
    runs = report.load_runs(runs_dir)
    assert runs["channel-b-0.5-seed7"]["repeat"] and not runs["channel-b-0.5"]["repeat"]
    assert runs["channel-b-0.5-seed7"]["label"].endswith(", seed 7")
    assert set(report.first_seed(runs)) == {"dense", "channel-b-0.5"}
    table = report.seeds_table(runs)
    assert "| channel-b-0.5 | 0, 7 |" in table and "| -1.25 |" in table
    report.build(tmp_path, tmp_path / "out")
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert "1 repeated with another seed (channel-b-0.5-seed7)" in summary
    assert summary.count("consensus, channel (b) ") == 1  # the repeat is not a second point at target 0.5


def test_report_on_a_folder_without_runs_says_what_to_do(tmp_path):
    (tmp_path / "cifar10-resnet20").mkdir()
    done = subprocess.run([sys.executable, str(RESULTS / "report.py"), "--results", str(tmp_path),
                           "--out", str(tmp_path / "out")], capture_output=True, text=True, check=False)
    assert done.returncode != 0
    assert "no run under" in done.stderr and "run_cifar10_resnet20.py" in done.stderr


def test_every_file_the_chapter_shows_is_in_the_report():
    chapter = (ROOT / "book" / "results_first_default.md").read_text()
    shown = set(re.findall(r"\.\./results/report/([\w.-]+)", chapter))
    assert shown, "book/results_first_default.md shows nothing from results/report/"
    missing = sorted(name for name in shown if not (REPORT / name).is_file())
    assert not missing, f"book/results_first_default.md shows {missing}, which results/report.py did not write"


def _recorded_percentages() -> set[str]:
    """Every percentage a committed run recorded, as the prose writes it: top-1 to two
    decimals, FLOPs removed to one."""
    found = set()
    for run_dir in sorted(p.parent for p in RESULTS.glob("*/*/subnetwork.pt")):
        m = _metrics(run_dir)
        found |= {f"{m[k]:.2f}" for k in ("top1_extracted", "top1_gated") if m.get(k) is not None}
        if m.get("pruning_rate_flops") is not None:
            found.add(f"{100 * m['pruning_rate_flops']:.1f}")
    return found


def test_readme_results_numbers_come_from_committed_runs():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Results on real CIFAR-10", 1)[1].split("\n## ", 1)[0]
    quoted = re.findall(r"(\d+\.\d+)%", section)
    assert quoted, "the README's results section quotes no percentage"
    recorded = _recorded_percentages()
    for table in [*RESULTS.glob("*/report/*.md"), *RESULTS.glob("screening/*.md")]:
        recorded |= set(re.findall(r"\d+\.\d+", table.read_text()))  # means and spreads the reports computed
    untraced = [q for q in quoted if q not in recorded]
    assert not untraced, f"README quotes {untraced}%, which no committed run's metrics.json records"


def test_shipped_runs_are_copies_of_committed_runs():
    """Every run shipped with the package is byte-for-byte the committed run it names, and
    its extracted network re-evaluates to the same FLOPs."""
    from consensus_tutorial import shipped_runs

    assert shipped_runs.names()
    for name in shipped_runs.names():
        folder = shipped_runs.folder(name)
        source = ROOT / shipped_runs.SOURCES[name]
        for file in shipped_runs.FILES:
            assert (folder / file).read_bytes() == (source / file).read_bytes(), f"{name}/{file} differs"
        metrics = json.loads((folder / "metrics.json").read_text())
        assert shipped_runs.settings(name) == metrics["config"]
        assert ct.count_flops(ct.load_subnetwork(folder / "subnetwork.pt")) == metrics["flops_extracted"]
    with pytest.raises(ValueError, match="shipped runs are"):
        shipped_runs.folder("no-such-run")
