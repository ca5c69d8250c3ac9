"""Comparing runs: published reference numbers, run tables and comparison plots.

* :data:`PUBLISHED`: results of other pruning papers on CIFAR ResNet-56, as each paper
  reports them, each with its source. They come from *full* training schedules on
  ResNet-56; the book's own points come from small CPU runs, so only the *drop* against
  each paper's own dense baseline is comparable, never the absolute accuracy.
* :func:`run_row`, :func:`table`, :func:`format_table`: one row of numbers per run (the
  metrics that :func:`consensus_tutorial.training.run` returns), and a table of rows
  (HTML in a notebook, Markdown as text).
* :func:`kept_widths`, :func:`block_table`: where a sub-network spends its budget, read
  from a sub-network spec (:func:`~consensus_tutorial.subnetwork_spec`, or
  ``PrunedResNet.spec``): kept units per block, dropped blocks, FLOPs per block.
* Plots (each returns a :class:`~matplotlib.figure.Figure` with a title, labelled axes
  and a legend): :func:`plot_top1_vs_flops`, :func:`plot_drop_vs_flops` (the manner of
  the paper's Figures 2 and 3, with the published points in a panel of their own,
  labelled "published"), :func:`plot_kept_widths`, :func:`plot_block_flops`,
  :func:`plot_latency_vs_flops` and :func:`plot_training_curves`.

FLOPs everywhere are multiply-accumulates of the convolutions and linear layers per image,
as in :mod:`consensus_tutorial.flops`.
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ._checks import check_choice
from .flops import block_flops
from .positions import POSITIONS
from .plots import COLUMN_WIDTH, FONT, STAGE_COLORS

FLOPS_NOTE = "FLOPs: multiply-accumulates of conv + linear layers per image"

# ----------------------------------------------------------------------------- published numbers


@dataclass(frozen=True)
class PublishedResult:
    """One published pruning result: a paper's dense baseline and pruned top-1 (percent)
    and the share of FLOPs its pruned network removes (0..1)."""

    method: str
    source: str
    network: str
    dataset: str
    baseline_top1: float | None
    pruned_top1: float
    flops_reduction: float

    @property
    def drop(self) -> float | None:
        """The top-1 drop in points, baseline minus pruned (negative when the pruned network is better)."""
        if self.baseline_top1 is None:
            return None
        return round(self.baseline_top1 - self.pruned_top1, 2)


#: Where the numbers below were taken from (each entry names its paper).
PUBLISHED_SOURCE = "the papers named in each entry (their own tables)"

#: Published results on CIFAR ResNet-56 (full training schedules). Baselines differ
#: between papers: compare drops, not absolute accuracies.
PUBLISHED: tuple[PublishedResult, ...] = (
    PublishedResult("Zhuang et al. (polarization)",
                    "Zhuang et al., Neuron-level Structured Pruning using Polarization Regularizer, NeurIPS 2020",
                    "ResNet-56", "cifar10", 93.80, 93.83, 0.47),
    PublishedResult("Zhuang et al. (polarization)",
                    "Zhuang et al., Neuron-level Structured Pruning using Polarization Regularizer, NeurIPS 2020",
                    "ResNet-56", "cifar10", 93.80, 92.63, 0.71),
    PublishedResult("Zhuang et al. (polarization)",
                    "Zhuang et al., Neuron-level Structured Pruning using Polarization Regularizer, NeurIPS 2020",
                    "ResNet-56", "cifar100", 72.49, 72.46, 0.25),
    PublishedResult("Network Slimming",
                    "Liu et al., Learning Efficient Convolutional Networks through Network Slimming, ICCV 2017",
                    "ResNet-56", "cifar10", 93.80, 93.27, 0.48),
    PublishedResult("SFP",
                    "He et al., Soft Filter Pruning for Accelerating Deep CNNs, IJCAI 2018",
                    "ResNet-56", "cifar10", 93.59, 93.35, 0.51),
    PublishedResult("FPGM",
                    "He et al., Filter Pruning via Geometric Median, CVPR 2019",
                    "ResNet-56", "cifar10", 93.59, 93.49, 0.53),
    PublishedResult("HRank",
                    "Lin et al., HRank: Filter Pruning using High-Rank Feature Map, CVPR 2020",
                    "ResNet-56", "cifar10", 93.26, 93.17, 0.50),
    PublishedResult("DCP",
                    "Zhuang et al., Discrimination-aware Channel Pruning, NeurIPS 2018",
                    "ResNet-56", "cifar10", 93.80, 93.49, 0.50),
    PublishedResult("Gate Decorator",
                    "You et al., Gate Decorator: Global Filter Pruning, NeurIPS 2019",
                    "ResNet-56", "cifar10", None, 93.15, 0.70),
)

#: Reference sizes of the dense CIFAR ResNets (He et al. 2016, option-A shortcuts).
REFERENCE_MODELS: dict[str, dict[str, float | None]] = {
    "resnet56": {"params": 0.85e6, "flops": 125.49e6},
    "resnet20": {"params": 0.27e6, "flops": None},
}

#: What the source paper (Zhi et al., arXiv 2302.10798) states about its own results; its
#: tables are not available to this project, so there are no points to plot for it.
PAPER_HEADLINE = (
    "about 50% of connections removed with < 1% top-1 drop; FLOPs reduced by roughly "
    "14-22% for layer and channel pruning with the drop often within 3% (Zhi et al., "
    "arXiv 2302.10798)"
)


def published(dataset: str | None = "cifar10", network: str | None = "ResNet-56") -> list[PublishedResult]:
    """The entries of :data:`PUBLISHED` for ``dataset`` and ``network`` (None: any)."""
    return [r for r in PUBLISHED
            if (dataset is None or r.dataset == dataset) and (network is None or r.network == network)]


def _two(value: float | None) -> str | None:
    return None if value is None else f"{value:.2f}"


def published_rows(dataset: str | None = "cifar10", network: str | None = "ResNet-56") -> list[dict]:
    """:func:`published` as table rows for :func:`format_table`: top-1 and drop as text with
    two decimals, as the papers print them; FLOPs reduction in percent."""
    rows = []
    for r in published(dataset, network):
        rows.append({
            "method (published)": r.method, "network": r.network, "dataset": r.dataset,
            "baseline top-1 (%)": _two(r.baseline_top1), "pruned top-1 (%)": _two(r.pruned_top1),
            "top-1 drop (points)": _two(r.drop), "FLOPs reduction (%)": round(100 * r.flops_reduction, 1),
            "source": r.source,
        })
    return rows


# ----------------------------------------------------------------------------- run tables


def run_row(label: str, metrics: Mapping[str, Any], *, dense_top1: float | None = None,
            **extra: Any) -> dict[str, Any]:
    """One table row from the metrics of :func:`consensus_tutorial.training.run`.

    Columns: run, top-1 with live gates and of the extracted network (percent), top-1 drop
    against ``dense_top1`` (points, if given), FLOPs of the extracted network (M MACs per
    image), FLOPs reduction (percent), parameters (M), then ``extra`` columns as given
    (e.g. a measured latency).
    """
    row: dict[str, Any] = {"run": label}
    row["top-1 gated (%)"] = metrics.get("top1_gated")
    row["top-1 extracted (%)"] = metrics["top1_extracted"]
    if dense_top1 is not None:
        row["top-1 drop (points)"] = round(dense_top1 - metrics["top1_extracted"], 2)
    row["FLOPs (M)"] = round(metrics["flops_extracted"] / 1e6, 2)
    row["FLOPs reduction (%)"] = round(100 * (1 - metrics["flops_extracted"] / metrics["flops_dense"]), 1)
    row["params (M)"] = round(metrics["params_extracted"] / 1e6, 3)
    row.update(extra)
    return row


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if value != 0 and abs(value) < 1e-3:
            return f"{value:.3g}"
        return f"{value:.3f}".rstrip("0").rstrip(".")
    return str(value).replace("|", "/")


def _columns(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    return columns


def format_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> str:
    """A Markdown table of ``rows`` (dicts); ``columns`` picks and orders the keys (default:
    every key, in order of first appearance). Missing values print as "-".
    In a notebook, ``display(table(rows))`` shows the same rows as an HTML table."""
    if columns is None:
        columns = _columns(rows)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(_cell(row.get(c)) for c in columns) + " |")
    return "\n".join(lines)


class Table:
    """Rows shown as a table: HTML in a notebook or a built book, Markdown as text
    (``str(table)``). Build it with :func:`table`."""

    def __init__(self, rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None):
        self.rows = [dict(r) for r in rows]
        self.columns = list(columns) if columns is not None else _columns(self.rows)

    def __str__(self) -> str:
        return format_table(self.rows, self.columns)

    def _repr_markdown_(self) -> str:
        return str(self)

    def _repr_html_(self) -> str:
        head = "".join(f"<th>{html.escape(c)}</th>" for c in self.columns)
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(_cell(r.get(c)))}</td>" for c in self.columns) + "</tr>"
            for r in self.rows
        )
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> Table:
    """A :class:`Table` of ``rows``; ``columns`` as in :func:`format_table`. In a notebook,
    ``display(table(rows))`` shows it."""
    return Table(rows, columns)


# ----------------------------------------------------------------------------- specs


def infer_position(spec: Mapping[str, Any]) -> str | None:
    """The gate position a sub-network spec was cut with: the ``position`` it records, or,
    for a spec saved before it recorded one, as far as its cuts show it: "a" (conv1
    inputs cut), "c" (conv2 outputs cut), "b" (hidden channels cut), "layer" (a block's
    branch removed and nothing else cut), or None (nothing was cut)."""
    if "position" in spec:
        return spec["position"]
    blocks = spec["blocks"]
    if any(b["in_index"] is not None or b["branch"] == "const_hidden" for b in blocks):
        return "a"
    if any(b["out_index"] is not None for b in blocks):
        return "c"
    if any(b["branch"] == "bias" or (b["branch"] == "conv" and b["mid_channels"] < b["out_channels"])
           for b in blocks):
        return "b"
    if any(b["branch"] == "none" for b in blocks):
        return "layer"
    return None


def _units(block: Mapping[str, Any], position: str) -> tuple[int, int]:
    """(kept, total) gated units of one block spec for a gate ``position``."""
    check_choice("position", position, tuple(POSITIONS))
    return POSITIONS[position].count(block)


def kept_widths(spec: Mapping[str, Any], position: str | None = None) -> dict[str, int]:
    """{block name: kept units} of a sub-network spec: the kept channels at the gated
    position ("a": conv1 inputs, "b": hidden channels, "c": conv2 outputs), or 1/0 for a
    kept/removed block ("layer"). These equal the sums of the masks the spec was cut with.

    ``position`` None infers it with :func:`infer_position` (a spec with nothing cut reads
    as "b": full widths).
    """
    position = position or infer_position(spec) or "b"
    return {b["name"]: _units(b, position)[0] for b in spec["blocks"]}


def block_table(spec: Mapping[str, Any], position: str | None = None) -> list[dict[str, Any]]:
    """One row per block of a sub-network spec: name, stage, gated units kept and total
    (see :func:`kept_widths`), the branch kind, whether the block is dropped, and the
    block's FLOPs (MACs per image) kept and dense."""
    position = position or infer_position(spec) or "b"
    height, width = spec["input_shape"][-2:]
    rows = []
    for b in spec["blocks"]:
        dense_spec = dict(b, branch="conv", in_index=None, out_index=None, mid_channels=b["out_channels"])
        kept_flops, h_out, w_out = block_flops(b, height, width)
        dense_flops, _, _ = block_flops(dense_spec, height, width)
        kept, total = _units(b, position)
        m = re.match(r"stages\.(\d+)\.(\d+)", b["name"])
        rows.append({
            "block": b["name"], "stage": int(m.group(1)) if m else 0, "position": position,
            "kept": kept, "total": total, "branch": b["branch"], "dropped": bool(b["dropped"]),
            "flops": kept_flops, "flops_dense": dense_flops,
        })
        height, width = h_out, w_out
    return rows


