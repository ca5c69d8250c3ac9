"""Rebuild every figure and table of the book's results chapter from ``results/`` alone.

Reads, and nothing else (no data set, no training, no timing):

* ``results/cifar10-resnet20/<run>/metrics.json``, ``history.json`` and ``subnetwork.pt``
  (written by ``python -m consensus_tutorial train``; the runs are listed in
  ``results/run_cifar10_resnet20.py``);
* ``results/cifar10-resnet20/measured.json`` (``benchmarks/results_check.py``: FLOPs,
  re-evaluated top-1 and latency of each extracted network), if present;
* ``results/benchmarks/inference.json``, ``block_latency.json``,
  ``latency_repeatability.json``, ``training_overhead.json`` and
  ``input_pipeline.json`` (the benchmark scripts' ``--json`` output), if present;
* the published reference numbers in :mod:`consensus_tutorial.comparison`.

Writes Markdown tables (``*.md``) and figures (``*.png``) to ``results/report/``; the
chapter ``book/results.md`` includes them. Run from anywhere::

    python results/report.py                 # writes results/report/
    python results/report.py --out /tmp/rep  # somewhere else

The tables are deterministic: the test suite rebuilds them and compares them with the
committed ones, so every number in the chapter comes from a committed run.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

import consensus_tutorial as ct
from consensus_tutorial import comparison
from consensus_tutorial.plots import FONT

HERE = Path(__file__).resolve().parent
# run as a script, this folder is first on sys.path: the run list next door imports normally
from run_cifar10_resnet20 import RUNS, SEED

#: the settings that make "one schedule for all runs" (the seed is not one of them: a few
#: runs are repeated with another seed)
SCHEDULE_KEYS = ("arch", "dataset", "epochs", "batch_size", "lr", "momentum", "weight_decay", "schedule",
                 "limit_train", "limit_test")

BASELINE_WORDS = {"random": "random", "l1": "L1-norm", "bn-polarization": "BN polarization"}

#: the order of the groups in tables and legends
GROUP_ORDER = ("dense", "consensus, channel (b)", "consensus, channel (a)", "consensus, channel (c)",
               "consensus, layer", "random, channel (b)", "L1-norm, channel (b)", "BN polarization, channel (b)")


# ----------------------------------------------------------------------------- reading


def describe(config: Mapping[str, Any]) -> tuple[str, str]:
    """(group, label) of a run from its config: the group names the method and gating
    (points of one group are joined in the plots), the label adds the target rate, and
    the seed where it is not :data:`SEED`."""
    method = config["method"]
    if method == "dense":
        return "dense", "dense"
    if method == "consensus":
        gating = "layer" if config["gating"] == "layer" else f"channel ({config['position']})"
        group = f"consensus, {gating}"
    else:
        group = f"{BASELINE_WORDS.get(method, method)}, channel (b)"
    label = f"{group}, target {config['target_rate']:g}"
    return group, label + (f", seed {config['seed']}" if config["seed"] != SEED else "")


def load_runs(folder: Path) -> dict[str, dict[str, Any]]:
    """{run name: {"metrics", "history", "spec", "group", "label", "repeat"}} for every run
    folder under ``folder`` holding a ``metrics.json``, in the order of :data:`GROUP_ORDER`,
    then by target rate. ``repeat`` is true for a run with another seed than :data:`SEED`."""
    found = {p.parent.name: p.parent for p in folder.glob("*/metrics.json")}
    if not found:
        raise SystemExit(f"error: no run under {folder} (no */metrics.json); train them with "
                         "results/run_cifar10_resnet20.py, or pass --results.")
    runs = {}
    for name in sorted(found):
        path = found[name]
        metrics = json.loads((path / "metrics.json").read_text())
        group, label = describe(metrics["config"])
        runs[name] = {
            "metrics": metrics,
            "history": json.loads((path / "history.json").read_text()),
            "spec": ct.load_subnetwork(path / "subnetwork.pt").spec,
            "group": group, "label": label, "repeat": metrics["config"]["seed"] != SEED,
        }

    def place(name: str) -> tuple:
        group = runs[name]["group"]
        rank = GROUP_ORDER.index(group) if group in GROUP_ORDER else len(GROUP_ORDER)
        return rank, group, runs[name]["metrics"]["config"]["target_rate"], name

    return {name: runs[name] for name in sorted(runs, key=place)}


def first_seed(runs: Mapping[str, dict]) -> dict[str, dict]:
    """The runs with seed :data:`SEED`: one point per setting in the figures."""
    return {name: run for name, run in runs.items() if not run["repeat"]}


def read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


# ----------------------------------------------------------------------------- tables


def runs_table(runs: Mapping[str, dict], measured: dict | None) -> str:
    dense = runs.get("dense")
    dense_top1 = dense["metrics"]["top1_extracted"] if dense else None
    rows = []
    for name, run in runs.items():
        m = run["metrics"]
        extra: dict[str, Any] = {}
        if measured and name in measured["runs"]:
            r = measured["runs"][name]
            extra = {f"latency ratio, batch {b}": round(r[f"latency_ratio_b{b}"], 2)
                     for b in measured["timing"]["batch_sizes"]}
        extra["train time (min)"] = round(m["train_time_s"] / 60, 1)
        row = comparison.run_row(name, m, dense_top1=dense_top1, **extra)
        row["disagreement (%)"] = None if m.get("disagreement") is None else round(100 * m["disagreement"], 2)
        rows.append(row)
    return comparison.format_table(rows)


def seeds_table(runs: Mapping[str, dict]) -> str:
    """One row per run repeated with another seed: top-1 and FLOPs reduction per seed."""
    rows = []
    for name, run in runs.items():
        base = re.sub(r"-seed\d+$", "", name)
        if not run["repeat"] or base not in runs:
            continue
        pair = (runs[base]["metrics"], run["metrics"])
        rows.append({
            "setting": base, "seeds": ", ".join(str(m["config"]["seed"]) for m in pair),
            "top-1 extracted (%)": ", ".join(f"{m['top1_extracted']:.2f}" for m in pair),
            "FLOPs reduction (%)": ", ".join(f"{100 * m['pruning_rate_flops']:.1f}" for m in pair),
            "top-1 difference (points)": f"{pair[1]['top1_extracted'] - pair[0]['top1_extracted']:+.2f}",
        })
    return comparison.format_table(rows)


def latency_table(runs: Mapping[str, dict], measured: dict) -> str:
    sizes = measured["timing"]["batch_sizes"]
    rows = []
    for name in runs:  # the order of the other tables
        if name not in measured["runs"]:
            continue
        r = measured["runs"][name]
        row = {"run": name, "FLOPs ratio": round(r["flops"] / r["flops_dense"], 3),
               "FLOPs (M), re-counted": round(r["flops"] / 1e6, 2),
               "FLOPs (M), metrics.json": round(runs[name]["metrics"]["flops_extracted"] / 1e6, 2)}
        for b in sizes:
            row[f"latency (ms), batch {b}"] = round(1e3 * r[f"latency_b{b}_s"], 2)
            row[f"latency ratio, batch {b}"] = round(r[f"latency_ratio_b{b}"], 3)
        row["top-1 re-evaluated (%)"] = r.get("top1_extracted")
        row["top-1 in metrics.json (%)"] = r["recorded_top1_extracted"]
        rows.append(row)
    return comparison.format_table(rows)


def machine_line(machine: Mapping[str, str]) -> str:
    return "; ".join(f"{k} {v}" for k, v in machine.items())


def inference_table(bench: dict) -> str:
    rows = []
    for r in bench["rows"]:
        row = {"model": r["model"], "gating (share of units closed)": r["gating"],
               "FLOPs ratio": round(r["flops"], 3), "params ratio": round(r["params"], 3)}
        row |= {f"latency ratio, batch {b}": round(r[f"lat{b}"], 3) for b in bench["batch_sizes"]}
        rows.append(row)
    return comparison.format_table(rows)


def block_latency_table(bench: dict) -> str:
    rows = []
    for r in bench["rows"]:
        row = {"block": r["block"], "input (C×H×W)": r["input"].replace("x", "×"),
               "MACs per image (M)": round(r["macs"] / 1e6, 2), "share of MACs (%)": round(100 * r["macs_share"], 1)}
        for b in bench["batch_sizes"]:
            row[f"latency (ms), batch {b}"] = round(1e3 * r[f"latency_b{b}_s"], 3 if b == 1 else 1)
            row[f"share of time (%), batch {b}"] = round(100 * r[f"latency_share_b{b}"], 1)
        rows.append(row)
    return comparison.format_table(rows)


def repeatability_table(bench: dict) -> str:
    rows = [{"run": r["run"], "batch": r["batch"],
             "ratio in each process": ", ".join(f"{x:.2f}" for x in r["ratios"]),
             "min": f"{r['min']:.2f}", "median": f"{r['median']:.2f}", "max": f"{r['max']:.2f}",
             "max − min": f"{r['max'] - r['min']:.2f}"} for r in bench["rows"]]
    return comparison.format_table(rows)


def training_table(bench: dict) -> str:
    columns = {"train_s": "training pass, median wall s", "train_cpu_s": "training pass, median CPU s",
               "epoch_s": "whole epoch (fit), median wall s"}

    def median(mode: str, key: str) -> float | None:
        return statistics.median(bench[mode][key]) if bench[mode][key] else None

    rows = [{"mode": mode, "epochs timed": len(bench[mode]["train_s"]),
             **{words: round(median(mode, key), 2) if median(mode, key) else None for key, words in columns.items()}}
            for mode in ("dense", "gated")]
    ratio = {"mode": "gated / dense", "epochs timed": None}
    for key, words in columns.items():
        gated, dense = median("gated", key), median("dense", key)
        ratio[words] = round(gated / dense, 3) if gated and dense else None
    return comparison.format_table(rows + [ratio])


def input_pipeline_table(bench: dict) -> str:
    rows = [{"per batch of " + str(bench["batch_size"]): words,
             "wall ms": round(1e3 * bench["per_batch"][key]["wall_s"], 1),
             "CPU ms": round(1e3 * bench["per_batch"][key]["cpu_s"], 1)}
            for key, words in (("pipeline", "input pipeline (BatchLoader: crop, flip, normalise)"),
                               ("step", "training step (dense ResNet-20)"))]
    decode = bench["decode"]
    share = bench["share"]
    return (comparison.format_table(rows) + "\n\n"
            f"The input pipeline takes {100 * share['cpu_s']:.1f}% of pipeline + step on the CPU clock "
            f"({100 * share['wall_s']:.1f}% on the wall clock). "
            f"Decoding all {decode['images']:,} training images once, at the start of a run: "
            f"{decode['wall_s']:.1f} s wall, {decode['cpu_s']:.1f} s CPU.")


def commands_block(runs: Mapping[str, dict]) -> str:
    lines = ["```bash"]
    for name, run in runs.items():
        lines.append(f"# {name}")
        lines.append(run["metrics"]["command"])
    lines.append("```")
    return "\n".join(lines)


def summary(runs: Mapping[str, dict], measured: dict | None) -> str:
    """Generated sentences for the chapter: what was run and the headline numbers."""
    missing = [n for n in RUNS if n not in runs]
    cfg = next(iter(runs.values()))["metrics"]["config"]
    lines = [f"- **Runs:** {len(runs)} of the {len(RUNS)} planned runs are recorded"
             + (f"; not yet run: {', '.join(missing)}." if missing else ".")]
    schedules = {tuple((k, run["metrics"]["config"][k]) for k in SCHEDULE_KEYS) for run in runs.values()}
    if len(schedules) > 1:
        lines.append("- **Schedules differ between runs** in " + ", ".join(
            k for k in SCHEDULE_KEYS if len({run["metrics"]["config"][k] for run in runs.values()}) > 1)
            + ": compare with care.")
    train = "all 50,000" if cfg["limit_train"] is None else f"{cfg['limit_train']:,}"
    test = "all 10,000" if cfg["limit_test"] is None else f"{cfg['limit_test']:,}"
    lines.append(f"- **Schedule{', the same for every run' if len(schedules) == 1 else ' of the first run'}:** "
                 f"{cfg['arch']}, {cfg['dataset']}, {cfg['epochs']} epochs, batch {cfg['batch_size']}, "
                 f"{cfg['schedule']} schedule peaking at lr {cfg['lr']}, weight decay {cfg['weight_decay']}, "
                 f"{train} train and {test} test images.")
    repeats = [n for n, r in runs.items() if r["repeat"]]
    lines.append(f"- **Seeds:** seed {SEED} for every run"
                 + (f", and {len(repeats)} repeated with another seed ({', '.join(repeats)}): the seed table "
                    "shows how far apart two seeds of one setting land." if repeats else
                    ". One seed per setting, so differences of about a point are within noise."))
    if "dense" in runs:
        d = runs["dense"]["metrics"]
        lines.append(f"- **Dense ResNet-20:** top-1 {d['top1_extracted']:.2f}%, "
                     f"{d['flops_dense'] / 1e6:.2f} M MACs per image, {d['params_dense'] / 1e6:.3f} M parameters.")
        at_half = [(n, r) for n, r in first_seed(runs).items()
                   if n != "dense" and r["metrics"]["config"]["target_rate"] == 0.5]
        if at_half:
            parts = [f"{r['group']} {r['metrics']['top1_extracted']:.2f}% "
                     f"({100 * r['metrics']['pruning_rate_flops']:.1f}% of FLOPs removed)"
                     for n, r in sorted(at_half, key=lambda x: -x[1]["metrics"]["top1_extracted"])]
            lines.append(f"- **At target rate 0.5**, seed {SEED}, best first: " + "; ".join(parts) + ".")
    gated = [(n, r) for n, r in runs.items() if r["metrics"].get("disagreement") is not None
             and r["metrics"]["method"] == "consensus"]
    if gated:
        worst = max(gated, key=lambda x: x[1]["metrics"]["disagreement"])
        gap = max(gated, key=lambda x: abs(x[1]["metrics"]["top1_gated"] - x[1]["metrics"]["top1_extracted"]))
        lines.append(f"- **Consensus:** in the last epoch, live gate decisions on the test set differed from "
                     f"the frozen mask in at most {100 * worst[1]['metrics']['disagreement']:.2f}% of decisions "
                     f"({worst[0]}); the largest gap between live-gate and extracted top-1 is "
                     f"{abs(gap[1]['metrics']['top1_gated'] - gap[1]['metrics']['top1_extracted']):.2f} points "
                     f"({gap[0]}).")
    if measured:
        agree = [n for n, r in measured["runs"].items() if r.get("top1_extracted") == r["recorded_top1_extracted"]]
        checked = [n for n, r in measured["runs"].items() if "top1_extracted" in r]
        if checked:
            lines.append(f"- **Re-evaluation:** {len(agree)} of {len(checked)} extracted networks, loaded from "
                         "`subnetwork.pt` alone and evaluated on the full test set, reproduce the top-1 of "
                         "their `metrics.json` to two decimals.")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- figures


def _points(runs: Mapping[str, dict]) -> list[dict]:
    return [{"label": r["label"], "group": r["group"], "top1": r["metrics"]["top1_extracted"],
             "flops_reduction": 100 * r["metrics"]["pruning_rate_flops"]}
            for n, r in runs.items() if r["group"] != "dense"]


def _rate(run: Mapping[str, Any]) -> float:
    return run["metrics"]["config"]["target_rate"]


def _position(run: Mapping[str, Any]) -> str:
    """"layer", or the channel position "a" | "b" | "c" of a consensus run."""
    config = run["metrics"]["config"]
    return "layer" if config["gating"] == "layer" else config["position"]


def consensus_per_gating(runs: Mapping[str, dict]) -> list[dict]:
    """One consensus run per gating (layer, channel a, b, c), in table order: the one whose
    target rate is nearest 0.5 (position a cannot reach 0.5 on ResNet-20, so its run is
    at 0.3)."""
    chosen: dict[str, dict] = {}
    for run in runs.values():
        if run["metrics"]["method"] != "consensus":
            continue
        best = chosen.get(run["group"])
        if best is None or abs(_rate(run) - 0.5) < abs(_rate(best) - 0.5):
            chosen[run["group"]] = run
    return list(chosen.values())


def plot_top1_per_epoch(runs: Mapping[str, dict]):
    """Test top-1 (live gates for gated runs) per epoch, one line per run."""
    with plt.rc_context(FONT):
        fig, ax = plt.subplots(figsize=(8.5, 5.0), layout="constrained")
    for i, (name, run) in enumerate(runs.items()):
        h = run["history"]
        ax.plot([e["epoch"] for e in h], [e["top1_gated"] for e in h], marker=comparison.MARKERS[i % len(comparison.MARKERS)],
                color=plt.get_cmap("tab20")(i % 20), label=name, linewidth=1.3, markersize=5)
    ax.set(title="Test top-1 after each epoch (live gates for gated runs)", xlabel="epoch", ylabel="top-1 (%)")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    ax.grid(alpha=0.3)
    return fig


def _family(gating_label: str) -> str:
    """ "channel (b) 30%" -> "channel (b)", "layer 50% of blocks" -> "layer"."""
    return re.sub(r"\s*\d+%.*$", "", gating_label)


def plot_inference_benchmark(bench: dict):
    """Latency ratio against FLOPs ratio (extracted / dense) for the benchmark's rows."""
    sizes = bench["batch_sizes"]
    fig, axes = comparison.subplots(len(sizes), panel=(6.4, 4.6), stack=True)
    models = sorted({r["model"] for r in bench["rows"]})
    families = list(dict.fromkeys(_family(r["gating"]) for r in bench["rows"]))
    for ax, b in zip(axes, sizes):
        for j, model in enumerate(models):
            for k, family in enumerate(families):
                rows = [r for r in bench["rows"] if r["model"] == model and _family(r["gating"]) == family]
                ax.scatter([r["flops"] for r in rows], [r[f"lat{b}"] for r in rows], s=60,
                           marker=comparison.MARKERS[j], color=plt.get_cmap("tab10")(k),
                           label=f"{model}, {family}", zorder=3, alpha=0.85)
        ax.plot([0, 1.05], [0, 1.05], color="0.5", linestyle=":", label="latency ratio = FLOPs ratio")
        ax.set(title=f"batch {b}", xlabel="FLOPs ratio (extracted / dense)",
               ylabel="latency ratio (extracted / dense)", xlim=(0, 1.1), ylim=(0, 1.45))
        ax.legend(loc="upper left", fontsize=7, ncol=2)
        ax.grid(alpha=0.3)
    fig.suptitle(f"Inference benchmark: random masks, {bench['machine']['device']}, "
                 f"{bench['machine']['torch threads']} torch thread(s), {bench.get('clock', 'wall')} clock")
    return fig


