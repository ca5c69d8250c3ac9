"""Draw the figures that the book's prose pages (not its notebooks) show, into book/figures/::

    python scripts/make_book_figures.py
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

from consensus_tutorial import plots  # noqa: E402

OUT = Path(__file__).resolve().parent.parent / "book" / "figures"


def main() -> None:
    OUT.mkdir(exist_ok=True)
    plots.plot_gate_positions().savefig(OUT / "gate_positions.png", dpi=130)
    print(f"wrote {OUT / 'gate_positions.png'}")


if __name__ == "__main__":
    main()