def _block_label(name: str) -> str:
    m = re.fullmatch(r"stages\.(\d+)\.(\d+)", name)
    return f"s{int(m.group(1)) + 1}.b{int(m.group(2)) + 1}" if m else name




# ----------------------------------------------------------------------------- plots


def subplots(n: int, panel=(6.0, 4.2), stack: bool = False, **kwargs):
    """``n`` panels side by side (together no wider than ``COLUMN_WIDTH``), or one above the
    other with ``stack``."""
    rows, cols = (n, 1) if stack else (1, n)
    if cols > 1:
        scale = min(1.0, COLUMN_WIDTH / (panel[0] * cols))
        panel = (panel[0] * scale, panel[1] * max(scale, 0.75))
    with plt.rc_context(FONT):
        fig, axes = plt.subplots(rows, cols, figsize=(panel[0] * cols, panel[1] * rows), layout="constrained",
                                 squeeze=False, **kwargs)
    return fig, list(axes.ravel())


#: marker shapes, in the order the plots give them to groups of points
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "h", "<", ">")
#: markers of the published methods (drawn grey and hollow), in shapes no method of ours uses
PUBLISHED_MARKERS = ("h", "p", "8", "d", "H", "*", "1", "2")
PUBLISHED_GREYS = ("#222222", "#555555", "#888888")
#: groups of ours that no method style names get these, in order
_OTHER_COLORS = ("#e377c2", "#bcbd22", "#d62728", "#aec7e8", "#98df8a")


