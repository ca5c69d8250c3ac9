"""Tables and the figure of the seed study (``scripts/run_study.py``), from its run folders
alone: every setting with the mean ± standard deviation of its seeds and every seed's
value; the method against random pruning at half the FLOPs, as a figure with error bars::

    python scripts/study_report.py      # writes results/cifar10-resnet20-v2/report/
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from consensus_tutorial.comparison import group_style  # noqa: E402
from consensus_tutorial.plots import FONT  # noqa: E402
from consensus_tutorial.runset import load_seed_runs  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
FOLDER = ROOT / "results" / "cifar10-resnet20-v2"
DENSE = ROOT / "results" / "cifar10-resnet20" / "dense"  # the same dense run serves both run sets
#: points of different methods at the same FLOPs are drawn this far apart (points of %)
DODGE = {"random": 0.8, "l1": -0.8}
#: setting -> (label in tables, style of METHOD_STYLES)
#: the legend's name of a method style
LEGEND = {"consensus": "consensus, channel (b)", "random": "random channels", "l1": "L1-norm",
          "consensus, layer": "consensus, layer", "random, consensus widths": "random at the consensus widths"}
SETTINGS = {
    "consensus-b-0.5": ("consensus, channel b, 0.5", "consensus"),
    "random-0.5": ("random channels, 0.5", "random"),
    "random-widths-0.5": ("random channels at the consensus widths", "random, consensus widths"),
    "l1-0.5": ("L1-norm, 0.5", "l1"),
    "consensus-b-0.3": ("consensus, channel b, 0.3", "consensus"),
    "consensus-b-0.7": ("consensus, channel b, 0.7", "consensus"),
    "layer-0.5": ("consensus, layer, 0.5", "consensus, layer"),
}


def _mean_sd(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def seeds_table(runs: dict[str, list[dict]]) -> str:
    """One row per setting: seeds, FLOPs removed, parameters, top-1 (mean ± sd and per seed)."""
    lines = ["| setting | seeds | FLOPs removed | params | top-1 extracted | per seed | train time |",
             "|---|---|---|---|---|---|---|"]
    for setting in [s for s in SETTINGS if s in runs]:
        rs = runs[setting]
        top1 = [r["top1_extracted"] for r in rs]
        removed = statistics.mean(r["pruning_rate_flops"] for r in rs)
        params = statistics.mean(r["params_extracted"] for r in rs) / 1e3
        minutes = statistics.mean(r["train_time_s"] for r in rs) / 60
        lines.append(f"| {SETTINGS[setting][0]} | {len(rs)} | {100 * removed:.1f}% | {params:.0f}k | "
                     f"{_mean_sd(top1)} | {', '.join(f'{t:.2f}' for t in top1)} | {minutes:.0f} min |")
    return "\n".join(lines) + "\n"


def settle_table(runs: dict[str, list[dict]]) -> str:
    """The freeze of every consensus run: when, how far the cut moved the mask, and the test
    top-1 with live and with frozen gates just before and after it."""
    lines = ["| run | froze at step (epoch) | why | units the cut changed | top-1 live → frozen | "
             "disagreement | final top-1 gated = extracted |", "|---|---|---|---|---|---|---|"]
    for setting in [s for s in SETTINGS if s in runs]:
        for seed, r in enumerate(runs[setting]):
            st = r.get("settle")
            if not st:
                continue
            cut = "–" if st.get("cut_flips") is None else f"{100 * st['cut_flips']:.1f}%"
            lines.append(f"| {setting}, seed {r['config']['seed']} | {st['step']} ({st['epoch']}) | {st['reason']} | "
                         f"{cut} | {st['top1_live']:.2f} → {st['top1_frozen']:.2f} | "
                         f"{100 * st['disagreement']:.1f}% | {r['top1_gated']:.2f} = {r['top1_extracted']:.2f} |")
    return "\n".join(lines) + "\n"


PLANNED = 12  # the runs of scripts/run_study.py


def _paired(runs: dict[str, list[dict]], a: str, b: str) -> list[float]:
    """Per-seed differences of top-1, setting ``a`` minus setting ``b``, over the seeds both have."""
    by_seed = {s: {r["config"]["seed"]: r["top1_extracted"] for r in runs.get(s, [])} for s in (a, b)}
    return [by_seed[a][k] - by_seed[b][k] for k in sorted(set(by_seed[a]) & set(by_seed[b]))]


def summary(runs: dict[str, list[dict]]) -> str:
    """The page's opening lines, from the runs that exist."""
    done = sum(len(r) for r in runs.values())
    lines = [f"**{done} of the {PLANNED} runs of the seed study are finished**; the tables below show them all."]
    for setting in ("consensus-b-0.5", "random-0.5", "l1-0.5"):
        if setting in runs:
            rs = runs[setting]
            top1 = [r["top1_extracted"] for r in rs]
            removed = 100 * statistics.mean(r["pruning_rate_flops"] for r in rs)
            lines.append(f"- {SETTINGS[setting][0]}: {_mean_sd(top1)} top-1 over {len(rs)} seed(s), "
                         f"{removed:.1f}% of the FLOPs removed.")
    diffs = _paired(runs, "consensus-b-0.5", "random-0.5")
    if diffs:
        lines.append(f"- The consensus network minus random channels, seed by seed: "
                     f"{', '.join(f'{d:+.2f}' for d in diffs)} points (mean {statistics.mean(diffs):+.2f}).")
    return "\n".join(lines) + "\n"


