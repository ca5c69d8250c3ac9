"""Where a gate sits in a residual block: one table that the model, the extraction and the
comparison helpers all read.

A block computes ``y = relu(shortcut(x) + bn2(conv2(h)))`` with ``h = relu(bn1(conv1(x)))``.
It has three points a gate can read and scale: ``"input"`` (x, conv1's input; the
shortcut still sees all of it), ``"hidden"`` (h) and ``"output"`` (bn2's output, before
the residual add). A position names the point its gate reads and the point it scales:

======== ====== ======= ======= ====================================================
position reads  scales  units   the extraction cuts
======== ====== ======= ======= ====================================================
layer    input  output  1       the whole branch of a closed block
a        input  input   C_in    conv1's input channels
b        hidden hidden  C_out   conv1's output channels (and conv2's inputs)
c        output output  C_out   conv2's output channels
======== ====== ======= ======= ====================================================

A new position is one :func:`register_position` call here (with the spec fields its cut
sets, which :mod:`~consensus_tutorial.extraction` turns into weights).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ._checks import check_choice

#: the points of a block a gate can read or scale, in the order the forward pass meets them
POINTS = ("input", "hidden", "output")


@dataclass(frozen=True)
class GatePosition:
    """One gate position.

    Attributes:
        reads, scales: the points (``POINTS``) whose tensor the gate reads and multiplies.
        units: ``(in_channels, out_channels) -> number of gate units``.
        unit: what one unit is, "channel" or "block".
        cut: ``(block spec, kept unit indices, units) -> None``: marks in the spec what a
            mask keeping ``kept`` removes (``in_index``, ``mid_channels``, ``out_index``,
            ``branch``; see ``consensus_tutorial.extraction.block_spec``).
        count: ``block spec -> (kept, total)`` units, read back from a cut spec.
        words: what the kept units are, for plot axes.
    """

    reads: str
    scales: str
    units: Callable[[int, int], int]
    unit: str
    cut: Callable[[dict, list[int], int], None]
    count: Callable[[Mapping[str, Any]], tuple[int, int]]
    words: str


#: name -> position; "layer" is the position of layer gating, the others of channel gating
POSITIONS: dict[str, GatePosition] = {}


def register_position(name: str, position: GatePosition) -> GatePosition:
    """Make ``name`` a gate position of the models, the extraction and the plots."""
    if name in POSITIONS:
        raise ValueError(f"a gate position called {name!r} is already registered.")
    if position.reads not in POINTS or position.scales not in POINTS:
        raise ValueError(f"reads and scales must be points of {POINTS}; got {position.reads!r}, {position.scales!r}.")
    POSITIONS[name] = position
    return position


def channel_positions() -> tuple[str, ...]:
    """The positions of channel gating (every position whose unit is a channel)."""
    return tuple(n for n, p in POSITIONS.items() if p.unit == "channel")


def position_name(gating: str | None, position: str) -> str | None:
    """The table's name for a gating and channel position: "layer", the position, or None."""
    if gating is None:
        return None
    if gating == "layer":
        return "layer"
    check_choice("position", position, channel_positions())
    return position


# ----------------------------------------------------------------------------- the four positions


def _cut_layer(spec: dict, kept: list[int], units: int) -> None:
    if not kept:
        spec.update(branch="none", mid_channels=0)


def _count_layer(block: Mapping[str, Any]) -> tuple[int, int]:
    return (0 if block["branch"] == "none" else 1), 1


def _cut_a(spec: dict, kept: list[int], units: int) -> None:
    if len(kept) < units:
        spec["in_index"] = kept
    if not kept:
        spec["branch"] = "const_hidden"


def _count_a(block: Mapping[str, Any]) -> tuple[int, int]:
    total = block["in_channels"]
    if block["branch"] == "const_hidden":
        return 0, total
    return (total if block["in_index"] is None else len(block["in_index"])), total


def _cut_b(spec: dict, kept: list[int], units: int) -> None:
    spec["mid_channels"] = len(kept)  # the extraction keeps the mask's hidden channels
    if not kept:
        spec["branch"] = "bias"


def _count_b(block: Mapping[str, Any]) -> tuple[int, int]:
    return (0 if block["branch"] in ("bias", "none") else block["mid_channels"]), block["out_channels"]


def _cut_c(spec: dict, kept: list[int], units: int) -> None:
    if len(kept) < units:
        spec["out_index"] = kept
    if not kept:
        spec.update(branch="none", mid_channels=0)


def _count_c(block: Mapping[str, Any]) -> tuple[int, int]:
    total = block["out_channels"]
    if block["branch"] == "none":
        return 0, total
    return (total if block["out_index"] is None else len(block["out_index"])), total


register_position("layer", GatePosition("input", "output", lambda cin, cout: 1, "block", _cut_layer, _count_layer,
                                        "blocks kept (layer gating)"))
register_position("a", GatePosition("input", "input", lambda cin, cout: cin, "channel", _cut_a, _count_a,
                                    "conv1 input channels kept (position a)"))
register_position("b", GatePosition("hidden", "hidden", lambda cin, cout: cout, "channel", _cut_b, _count_b,
                                    "hidden channels kept (position b)"))
register_position("c", GatePosition("output", "output", lambda cin, cout: cout, "channel", _cut_c, _count_c,
                                    "conv2 output channels kept (position c)"))