#: consensus runs at each gate position: the method's colour, a shape per position
_CONSENSUS_MARKERS = {"(a)": "<", "(b)": "o", "(c)": ">"}


def method_of(group: str) -> str | None:
    """The ``plots.METHOD_STYLES`` key a label such as "L1-norm, channel (b)" or
    "consensus, layer" belongs to (None for a label of no known method)."""
    from .plots import METHOD_STYLES

    words = group.lower()
    for key, needles in (("random, consensus widths", ("widths",)), ("random", ("random",)),
                         ("l1", ("l1",)), ("bn-polarization", ("bn", "polarization")),
                         ("dropout", ("dropout",)), ("dense", ("dense",)),
                         ("consensus, layer", ("layer",)), ("consensus", ("consensus", "channel ("))):
        if any(n in words for n in needles):
            return key
    return group if group in METHOD_STYLES else None


def group_style(group: str, index: int) -> dict[str, str]:
    """Colour and marker of a group of our points: the method's own (``plots.METHOD_STYLES``),
    so a method looks the same in every figure, with one shape per gate position for the
    consensus method; hollow markers for the baselines, so that points on top of each
    other stay visible. Groups of no known method get colours no method uses."""
    from .plots import METHOD_STYLES

    method = method_of(group)
    if method is None:
        style = {"color": _OTHER_COLORS[index % len(_OTHER_COLORS)], "marker": MARKERS[index % len(MARKERS)]}
    else:
        style = dict(METHOD_STYLES[method])
        if method == "consensus":
            style["marker"] = next((m for pos, m in _CONSENSUS_MARKERS.items() if pos in group), style["marker"])
    hollow = method not in (None, "consensus", "consensus, layer", "dense")
    return {**style, "markerfacecolor": "none" if hollow else style["color"]}


