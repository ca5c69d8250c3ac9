"""The table of the method screen (``scripts/run_screen.py``), from its run folders alone.

One row per variant: the share of FLOPs removed and the parameters kept (means over the
seeds), the extracted network's top-1 as mean ± standard deviation with every seed's
value, and the step at which the gates froze (and why); a second table says what each
variant changes and which widths its seed-0 run kept::

    python scripts/screen_report.py    # writes results/screening/screen.md and screen_variants.md
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections import defaultdict
from pathlib import Path

from consensus_tutorial.runset import load_seed_runs

ROOT = Path(__file__).resolve().parent.parent
FOLDER = ROOT / "results" / "screening"
#: what each variant changes, in the words of the table
DESCRIPTIONS = {
    "dense": "dense network (no pruning)",
    "random": "random channels, the same share in every layer",
    "live": "consensus, gates live to the end (the first default)",
    "freeze": "consensus, one global budget, freeze once settled",
    "freeze-uniform": "consensus, the same share per layer, freeze once settled",
    "freeze-uniform-late": "as freeze-uniform, the target acting after 10% of the steps",
    "freeze-floor25": "consensus, global budget with a 25% floor per layer, freeze",
    "freeze-costlr": "consensus, gate learning rate scaled by unit cost, freeze",
    "sgd-floor25": "consensus, gates on SGD (input weights at 0.1x), 25% floor, freeze",
    "random-widths": "random channels at the widths the freeze run kept",
    "random-widths-costlr": "random channels at the widths the freeze-costlr run kept",
    "random-widths-sgd": "random channels at the widths the sgd-floor25 run kept",
}


def _stage_widths(kept: dict[str, int]) -> str:
    stages: dict[str, list[int]] = defaultdict(list)
    for name, k in kept.items():
        stages[name.split(".")[1]].append(k)
    return " \\| ".join(",".join(str(k) for k in ks) for _, ks in sorted(stages.items()))


def row(variant: str, runs: list[dict]) -> str:
    top1 = [r["top1_extracted"] for r in runs]
    spread = statistics.stdev(top1) if len(top1) > 1 else 0.0
    removed = statistics.mean(r["pruning_rate_flops"] for r in runs)
    params = statistics.mean(r["params_extracted"] for r in runs) / 1000
    settles = [r["settle"] for r in runs if r.get("settle")]
    frozen = "–"
    if settles:
        reasons = sorted({st["reason"] for st in settles})
        frozen = f"{statistics.mean(st['step'] for st in settles):.0f} ({', '.join(reasons)})"
    seeds = ", ".join(f"{t:.2f}" for t in top1)
    return (f"| {variant} | {100 * removed:.1f}% | {params:.0f}k | {statistics.mean(top1):.2f} ± {spread:.2f} | "
            f"{seeds} | {frozen} |")


def _order(runs: dict[str, list[dict]]) -> list[str]:
    return [v for v in DESCRIPTIONS if v in runs] + sorted(set(runs) - set(DESCRIPTIONS))


def table(runs: dict[str, list[dict]]) -> str:
    """The numbers: one row per variant."""
    lines = ["| variant | FLOPs removed | params | top-1 (mean ± sd) | per seed | gates froze at step |",
             "|---|---|---|---|---|---|"]
    return "\n".join(lines + [row(v, runs[v]) for v in _order(runs)]) + "\n"


def variants_table(runs: dict[str, list[dict]]) -> str:
    """What each variant changes, and the widths its seed-0 run kept."""
    lines = ["| variant | what changes | kept widths, seed 0 (stage 1 \\| 2 \\| 3) |", "|---|---|---|"]
    for v in _order(runs):
        widths = _stage_widths(runs[v][0]["kept_units"]) if runs[v][0].get("kept_units") else "all"
        lines.append(f"| {v} | {DESCRIPTIONS.get(v, '')} | {widths} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--folder", type=Path, default=FOLDER)
    args = parser.parse_args(argv)
    runs = load_seed_runs(args.folder)
    if not runs:
        print(f"error: no finished screening runs in {args.folder}; run scripts/run_screen.py first.",
              file=sys.stderr)
        return 2
    out = args.folder / "screen.md"
    out.write_text(table(runs))
    (args.folder / "screen_variants.md").write_text(variants_table(runs))
    print(out.read_text() + "\n" + variants_table(runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