def plot(runs: dict[str, list[dict]], dense_top1: float | None):
    """Top-1 of the extracted network against the share of FLOPs removed, mean and
    standard deviation over seeds (error bars), one colour and marker per method."""
    with plt.rc_context(FONT):
        fig, ax = plt.subplots(figsize=(7.0, 4.2), layout="constrained")
    drawn = set()
    for setting in [s for s in SETTINGS if s in runs]:
        label, style = SETTINGS[setting]
        rs = runs[setting]
        top1 = [r["top1_extracted"] for r in rs]
        x = 100 * statistics.mean(r["pruning_rate_flops"] for r in rs)
        err = statistics.stdev(top1) if len(top1) > 1 else 0.0
        ax.errorbar(x + DODGE.get(style, 0.0), statistics.mean(top1), yerr=err, capsize=4, linestyle="none",
                    markersize=8, markeredgewidth=1.6, label=None if style in drawn else LEGEND[style],
                    **group_style(style, 0))
        drawn.add(style)
    if not runs:
        ax.text(0.5, 0.3, "no finished runs yet", transform=ax.transAxes, ha="center", va="center")
    if dense_top1 is not None:
        ax.axhline(dense_top1, color=group_style("dense", 0)["color"], linestyle=":", linewidth=1, label="dense")
    ax.set_xlim(0, 80)
    ax.set(xlabel="FLOPs removed (%)", ylabel="test top-1 (%), extracted network",
           title="CIFAR-10, ResNet-20, 10 epochs: mean ± sd over seeds")
    ax.grid(alpha=0.3)
    fig.legend(loc="outside lower center", ncol=3)
    return fig


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--folder", type=Path, default=FOLDER)
    args = parser.parse_args(argv)
    if not args.folder.is_dir():
        print(f"error: no folder {args.folder}; run scripts/run_study.py first.", file=sys.stderr)
        return 2
    runs = load_seed_runs(args.folder)  # none finished yet: the report says so
    out = args.folder / "report"
    out.mkdir(exist_ok=True)
    (out / "summary.md").write_text(summary(runs))
    (out / "seeds.md").write_text(seeds_table(runs))
    (out / "settle.md").write_text(settle_table(runs))
    dense = json.loads((DENSE / "metrics.json").read_text())["top1_extracted"] if DENSE.is_dir() else None
    plot(runs, dense).savefig(out / "top1_vs_flops.png", dpi=110)
    print((out / "summary.md").read_text() + "\n" + (out / "seeds.md").read_text() + "\n" + (out / "settle.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