def _ours(points: Sequence[Mapping[str, Any]] | Mapping[str, Mapping[str, Any]]) -> list[dict]:
    """Normalise run points: a list of {"label", "top1", "flops_reduction"} (percent), or
    {label: metrics of run()}."""
    if isinstance(points, Mapping):
        out = []
        for label, m in points.items():
            out.append({"label": label, "top1": m["top1_extracted"],
                        "flops_reduction": 100 * (1 - m["flops_extracted"] / m["flops_dense"])})
        return out
    return [dict(p) for p in points]


def _group(points: list[dict]) -> dict[str, list[dict]]:
    groups: dict[str, list[dict]] = {}
    for p in points:
        groups.setdefault(p.get("group", p["label"]), []).append(p)
    return groups


def _draw_published(ax, results: Sequence[PublishedResult], y: str) -> None:
    """One colour and marker per published method (several results of a method are joined
    by a thin line), hollow markers, legend entries "published: <method>" below the panel."""
    methods: dict[str, list[PublishedResult]] = {}
    for r in results:
        methods.setdefault(r.method, []).append(r)
    for i, (method, rs) in enumerate(methods.items()):
        pts = sorted((100 * r.flops_reduction, r.pruned_top1 if y == "top1" else r.drop) for r in rs)
        pts = [p for p in pts if p[1] is not None]
        if not pts:
            continue
        color = PUBLISHED_GREYS[i % len(PUBLISHED_GREYS)]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], color=color, linewidth=0.8, linestyle=":",
                marker=PUBLISHED_MARKERS[i % len(PUBLISHED_MARKERS)], markersize=8, markerfacecolor="none",
                markeredgewidth=1.6, label=f"published: {method}")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, fontsize=9)


