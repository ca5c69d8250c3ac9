"""Plot helpers of the book: gates, the STE, toy trajectories, firing rates, histograms.

Every function draws with matplotlib and returns the matplotlib ``Figure``
(call ``plt.show()`` in a notebook, or ``fig.savefig(...)``). Each figure has a title,
labelled axes with units, and a legend where several things share a panel. Functions
that take an ``ax`` draw into it (and return its figure) instead of making a new one.

Inputs are the package's own objects: :class:`~consensus_tutorial.toy.ToyRun` for the
toys, and the *history* of :func:`consensus_tutorial.training.fit` (a list with one dict
per epoch holding ``firing_rates`` {gate name: [r_j]}, ``mean_firing_rate``,
``disagreement``, ...) for training runs.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.ticker import MaxNLocator

from .gates import binarize
from .regularizers import polarization

OPEN_COLOR = "#1f77b4"      # gates that end open
CLOSED_COLOR = "#d62728"    # gates that end closed
THRESHOLD_STYLE = dict(color="0.35", linestyle="--", linewidth=1.0)
STAGE_COLORS = ("#1b9e77", "#d95f02", "#7570b3", "#e7298a")

#: one colour and marker per method, the same in every figure of the book
METHOD_STYLES: dict[str, dict[str, str]] = {
    "dense": {"color": "#000000", "marker": "*"},
    "consensus": {"color": "#1f77b4", "marker": "o"},
    "consensus, layer": {"color": "#17becf", "marker": "D"},
    "random": {"color": "#ff7f0e", "marker": "s"},
    "random, consensus widths": {"color": "#8c564b", "marker": "v"},
    "l1": {"color": "#2ca02c", "marker": "^"},
    "bn-polarization": {"color": "#9467bd", "marker": "P"},
    "dropout": {"color": "#7f7f7f", "marker": "X"},
}

FONT = {
    "font.size": 11, "axes.titlesize": 12, "axes.labelsize": 11, "legend.fontsize": 9,
    "xtick.labelsize": 10, "ytick.labelsize": 10, "figure.titlesize": 13,
}


def use_book_style() -> None:
    """Set the font sizes the book's figures use (call once per notebook)."""
    plt.rcParams.update(FONT)


#: the widest figure, in inches, that the book's text column shows at full size (wider
#: figures are scaled down, and their text with them); every figure here is at most this wide
COLUMN_WIDTH = 7.6


def _new_axes(ax=None, figsize=(6.0, 4.0)):
    if ax is not None:
        return ax.figure, ax
    with plt.rc_context(FONT):
        fig, ax = plt.subplots(figsize=figsize, layout="constrained")
    return fig, ax


def _grid(n: int, ncols: int, panel=(3.6, 2.9), sharex=True, sharey=True):
    """``n`` panels in rows of ``ncols``, narrowed (with their height) to fit ``COLUMN_WIDTH``."""
    ncols = max(1, min(ncols, n))
    nrows = int(np.ceil(n / ncols))
    scale = min(1.0, COLUMN_WIDTH / (panel[0] * ncols))
    panel = (panel[0] * scale, panel[1] * max(scale, 0.8))
    with plt.rc_context(FONT):
        fig, axes = plt.subplots(nrows, ncols, figsize=(panel[0] * ncols, panel[1] * nrows),
                                 sharex=sharex, sharey=sharey, squeeze=False, layout="constrained")
    flat = axes.ravel()
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, axes, flat[:n]


def short_gate_name(name: str) -> str:
    """"stages.1.2.gate" -> "stage 2, block 3" (1-based); other names are returned as they are."""
    m = re.fullmatch(r"stages\.(\d+)\.(\d+)\.gate", name)
    if not m:
        return name
    return f"stage {int(m.group(1)) + 1}, block {int(m.group(2)) + 1}"


def _stage(name: str) -> int:
    m = re.match(r"stages\.(\d+)\.", name)
    return int(m.group(1)) if m else 0


# ----------------------------------------------------------------------------- the STE