def build(results: Path, out: Path) -> list[Path]:
    """Write every table and figure of the results chapter to ``out``; return the paths."""
    runs = load_runs(results / "cifar10-resnet20")
    measured = read_json(results / "cifar10-resnet20" / "measured.json")
    inference = read_json(results / "benchmarks" / "inference.json")
    training = read_json(results / "benchmarks" / "training_overhead.json")
    pipeline = read_json(results / "benchmarks" / "input_pipeline.json")
    blocks = read_json(results / "benchmarks" / "block_latency.json")
    repeatability = read_json(results / "benchmarks" / "latency_repeatability.json")
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []

    def text(name: str, body: str) -> None:
        (out / name).write_text(body.rstrip("\n") + "\n")
        written.append(out / name)

    def figure(name: str, fig) -> None:
        fig.savefig(out / name, dpi=110, bbox_inches="tight", metadata={"Software": None})
        plt.close(fig)
        written.append(out / name)

    text("summary.md", summary(runs, measured))
    text("runs.md", runs_table(runs, measured))
    if any(r["repeat"] for r in runs.values()):
        text("seeds.md", seeds_table(runs))
    text("published.md", comparison.format_table(comparison.published_rows("cifar10", "ResNet-56")))
    text("commands.md", commands_block(runs))
    dense_top1 = runs["dense"]["metrics"]["top1_extracted"] if "dense" in runs else None
    setting = f"ResNet-20 / CIFAR-10, {next(iter(runs.values()))['metrics']['epochs']} epochs on a CPU"
    main = first_seed(runs)
    points = _points(main)
    if points:
        figure("top1_vs_flops.png", comparison.plot_top1_vs_flops(
            points, dense_top1=dense_top1, published_results=comparison.published("cifar10", "ResNet-56"),
            our_setting=setting, stack=True))
        if dense_top1 is not None:
            figure("drop_vs_flops.png", comparison.plot_drop_vs_flops(
                points, dense_top1=dense_top1, published_results=comparison.published("cifar10", "ResNet-56"),
                our_setting=setting, stack=True))
    one_per_gating = consensus_per_gating(main)
    if one_per_gating:
        figure("kept_widths_gatings.png", comparison.plot_kept_widths(
            {r["label"]: r["spec"] for r in one_per_gating}, {r["label"]: _position(r) for r in one_per_gating},
            ncols=1, title="Kept units per block, one consensus run per gating"))
    at_rates = [r for r in main.values() if r["group"] == "consensus, channel (b)"]
    if len(at_rates) > 1:
        figure("kept_widths_rates.png", comparison.plot_kept_widths(
            {r["label"]: r["spec"] for r in at_rates}, {r["label"]: "b" for r in at_rates}, ncols=1,
            title="Kept hidden channels per block, consensus at position b, every target rate"))
    at_b = {r["label"]: r["spec"] for r in main.values() if r["group"].endswith("channel (b)")
            and r["metrics"]["config"]["target_rate"] == 0.5}
    if at_b:
        figure("kept_widths_methods.png", comparison.plot_kept_widths(
            at_b, {k: "b" for k in at_b}, ncols=1,
            title="Kept hidden channels per block (position b), target 0.5"))
    figure("top1_per_epoch.png", plot_top1_per_epoch(runs))
    if "channel-b-0.5" in runs:
        r = runs["channel-b-0.5"]
        figure("training_curves_channel_b.png", comparison.plot_training_curves(
            r["history"], flops_dense=r["metrics"]["flops_dense"], title=f"Training history: {r['label']}",
            stack=True))
    if measured:
        rows = [{"label": n, "flops": r["flops"], **{k: v for k, v in r.items() if k.startswith("latency_b")}}
                for n, r in ((n, measured["runs"][n]) for n in runs if n in measured["runs"])]
        sizes = measured["timing"]["batch_sizes"]
        figure("latency_vs_flops.png", comparison.plot_latency_vs_flops(
            rows, latency_keys={f"latency_b{b}_s": f"batch {b}" for b in sizes},
            title="Measured latency of the extracted networks against their FLOPs", stack=True,
            device=f"{measured['machine']['device']}, {measured['machine']['torch threads']} torch thread(s), "
                   f"{measured['timing'].get('clock', 'wall')} clock"))
        text("latency.md", latency_table(runs, measured))
        text("latency_machine.md", f"Measured with `{measured['command']}` on: {machine_line(measured['machine'])}.")
    if inference:
        text("benchmark_inference.md", inference_table(inference))
        text("benchmark_inference_machine.md",
             f"Measured with `{inference['command']}` on: {machine_line(inference['machine'])}.")
        figure("benchmark_inference.png", plot_inference_benchmark(inference))
    if blocks:
        text("benchmark_blocks.md", block_latency_table(blocks))
        text("benchmark_blocks_machine.md",
             f"Measured with `{blocks['command']}` ({blocks['arch']}, dense, {blocks['clock']} clock) on: "
             f"{machine_line(blocks['machine'])}.")
    if repeatability:
        text("benchmark_repeatability.md", repeatability_table(repeatability))
        text("benchmark_repeatability_machine.md",
             f"Measured with `{repeatability['command']}` ({repeatability['processes']} processes per run, "
             f"{repeatability['rounds']} rounds of {repeatability['repeats']} passes each, "
             f"{repeatability['clock']} clock) on: {machine_line(repeatability['machine'])}.")
    if training:
        text("benchmark_training.md", training_table(training))
        text("benchmark_training_machine.md",
             f"Measured with `{training['command']}` ({training['arch']}, {training['train_images']} train "
             f"images per epoch, batch {training['batch_size']}) on: {machine_line(training['machine'])}.")
    if pipeline:
        text("benchmark_input.md", input_pipeline_table(pipeline))
        text("benchmark_input_machine.md",
             f"Measured with `{pipeline['command']}` on: {machine_line(pipeline['machine'])}.")
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", type=Path, default=HERE, help="the results folder to read")
    parser.add_argument("--out", type=Path, default=HERE / "report", help="where to write tables and figures")
    args = parser.parse_args(argv)
    written = build(args.results, args.out)
    print(f"wrote {len(written)} files to {args.out}: {', '.join(p.name for p in written)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