def plot_top1_vs_flops(points, *, dense_top1: float | None = None, published_results: Sequence[PublishedResult] | None = None,
                       title: str = "Top-1 against FLOPs reduction", our_setting: str = "our runs",
                       published_setting: str = "ResNet-56 / CIFAR-10, full schedules",
                       stack: bool = False) -> Figure:
    """Top-1 (percent) against FLOPs reduction (percent), in the manner of the paper's
    Figure 2 (pruning rate vs top-1).

    Args:
        points: our runs: {label: metrics of ``run()``}, or a list of dicts with "label",
            "top1", "flops_reduction" (percent) and optionally "group" (points of one group
            are joined by a line, e.g. one method at several targets).
        dense_top1: our dense network's top-1, drawn as a dashed line.
        published_results: drawn in a second panel of their own (their absolute accuracies
            come from other networks and schedules), labelled "published".
        stack: put the panels one above the other instead of side by side.
    """
    ours = _ours(points)
    ncols = 2 if published_results else 1
    fig, axes = subplots(ncols, panel=(6.0, 5.0), stack=stack)
    ax = axes[0]
    for i, (group, pts) in enumerate(_group(ours).items()):
        pts = sorted(pts, key=lambda p: p["flops_reduction"])
        ax.plot([p["flops_reduction"] for p in pts], [p["top1"] for p in pts], markersize=8, markeredgewidth=1.6,
                linewidth=1.5, label=group, **group_style(group, i))
    if dense_top1 is not None:
        ax.axhline(dense_top1, color="0.4", linestyle="--", linewidth=1.2, label=f"our dense: {dense_top1:.1f}%")
    ax.set(title=f"Ours ({our_setting})", xlabel="FLOPs reduction (%)", ylabel="top-1, extracted network (%)")
    ax.set_xlim(-3, 100)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, fontsize=9)
    ax.grid(alpha=0.3)
    if published_results:
        ax = axes[1]
        _draw_published(ax, published_results, "top1")
        ax.set(title=f"Published ({published_setting})", xlabel="FLOPs reduction (%)",
               ylabel="top-1, pruned network (%)")
        ax.set_xlim(-3, 100)
        ax.grid(alpha=0.3)
    fig.suptitle(f"{title}\n{FLOPS_NOTE}")
    return fig


def plot_drop_vs_flops(points, *, dense_top1: float | None = None,
                       published_results: Sequence[PublishedResult] | None = None,
                       title: str = "Top-1 drop against FLOPs reduction",
                       our_setting: str = "our runs",
                       published_setting: str = "ResNet-56 / CIFAR-10, full schedules",
                       stack: bool = False) -> Figure:
    """Top-1 drop (points, against each side's own dense baseline) against FLOPs
    reduction (percent), in the manner of the paper's Figure 3. Our points in the left
    panel (drop against ``dense_top1``, or the points' own "drop" key), the published ones
    in the right panel, labelled "published"; both panels share the y axis. ``stack`` puts
    the panels one above the other."""
    ours = _ours(points)
    for p in ours:
        if "drop" not in p:
            if dense_top1 is None:
                raise ValueError("give dense_top1, or a 'drop' value in every point.")
            p["drop"] = dense_top1 - p["top1"]
    ncols = 2 if published_results else 1
    fig, axes = subplots(ncols, panel=(6.0, 5.0), stack=stack, sharey=True)
    ax = axes[0]
    for i, (group, pts) in enumerate(_group(ours).items()):
        pts = sorted(pts, key=lambda p: p["flops_reduction"])
        ax.plot([p["flops_reduction"] for p in pts], [p["drop"] for p in pts], markersize=8, markeredgewidth=1.6,
                linewidth=1.5, label=group, **group_style(group, i))
    ax.set(title=f"Ours ({our_setting})", xlabel="FLOPs reduction (%)",
           ylabel="top-1 drop vs own dense network (points)")
    if published_results:
        _draw_published(axes[1], published_results, "drop")
        axes[1].set(title=f"Published ({published_setting})", xlabel="FLOPs reduction (%)")
        axes[1].yaxis.set_tick_params(labelleft=True)
        axes[1].set_ylabel("top-1 drop vs own baseline (points)")
    axes[0].legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, fontsize=9)
    for ax in axes:
        ax.axhline(0.0, color="0.4", linestyle="--", linewidth=1.0)
        ax.set_xlim(-3, 100)
        ax.grid(alpha=0.3)
    fig.suptitle(f"{title} (lower is better)\n{FLOPS_NOTE}")
    return fig