def plot_ste(clip: float | None = 3.0, threshold: float = 0.5):
    """Three panels: the hard gate ``g = 1[p >= threshold]`` against p; the gradient dg/dp
    that :func:`~consensus_tutorial.binarize` passes back (identity, and clipped where
    ``|logit p| > clip``), measured with autograd; and the gradient that reaches the gate
    score s, ``dg/ds = (dg/dp) sigma'(s)``.
    """
    p = torch.linspace(0.001, 0.999, 999, dtype=torch.float64, requires_grad=True)
    g = binarize(p, threshold)
    (grad_id,) = torch.autograd.grad(g.sum(), p)
    grads = {"identity STE": grad_id.numpy()}
    if clip is not None:
        (grad_clip,) = torch.autograd.grad(binarize(p, threshold, clip=clip).sum(), p)
        grads[f"clipped STE (|s| <= {clip:g})"] = grad_clip.numpy()
    s = torch.linspace(-8, 8, 801, dtype=torch.float64, requires_grad=True)
    grads_s = {}
    (gs,) = torch.autograd.grad(binarize(torch.sigmoid(s), threshold).sum(), s)
    grads_s["identity STE"] = gs.numpy()
    if clip is not None:
        (gs_clip,) = torch.autograd.grad(binarize(torch.sigmoid(s), threshold, clip=clip).sum(), s)
        grads_s[f"clipped STE (|s| <= {clip:g})"] = gs_clip.numpy()

    pn = p.detach().numpy()
    with plt.rc_context(FONT):
        fig, axes = plt.subplots(3, 1, figsize=(7.6, 8.4), layout="constrained")
    ax = axes[0]
    ax.plot(pn, g.detach().numpy(), color="k", linewidth=2, label="forward: g = 1[p >= 0.5]")
    ax.plot(pn, pn, color="0.6", linestyle=":", label="g = p (what the STE pretends)")
    ax.set(title="Forward pass: a hard 0/1 gate", xlabel="gate probability p", ylabel="gate value g")
    ax = axes[1]
    styles = [dict(color=OPEN_COLOR, linewidth=3), dict(color=CLOSED_COLOR, linewidth=1.5, linestyle="--")]
    for (label, grad), style in zip(grads.items(), styles):
        ax.plot(pn, grad, label=label, **style)
    ax.set(title="Backward pass: surrogate dg/dp", xlabel="gate probability p",
           ylabel="dg/dp passed back", ylim=(-0.1, 1.25))
    ax.annotate("true derivative: 0 everywhere,\nundefined at p = 0.5", xy=(0.5, 0.05), ha="center",
                fontsize=9, color="0.3")
    ax = axes[2]
    sn = s.detach().numpy()
    for (label, grad), style in zip(grads_s.items(), styles):
        ax.plot(sn, grad, label=label, **style)
    ax.set(title="What reaches the score s: (dg/dp) sigma'(s)", xlabel="gate score s (logit)",
           ylabel="dg/ds")
    for ax in axes:  # legends beside the panels, never over the curves
        ax.legend(loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize=9)
        ax.grid(alpha=0.3)
    return fig


def plot_gate_probabilities(p, *, threshold: float = 0.5, ax=None, title: str | None = None):
    """Bar chart of a gate's probabilities per unit, bars coloured by the hard decision.

    Args:
        p: (C,) probabilities, or (B, C) for one row per sample: the bars then show the
            batch mean ``pbar_j`` and dots the single samples.
    """
    p = np.asarray(torch.as_tensor(p).detach().float().cpu())
    per_sample = p if p.ndim == 2 else None
    pbar = p.mean(0) if p.ndim == 2 else p
    units = np.arange(len(pbar))
    fig, ax = _new_axes(ax, figsize=(COLUMN_WIDTH, 3.6))
    colors = [OPEN_COLOR if v >= threshold else CLOSED_COLOR for v in pbar]
    ax.bar(units, pbar, color=colors, width=0.8)
    if per_sample is not None:
        for row in per_sample:
            ax.plot(units, row, ".", color="k", markersize=3, alpha=0.35)
    ax.axhline(threshold, **THRESHOLD_STYLE)
    handles = [plt.Rectangle((0, 0), 1, 1, color=OPEN_COLOR), plt.Rectangle((0, 0), 1, 1, color=CLOSED_COLOR),
               plt.Line2D([], [], **THRESHOLD_STYLE)]
    labels = ["open (p >= 0.5)", "closed (p < 0.5)", "threshold 0.5"]
    if per_sample is not None:
        handles.append(plt.Line2D([], [], marker=".", linestyle="", color="k"))
        labels.append("single samples")
    ax.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set(title=title or "Gate probability per channel", xlabel="channel index j",
           ylabel="gate probability p" if per_sample is None else "gate probability p (bars: batch mean)", ylim=(0, 1.05))
    ax.xaxis.set_major_locator(MaxNLocator(nbins=min(len(units), 16), integer=True))
    return fig


