"""Draw the figures that the book's prose pages (not its notebooks) show, into book/figures/::

    python scripts/make_book_figures.py
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

from consensus_tutorial import plots  # noqa: E402
from consensus_tutorial.costs import load_latency_table  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "book" / "figures"
#: the run of two processes the running page draws
TWO_PROCESSES = ROOT / "results" / "distributed" / "cpu-2proc"
#: the latency table the method page draws (benchmarks/latency_table.py wrote it)
LATENCY_TABLE = ROOT / "results" / "benchmarks" / "latency_table_resnet20_fine.json"


def main() -> None:
    OUT.mkdir(exist_ok=True)
    plots.plot_gate_positions().savefig(OUT / "gate_positions.png", dpi=130)
    print(f"wrote {OUT / 'gate_positions.png'}")
    plots.plot_latency_table(load_latency_table(LATENCY_TABLE)).savefig(OUT / "latency_table.png", dpi=130)
    print(f"wrote {OUT / 'latency_table.png'}")
    history = json.loads((TWO_PROCESSES / "history.json").read_text())
    processes = json.loads((TWO_PROCESSES / "metrics.json").read_text())["processes"]
    plots.plot_mask_agreement(history, processes=processes).savefig(OUT / "mask_agreement.png", dpi=130)
    print(f"wrote {OUT / 'mask_agreement.png'}")


if __name__ == "__main__":
    main()