def plot_kept_widths(specs: Mapping[str, Mapping[str, Any]], positions: Mapping[str, str] | None = None, *,
                     ncols: int = 2, title: str = "Where each sub-network keeps its units") -> Figure:
    """One panel per sub-network spec: per block, the gated units before (grey) and after
    extraction (coloured by stage), with the count written on each bar; removed blocks
    are marked "dropped" (identity shortcut, left out) or "branch removed" (a
    down-sampling block whose shortcut stays).

    Args:
        specs: {label: sub-network spec}.
        positions: {label: "layer" | "a" | "b" | "c"}; default inferred from each spec.
        ncols: panels per row.
    """
    positions = dict(positions or {})
    n = len(specs)
    ncols = max(1, min(ncols, n))
    nrows = -(-n // ncols)
    with plt.rc_context(FONT):
        fig, grid = plt.subplots(nrows, ncols, figsize=(COLUMN_WIDTH, 4.0 * nrows * (1.0 if ncols == 1 else 0.8)),
                                 layout="constrained", squeeze=False)
    axes = list(grid.ravel())
    for ax in axes[n:]:
        ax.set_visible(False)
    for ax, (label, spec) in zip(axes, specs.items()):
        rows = block_table(spec, positions.get(label))
        x = np.arange(len(rows))
        total = np.array([r["total"] for r in rows])
        kept = np.array([r["kept"] for r in rows])
        colors = [STAGE_COLORS[r["stage"] % len(STAGE_COLORS)] for r in rows]
        ax.bar(x, total, width=0.8, color="0.88", edgecolor="0.6", label="before (dense)")
        bars = ax.bar(x, kept, width=0.55, color=colors, label="kept")
        ax.bar_label(bars, labels=[str(k) for k in kept], fontsize=8, padding=1)
        top = max(1, int(total.max()))
        for xi, r in zip(x, rows):
            if r["branch"] == "none":
                ax.text(xi, 0.5 * r["total"], "dropped" if r["dropped"] else "branch\nremoved", rotation=90,
                        ha="center", va="center", fontsize=8, color="#d62728")
        ax.set_xticks(x, [_block_label(r["block"]) for r in rows], rotation=60, fontsize=8)
        ylabel = POSITIONS[rows[0]["position"]].words if rows else "units kept"
        ax.set(title=label, xlabel="residual block (stage.block)", ylabel=ylabel, ylim=(0, top * 1.4))
        ax.grid(alpha=0.3, axis="y")
        handles = [plt.Rectangle((0, 0), 1, 1, color="0.88", ec="0.6")]
        handles += [plt.Rectangle((0, 0), 1, 1, color=STAGE_COLORS[s % len(STAGE_COLORS)])
                    for s in sorted({r["stage"] for r in rows})]
        ax.legend(handles, ["before (dense)"] + [f"kept, stage {s + 1}" for s in sorted({r["stage"] for r in rows})],
                  loc="upper center", ncol=4, fontsize=8, columnspacing=1.0, handlelength=1.2)
    fig.suptitle(title)
    return fig


def plot_block_flops(specs: Mapping[str, Mapping[str, Any]], *,
                     title: str = "FLOPs per residual block after extraction") -> Figure:
    """Grouped bars: each block's FLOPs (M MACs per image) in every sub-network, beside
    the dense block (grey outline). Shows where each gating spends its FLOPs budget."""
    labels = list(specs)
    tables = {k: block_table(v) for k, v in specs.items()}
    first = tables[labels[0]]
    x = np.arange(len(first))
    width = 0.8 / max(1, len(labels))
    with plt.rc_context(FONT):
        fig, ax = plt.subplots(figsize=(COLUMN_WIDTH, 4.5), layout="constrained")
    dense = np.array([r["flops_dense"] for r in first]) / 1e6
    ax.bar(x, dense, width=0.9, color="none", edgecolor="0.5", linestyle="--", label="dense block")
    for i, label in enumerate(labels):
        vals = np.array([r["flops"] for r in tables[label]]) / 1e6
        total = sum(r["flops"] for r in tables[label]) / 1e6
        ax.bar(x - 0.4 + width * (i + 0.5), vals, width=width, color=plt.get_cmap("tab10")(i % 10),
               label=f"{label} ({total:.1f} M in blocks)")
    ax.set_xticks(x, [_block_label(r["block"]) for r in first], rotation=45)
    ax.set(title=f"{title}\n{FLOPS_NOTE}", xlabel="residual block (stage.block)",
           ylabel="FLOPs of the block (M MACs / image)")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.grid(alpha=0.3, axis="y")
    return fig


def plot_latency_vs_flops(rows: Sequence[Mapping[str, Any]], *, flops_key: str = "flops",
                          latency_keys: Mapping[str, str] | None = None,
                          title: str = "Measured latency against FLOPs", device: str = "",
                          stack: bool = False) -> Figure:
    """Latency (ms) against FLOPs (M MACs per image), one labelled point per network.

    Args:
        rows: dicts with "label", ``flops_key`` (MACs per image) and latency values in
            seconds under the keys of ``latency_keys``.
        latency_keys: {row key: legend text}, e.g. {"latency_b1": "batch 1"}; default
            {"latency": "latency"}. Each key gets its own panel.
        device: where the latency was measured, for the title.
        stack: put the panels one above the other instead of side by side.
    """
    latency_keys = dict(latency_keys or {"latency": "latency"})
    fig, axes = subplots(len(latency_keys), panel=(5.8, 4.2), stack=stack)
    for ax, (key, words) in zip(axes, latency_keys.items()):
        for i, row in enumerate(rows):
            style = group_style(row.get("group", row["label"]), i)
            ax.plot(row[flops_key] / 1e6, 1e3 * row[key], linestyle="none", markersize=8, markeredgewidth=1.6,
                    label=row["label"], zorder=3, **style)
        xs = np.array([r[flops_key] / 1e6 for r in rows])
        ys = np.array([1e3 * r[key] for r in rows])
        if len(rows) >= 2 and np.ptp(xs) > 0:
            slope, intercept = np.polyfit(xs, ys, 1)
            grid = np.linspace(0, xs.max() * 1.05, 50)
            ax.plot(grid, slope * grid + intercept, color="0.5", linestyle=":", label="least-squares line")
        ax.set(title=words, xlabel="FLOPs (M MACs / image)", ylabel="latency, median of repeats (ms)")
        ax.set_xlim(left=0)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=3, fontsize=9)
    fig.suptitle(f"{title}{' on ' + device if device else ''}\n{FLOPS_NOTE}")
    return fig