# ----------------------------------------------------------------------------- toys


def plot_one_gate(runs: Mapping[str, Any], *, title: str = "One gate trained through the STE"):
    """Two panels for :func:`~consensus_tutorial.toy.one_gate` runs (label -> ToyRun): the
    gate probability p over the steps, and the gradient dL/dp that reached p (what the STE
    passed on from dL/dg, plus the polarizer's own gradient); one legend below."""
    with plt.rc_context(FONT):
        fig, axes = plt.subplots(2, 1, figsize=(COLUMN_WIDTH, 6.4), layout="constrained", sharex=True)
    for label, run in runs.items():
        (line,) = axes[0].plot(run.steps, run.p[:, 0], linewidth=2, label=label)
        axes[1].plot(run.steps, run.terms["grad_p"], color=line.get_color(), linewidth=1.8)
    axes[0].axhline(0.5, **THRESHOLD_STYLE, label="threshold p = 0.5")
    axes[0].set(title="Gate probability", ylabel="gate probability p", ylim=(-0.02, 1.02))
    axes[1].axhline(0.0, color="0.6", linewidth=0.8)
    axes[1].set(title="Gradient reaching p (STE, plus polarizer)", xlabel="optimisation step", ylabel="dL/dp")
    for ax in axes:
        ax.grid(alpha=0.3)
    with plt.rc_context(FONT):
        fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncol=2)
    fig.suptitle(title)
    return fig


def plot_trajectories(run, *, ax=None, title: str | None = None, legend: bool = True,
                      max_units: int | None = None):
    """Gate probabilities of a :func:`~consensus_tutorial.toy.simulate` run over the steps,
    one line per unit, blue if the unit ends open and red if it ends closed."""
    fig, ax = _new_axes(ax)
    final_open = run.final >= 0.5
    idx = np.arange(run.units)
    if max_units is not None and run.units > max_units:
        idx = np.linspace(0, run.units - 1, max_units).round().astype(int)
    for j in idx:
        ax.plot(run.steps, run.p[:, j], color=OPEN_COLOR if final_open[j] else CLOSED_COLOR,
                linewidth=1.0, alpha=0.75)
    ax.axhline(0.5, **THRESHOLD_STYLE)
    ax.set(xlabel="optimisation step", ylabel="gate probability p", ylim=(-0.02, 1.02))
    ax.set_title(title or "Gate probabilities over the steps")
    ax.text(0.98, 0.5, f"kept {run.kept_share():.0%}", transform=ax.transAxes, ha="right", va="bottom",
            fontsize=10, bbox=dict(facecolor="white", edgecolor="0.7", alpha=0.85))
    if legend:
        ax.legend(*_trajectory_legend(), loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.grid(alpha=0.3)
    return fig


def _trajectory_legend() -> tuple[list, list[str]]:
    handles = [plt.Line2D([], [], color=OPEN_COLOR), plt.Line2D([], [], color=CLOSED_COLOR),
               plt.Line2D([], [], **THRESHOLD_STYLE)]
    return handles, ["ends open", "ends closed", "threshold 0.5"]


def plot_small_multiples(runs: Mapping[str, Any], *, ncols: int = 3, title: str | None = None,
                         panel=(3.8, 3.0)):
    """A grid of :func:`plot_trajectories` panels, one per labelled toy run."""
    fig, _, axes = _grid(len(runs), ncols, panel=panel)
    for ax, (label, run) in zip(axes, runs.items()):
        plot_trajectories(run, ax=ax, title=label, legend=False)
        if not ax.get_subplotspec().is_last_row():
            ax.set_xlabel("")
        if not ax.get_subplotspec().is_first_col():
            ax.set_ylabel("")
    with plt.rc_context(FONT):
        fig.legend(*_trajectory_legend(), loc="outside lower center", ncol=3)
    if title:
        fig.suptitle(title)
    return fig


def plot_polarizer_forces(t_values: Sequence[float] = (0.0, 0.8), units: int = 101, ax=None):
    """The force each polarizer puts on one unit, ``-C dR/dp_j``, as that unit's p_j sweeps
    [0, 1] while the other units stay spread evenly over [0, 1] (their mean is 0.5).
    Computed with autograd through :func:`~consensus_tutorial.polarization`; positive
    pushes the gate open."""
    fig, ax = _new_axes(ax, figsize=(6.5, 4.2))
    grid = np.linspace(0.0, 1.0, 201)
    others = torch.linspace(0.0, 1.0, units - 1, dtype=torch.float64)
    kinds = [("bimodal", None, "bimodal p(1-p)")] + [("zhuang", t, f"Zhuang, t = {t:g}") for t in t_values]
    for kind, t, label in kinds:
        forces = []
        for v in grid:
            pj = torch.tensor([v], dtype=torch.float64, requires_grad=True)
            r = polarization(torch.cat([pj, others]), kind, t)
            (grad,) = torch.autograd.grad(r, pj)
            forces.append(-units * float(grad))
        ax.plot(grid, forces, linewidth=2, label=label)
    ax.axhline(0, color="0.6", linewidth=0.8)
    ax.axvline(0.5, **THRESHOLD_STYLE, label="p = 0.5 (= mean of the others)")
    ax.set(title="Polarizer force on one gate", xlabel="gate probability p_j",
           ylabel="force  -C dR/dp_j  (> 0 opens)")
    ax.legend(loc="best")
    ax.grid(alpha=0.3)
    return fig


def plot_kept_share_vs(x: Sequence[float], series: Mapping[str, Sequence[float]], *, xlabel: str,
                       title: str, reference: Mapping[str, Sequence[float]] | None = None,
                       ylabel: str = "share of units kept (p >= 0.5)", ax=None):
    """Lines of a kept share against a swept setting; ``reference`` lines are drawn dashed."""
    fig, ax = _new_axes(ax, figsize=(6.5, 4.2))
    for label, ys in (reference or {}).items():
        ax.plot(x, ys, color="k", linestyle="--", linewidth=1.5, label=label)
    for label, ys in series.items():
        ax.plot(x, ys, marker="o", linewidth=1.8, label=label)
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel, ylim=(-0.03, 1.03))
    ax.legend(loc="best")
    ax.grid(alpha=0.3)
    return fig


