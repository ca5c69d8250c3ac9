"""Checks shared by the figure tests: what a reader at the book's text width would notice."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure


def _data_points(ax) -> np.ndarray:
    """(N, 2) display coordinates of every line vertex and bar top of one panel."""
    points = [line.get_transform().transform(line.get_xydata()) for line in ax.lines if len(line.get_xydata())]
    for patch in ax.patches:
        box = patch.get_window_extent()
        points.append(np.array([[box.x0, box.y1], [box.x1, box.y1], [(box.x0 + box.x1) / 2, box.y1]]))
    return np.concatenate(points) if points else np.empty((0, 2))


def legends_clear_of_data(fig: Figure) -> None:
    """No legend box covers a plotted point or bar top of any panel."""
    fig.canvas.draw()
    legends = [ax.get_legend() for ax in fig.axes if ax.get_legend()] + list(fig.legends)
    for legend in legends:
        box = legend.get_window_extent()
        for ax in fig.axes:
            inside = [p for p in _data_points(ax) if box.x0 < p[0] < box.x1 and box.y0 < p[1] < box.y1]
            assert not inside, f"a legend ({[t.get_text() for t in legend.get_texts()][:3]}...) covers data"