def plot_training_curves(history: Sequence[Mapping[str, Any]], *, flops_dense: float | None = None,
                         title: str = "Training history", stack: bool = False) -> Figure:
    """Three panels from a run's ``history.json``: test top-1 with live gates, the FLOPs the
    current masks would give the extracted network (percent of dense; needs
    ``flops_dense`` and a gated run) and the consensus disagreement, per epoch. ``stack``
    puts the panels one above the other. One curve per panel, named by its title (no legend)."""
    epochs = [h["epoch"] for h in history]
    gated = bool(history) and "flops_masked" in history[0]
    fig, axes = subplots(3 if gated else 1, panel=(6.0, 3.4) if stack else (4.6, 3.6), stack=stack)
    axes[0].plot(epochs, [h["top1_gated"] for h in history], marker="o")
    axes[0].set(title="Test top-1 (live gates)", ylabel="top-1 (%)")
    if gated:
        if flops_dense:
            axes[1].plot(epochs, [100 * h["flops_masked"] / flops_dense for h in history], marker="o", color="#d95f02")
            axes[1].set(ylabel="% of dense FLOPs", ylim=(0, 105))
        else:
            axes[1].plot(epochs, [h["flops_masked"] / 1e6 for h in history], marker="o", color="#d95f02")
            axes[1].set_ylabel("M MACs / image")
        axes[1].set_title("FLOPs of the masks")
        axes[2].plot(epochs, [100 * h.get("disagreement", 0.0) for h in history], marker="o", color="#7570b3")
        axes[2].set(title="Disagreement", ylabel="% of live decisions")
        axes[2].set_ylim(bottom=0)
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(nbins=6, integer=True))
        ax.grid(alpha=0.3)
    fig.suptitle(f"{title}\n{FLOPS_NOTE}" if gated else title)
    return fig