# ----------------------------------------------------------------------------- training runs


def _epochs(history: Sequence[Mapping]) -> np.ndarray:
    return np.array([h["epoch"] for h in history])


def _gate_names(history: Sequence[Mapping]) -> list[str]:
    if not history or "firing_rates" not in history[0]:
        raise ValueError("the history holds no firing rates: was the model gated?")
    return list(history[0]["firing_rates"])


def plot_firing_rates(history: Sequence[Mapping], *, units: Mapping[str, Sequence[int]] | None = None,
                      include_start: bool = True, title: str = "Firing rates during training"):
    """Two panels from a training history: each gated layer's mean firing rate over the
    epochs, and the firing rates of a few single units.

    Args:
        history: the list :func:`~consensus_tutorial.training.fit` returns (or the records
            collected with ``on_epoch_end``).
        units: {gate name: [unit indices]} for the right panel; default: per stage, the
            unit of the first block that ends with the highest rate and the one with the lowest.
        include_start: draw epoch 0 at rate 1 (gates start open: p about 0.9 gives g = 1).
    """
    names = _gate_names(history)
    epochs = _epochs(history)
    if include_start:
        epochs = np.concatenate([[0], epochs])

    def series(get):
        values = [get(h) for h in history]
        return np.array(([1.0] if include_start else []) + values)

    with plt.rc_context(FONT):
        fig, axes = plt.subplots(2, 1, figsize=(COLUMN_WIDTH, 7.4), layout="constrained", sharex=True)
    ax = axes[0]
    seen = {}
    styles = ("-", "--", ":", "-.")
    for name in names:
        stage = _stage(name)
        k = seen.setdefault(stage, 0)
        seen[stage] = k + 1
        ax.plot(epochs, series(lambda h: h["mean_firing_rate"][name]), marker="o", markersize=3,
                color=STAGE_COLORS[stage % len(STAGE_COLORS)], linestyle=styles[k % len(styles)],
                label=short_gate_name(name))
    ax.set(title="Mean firing rate per gated layer", ylabel="firing rate r", ylim=(-0.03, 1.03))
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), ncol=1 + len(names) // 14, fontsize=8)
    if units is None:
        units = {}
        for name in names:
            stage = _stage(name)
            if any(_stage(n) == stage for n in units):
                continue
            last = np.array(history[-1]["firing_rates"][name])
            units[name] = sorted({int(last.argmax()), int(last.argmin())})
    ax = axes[1]
    for name, idx in units.items():
        color = STAGE_COLORS[_stage(name) % len(STAGE_COLORS)]
        for j, style in zip(idx, ("-", "--", ":", "-.") * 8):
            ax.plot(epochs, series(lambda h: h["firing_rates"][name][j]), marker="o", markersize=3,
                    color=color, linestyle=style, label=f"{short_gate_name(name)}, unit {j}")
    ax.set(title="A few single units", xlabel="epoch", ylabel="firing rate r", ylim=(-0.03, 1.03))
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    for ax in axes:
        ax.axhline(0.5, **THRESHOLD_STYLE)
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(nbins=12, integer=True))
    fig.suptitle(title)
    return fig


def plot_firing_histograms(history: Sequence[Mapping], *, epochs: Sequence[int] | None = None,
                           gates: Sequence[str] | None = None, bins: int = 20, ncols: int = 3,
                           title: str = "Per-unit firing rates"):
    """One panel per gated layer: histograms of its units' firing rates at a few epochs.

    Args:
        epochs: 1-based epochs to show (default: first, middle and last).
        gates: gate names to show (default: all).
    """
    names = list(gates or _gate_names(history))
    by_epoch = {h["epoch"]: h for h in history}
    if epochs is None:
        all_epochs = sorted(by_epoch)
        epochs = sorted({all_epochs[0], all_epochs[len(all_epochs) // 2], all_epochs[-1]})
    missing = [e for e in epochs if e not in by_epoch]
    if missing:
        raise ValueError(f"epochs {missing} are not in the history (it has {sorted(by_epoch)}).")
    fig, axes2d, axes = _grid(len(names), ncols, panel=(3.8, 2.7), sharey=False)
    edges = np.linspace(0.0, 1.0, bins + 1)
    cmap = plt.get_cmap("viridis")
    colors = [cmap(i / max(1, len(epochs) - 1) * 0.85) for i in range(len(epochs))]
    for ax, name in zip(axes, names):
        for e, color in zip(epochs, colors):
            rates = np.asarray(by_epoch[e]["firing_rates"][name])
            ax.hist(rates, bins=edges, histtype="step", linewidth=2, color=color, label=f"epoch {e}")
            ax.hist(rates, bins=edges, histtype="stepfilled", alpha=0.12, color=color)
        ax.axvline(0.5, **THRESHOLD_STYLE)
        ax.set_title(f"{short_gate_name(name)} ({len(rates)} units)", fontsize=10)
        ax.grid(alpha=0.3)
    for ax in axes2d[-1]:
        ax.set_xlabel("firing rate r")
    for row in axes2d:
        row[0].set_ylabel("units")
    with plt.rc_context(FONT):
        fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncol=len(epochs))
    fig.suptitle(title)
    return fig


def plot_disagreement(histories: Mapping[str, Sequence[Mapping]], *, ax=None,
                      title: str = "Consensus disagreement during training"):
    """Disagreement rate (percent of (test image, unit) live decisions that differ from the
    current consensus mask) over the epochs, one line per labelled history."""
    fig, ax = _new_axes(ax, figsize=(6.5, 4.0))
    for label, history in histories.items():
        ax.plot(_epochs(history), [100.0 * h.get("disagreement", 0.0) for h in history], marker="o",
                linewidth=2, label=label)
    ax.set(title=title, xlabel="epoch", ylabel="disagreement (% of decisions)")
    ax.set_ylim(bottom=0)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.grid(alpha=0.3)
    return fig


def plot_kept_channels(masks: Mapping[str, Any], *, ax=None, title: str = "Channels per gated layer"):
    """Grouped bars per gate: units before extraction (all) and after (kept by the mask)."""
    names = list(masks)
    total = np.array([len(torch.as_tensor(masks[n])) for n in names])
    kept = np.array([int(torch.as_tensor(masks[n]).bool().sum()) for n in names])
    x = np.arange(len(names))
    fig, ax = _new_axes(ax, figsize=(COLUMN_WIDTH, 4.2))
    ax.bar(x - 0.2, total, width=0.4, color="0.7", label="before (dense)")
    bars = ax.bar(x + 0.2, kept, width=0.4, color=OPEN_COLOR, label="after extraction")
    ax.bar_label(bars, labels=[f"{k}" for k in kept], fontsize=8 if len(names) <= 12 else 6, padding=2)
    if len(names) <= 12:
        ax.set_xticks(x, [short_gate_name(n).replace(", ", "\n") for n in names], fontsize=8)
    else:  # many layers: one short label each, turned
        ax.set_xticks(x, [short_gate_name(n).replace("stage ", "s").replace(", block ", ".b") for n in names],
                      fontsize=7, rotation=90)
    ax.set(title=title, xlabel="gated layer", ylabel="channels (units)")
    ax.legend(loc="lower left", bbox_to_anchor=(0.0, 1.06), ncol=2, frameon=False)
    ax.grid(alpha=0.3, axis="y")
    return fig


def plot_unit_costs(flops: Mapping[str, Any], params: Mapping[str, Any], *,
                    title: str = "What one channel costs, per gated layer"):
    """Two panels of bars, one bar per gated layer coloured by stage: the MACs one unit of
    that layer costs (``ct.unit_flops``) and the parameters it holds (``ct.unit_params``)."""
    names = list(flops)
    x = np.arange(len(names))
    colors = [STAGE_COLORS[_stage(n) % len(STAGE_COLORS)] for n in names]
    with plt.rc_context(FONT):
        fig, axes = plt.subplots(1, 2, figsize=(7.6, 3.2), layout="constrained")
    for ax, values, label, scale in ((axes[0], flops, "MACs per channel (thousands)", 1e3),
                                     (axes[1], params, "parameters per channel", 1.0)):
        heights = [float(torch.as_tensor(values[n]).float().mean()) / scale for n in names]
        ax.bar(x, heights, color=colors)
        ax.set_xticks(x, [str(i + 1) for i in range(len(names))])
        ax.set(xlabel="gated layer (block) in network order", ylabel=label)
        ax.grid(alpha=0.3, axis="y")
    handles = [plt.Rectangle((0, 0), 1, 1, color=STAGE_COLORS[s]) for s in sorted({_stage(n) for n in names})]
    fig.legend(handles, [f"stage {s + 1}" for s in sorted({_stage(n) for n in names})], loc="outside right upper")
    fig.suptitle(title)
    return fig


def plot_latency_table(table: Mapping[str, Any], *, title: str = "Latency of each block against its width"):
    """One line per residual block of a latency table (:mod:`consensus_tutorial.costs`):
    milliseconds per batch against the share of hidden channels kept, coloured by stage;
    the dashed grey line is what MACs predict (proportional to width, from the full width)."""
    with plt.rc_context(FONT):
        fig, ax = plt.subplots(figsize=(COLUMN_WIDTH, 3.8), layout="constrained")
    styles = ("-", "--", ":", "-.")
    seen: dict[int, int] = {}
    for name, row in table["blocks"].items():
        stage = _stage(name)
        k = seen.setdefault(stage, 0)
        seen[stage] = k + 1
        widths = np.asarray(row["widths"], dtype=float)
        share = widths / widths[-1]
        ax.plot(share, row["ms"], marker="o", markersize=3, color=STAGE_COLORS[stage % len(STAGE_COLORS)],
                linestyle=styles[k % len(styles)], label=short_gate_name(f"{name}.gate"))
        ax.plot(share, np.asarray(row["ms"][-1]) * share, color="0.6", linestyle="--", linewidth=0.8)
    ax.set(title=title, xlabel="share of the block's hidden channels kept (position b)",
           ylabel=f"ms per batch of {table.get('batch_size', '?')}", ylim=(0, None))
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, title="block", title_fontsize=8)
    ax.grid(alpha=0.3)
    return fig


def plot_mask_agreement(history: Sequence[Mapping], *, processes: int,
                        title: str = "One consensus across processes"):
    """From the history of a run of several processes: the share of gated units on whose
    decision every process agrees (``mask_agreement``), and the units the mask keeps, per
    epoch; the epoch in which the gates froze is marked."""
    epochs = _epochs(history)
    with plt.rc_context(FONT):
        fig, axes = plt.subplots(1, 2, figsize=(COLUMN_WIDTH, 3.2), layout="constrained")
    axes[0].plot(epochs, [100 * h["mask_agreement"] for h in history], marker="o", color=OPEN_COLOR)
    axes[0].set(title=f"Decided alike by all {processes} processes", ylabel="% of gated units", ylim=(0, 105))
    axes[1].plot(epochs, [sum(h["kept_units"].values()) for h in history], marker="o", color=CLOSED_COLOR)
    axes[1].set(title="Units the mask keeps", ylabel="units", ylim=(0, None))
    frozen = next((h["epoch"] for h in history if "settle" in h), None)
    for ax in axes:
        if frozen is not None:
            ax.axvline(frozen, **THRESHOLD_STYLE)
        ax.set_xlabel("epoch" + (f" (dashed: gates froze in epoch {frozen})" if frozen is not None else ""))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    return fig


def plot_gate_positions():
    """A residual block and the places a gate can multiply: positions a, b and c of a
    channel gate, and a layer gate that scales the whole residual branch ``F(x)``. Below,
    what a dynamic gate computes from the feature map it reads."""
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

    with plt.rc_context(FONT):
        fig, ax = plt.subplots(figsize=(7.6, 3.6), layout="constrained")
    ax.set(xlim=(0, 10.4), ylim=(0, 4.6))
    ax.axis("off")

    def box(x, y, text, w=1.05, color="#f0f0f0"):
        ax.add_patch(FancyBboxPatch((x - w / 2, y - 0.28), w, 0.56, boxstyle="round,pad=0.04",
                                    facecolor=color, edgecolor="0.3"))
        ax.text(x, y, text, ha="center", va="center", fontsize=9)

    def arrow(x0, y0, x1, y1, **kw):
        ax.add_patch(FancyArrowPatch((x0, y0), (x1, y1), arrowstyle="-|>", mutation_scale=10,
                                     color=kw.pop("color", "0.3"), **kw))

    def gate(x, y, label, color):
        ax.plot([x, x], [y - 0.5, y], color=color, linewidth=1.5, zorder=4)
        ax.plot(x, y, marker="o", markersize=16, color=color, zorder=5)
        ax.text(x, y, label, ha="center", va="center", color="white", fontsize=10, fontweight="bold", zorder=6)

    y = 3.2
    ax.text(0.25, y, "x", ha="center", va="center", fontsize=12)
    steps = [(2.0, "conv1"), (3.35, "bn1"), (4.7, "relu"), (6.35, "conv2"), (7.7, "bn2")]
    arrow(0.45, y, 1.45, y)
    for (x0, _), (x1, _) in zip(steps, steps[1:]):
        arrow(x0 + 0.55, y, x1 - 0.55, y)
    for x, text in steps:
        box(x, y, text)
    ax.add_patch(plt.Circle((9.2, y), 0.26, facecolor="white", edgecolor="0.3"))
    ax.text(9.2, y, "+", ha="center", va="center", fontsize=13)
    arrow(8.25, y, 8.92, y)
    arrow(9.46, y, 10.2, y)
    ax.text(10.3, y + 0.35, "relu → y", ha="right", fontsize=9)
    ax.plot([0.45, 0.8, 0.8, 9.2], [y, y, 2.1, 2.1], color="0.3", linewidth=1.2)
    arrow(9.2, 2.1, 9.2, y - 0.26)
    ax.text(5.0, 1.85, "shortcut (never gated)", ha="center", fontsize=9, color="0.3")
    gate(1.1, y + 0.55, "a", STAGE_COLORS[0])
    gate(5.5, y + 0.55, "b", STAGE_COLORS[1])
    gate(8.5, y + 0.55, "c", STAGE_COLORS[2])
    ax.annotate("", xy=(8.35, y + 0.95), xytext=(1.45, y + 0.95),
                arrowprops=dict(arrowstyle="<->", color=STAGE_COLORS[3]))
    ax.text(4.9, y + 1.15, "layer gate: one g scales the whole branch F(x)", ha="center", fontsize=9,
            color=STAGE_COLORS[3])
    ax.text(0.2, 0.95, "a dynamic gate:", fontsize=9, ha="left")
    chain = ["feature map\n(B, C, H, W)", "GAP\n(B, C)", "MLP$_K$\n(B, units)", "p = σ(s)", "g = 1[p ≥ 0.5]"]
    for i, text in enumerate(chain):
        box(2.4 + 1.75 * i, 0.55, text, w=1.5, color="#ffffff")
        if i:
            arrow(2.4 + 1.75 * (i - 1) + 0.78, 0.55, 2.4 + 1.75 * i - 0.78, 0.55)
    ax.set_title("Where a gate multiplies in a residual block")
    return fig
