"""consensus_tutorial.comparison: published numbers, run tables, spec readers and plots."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import pytest
import torch
from matplotlib.figure import Figure

import consensus_tutorial as ct
from consensus_tutorial import comparison as cmp
from figure_checks import legends_clear_of_data

# DESIGN.md section 3: (method, dataset, baseline, pruned, FLOPs reduction)
DESIGN_NUMBERS = [
    ("Zhuang", "cifar10", 93.80, 93.83, 0.47),
    ("Zhuang", "cifar10", 93.80, 92.63, 0.71),
    ("Zhuang", "cifar100", 72.49, 72.46, 0.25),
    ("Network Slimming", "cifar10", 93.80, 93.27, 0.48),
    ("SFP", "cifar10", 93.59, 93.35, 0.51),
    ("FPGM", "cifar10", 93.59, 93.49, 0.53),
    ("HRank", "cifar10", 93.26, 93.17, 0.50),
    ("DCP", "cifar10", 93.80, 93.49, 0.50),
    ("Gate Decorator", "cifar10", None, 93.15, 0.70),
]


def test_published_numbers_match_design_notes():
    table = [(r.method, r.dataset, r.baseline_top1, r.pruned_top1, r.flops_reduction) for r in cmp.PUBLISHED]
    assert len(table) == len(DESIGN_NUMBERS)
    for method, dataset, base, pruned, rate in DESIGN_NUMBERS:
        hits = [t for t in table if t[0].startswith(method) and t[1:] == (dataset, base, pruned, rate)]
        assert len(hits) == 1, f"{method} {dataset} {base} -> {pruned} at {rate:.0%} missing"
    for r in cmp.PUBLISHED:
        assert r.network == "ResNet-56" and r.source and "20" in r.source  # a year in every source
    zhuang = [r for r in cmp.published("cifar10") if r.method.startswith("Zhuang") and r.flops_reduction == 0.47]
    assert zhuang[0].drop == pytest.approx(-0.03)
    assert cmp.REFERENCE_MODELS["resnet56"] == {"params": 0.85e6, "flops": 125.49e6}
    assert all(r.dataset == "cifar100" for r in cmp.published("cifar100"))
    rows = cmp.published_rows("cifar10")
    assert len(rows) == 8 and all("published" in next(iter(r)) for r in rows)


def test_run_rows_and_markdown_table():
    metrics = {"top1_gated": 60.0, "top1_extracted": 59.5, "flops_extracted": 20_000_000,
               "flops_dense": 40_000_000, "params_extracted": 100_000}
    row = cmp.run_row("b", metrics, dense_top1=61.0, **{"latency (ms)": 1.25})
    assert row["FLOPs reduction (%)"] == 50.0 and row["top-1 drop (points)"] == 1.5
    assert row["FLOPs (M)"] == 20.0 and row["params (M)"] == 0.1 and row["latency (ms)"] == 1.25
    text = cmp.format_table([row, {"run": "x"}])
    lines = text.splitlines()
    assert lines[0].startswith("| run | top-1 gated (%)") and len(lines) == 4
    assert lines[3].count("-") >= 5  # missing values print as "-"


def _random_masks(model, seed=0, p=0.5):
    gen = torch.Generator().manual_seed(seed)
    masks = {}
    for name, gate in ct.gate_modules(model).items():
        masks[name] = torch.rand(gate.units, generator=gen) < p
    return masks


@pytest.mark.parametrize("gating,position", [("channel", "a"), ("channel", "b"), ("channel", "c"), ("layer", "b")])
def test_kept_widths_read_an_extracted_spec(gating, position):
    torch.manual_seed(0)
    model = ct.cifar_resnet(20, gating=gating, position=position, gate="static")
    masks = _random_masks(model, p=0.5 if gating == "channel" else 0.6)
    first = next(iter(masks))
    masks[first][:] = False  # one gate fully closed: the edge cases of the spec
    subnet = ct.extract_subnetwork(ct.freeze_gates(model, masks).eval())
    spec = subnet.spec
    expected = {name.removesuffix(".gate"): int(m.sum()) for name, m in masks.items()}
    where = "layer" if gating == "layer" else position
    assert cmp.infer_position(spec) == where == spec["position"]
    saved_before = {k: v for k, v in spec.items() if k != "position"}  # a spec from before it was recorded
    assert cmp.infer_position(saved_before) == where
    assert cmp.kept_widths(spec) == expected
    assert cmp.kept_widths(spec, where) == expected
    assert cmp.kept_widths(ct.subnetwork_spec(model, masks), where) == expected
    rows = cmp.block_table(spec)
    assert [r["kept"] for r in rows] == list(expected.values())
    assert sum(r["flops"] for r in rows) < sum(r["flops_dense"] for r in rows)
    # block FLOPs plus stem and classifier give the extracted network's FLOPs
    stem = 3 * 16 * 9 * 32 * 32 + 64 * 10
    assert stem + sum(r["flops"] for r in rows) == ct.count_flops(subnet)


def test_dense_spec_reads_full_widths():
    spec = ct.subnetwork_spec(ct.cifar_resnet(20))
    assert cmp.infer_position(spec) is None
    assert list(cmp.kept_widths(spec).values()) == [16] * 3 + [32] * 3 + [64] * 3


def _labelled(fig: Figure) -> None:
    assert isinstance(fig, Figure)
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert visible
    for ax in visible:
        assert ax.get_xlabel() and ax.get_ylabel() and ax.get_title()
        series = [a for a in ax.lines + ax.collections if not a.get_label().startswith("_")]
        if len(series) > 1:  # a legend for a panel of several series, or one for the figure
            assert ax.get_legend() is not None or fig.legends
    assert fig.get_size_inches()[0] <= cmp.COLUMN_WIDTH + 0.01  # fits the book's column at full size
    legends_clear_of_data(fig)
    plt.close(fig)


def test_plots_return_labelled_figures():
    runs = {"consensus": {"top1_extracted": 60.0, "flops_extracted": 2.0e7, "flops_dense": 4.0e7},
            "random": {"top1_extracted": 55.0, "flops_extracted": 2.1e7, "flops_dense": 4.0e7}}
    pub = cmp.published("cifar10")
    fig = cmp.plot_top1_vs_flops(runs, dense_top1=62.0, published_results=pub)
    assert len(fig.axes) == 2
    assert any("published" in t.get_text() for t in fig.axes[1].get_legend().get_texts())
    _labelled(fig)
    _labelled(cmp.plot_drop_vs_flops(runs, dense_top1=62.0, published_results=pub))
    _labelled(cmp.plot_top1_vs_flops([{"label": "a", "group": "m", "top1": 50, "flops_reduction": 30},
                                      {"label": "b", "group": "m", "top1": 45, "flops_reduction": 50}]))

    model = ct.cifar_resnet(20, gating="channel", position="b", gate="static")
    masks = _random_masks(model)
    spec_b = ct.subnetwork_spec(model, masks)
    layer = ct.cifar_resnet(20, gating="layer", gate="static")
    spec_l = ct.subnetwork_spec(layer, {n: torch.tensor([i % 2 == 0]) for i, n in enumerate(ct.gate_modules(layer))})
    _labelled(cmp.plot_kept_widths({"channel (b)": spec_b, "layer": spec_l}))
    _labelled(cmp.plot_block_flops({"channel (b)": spec_b, "layer": spec_l}))
    rows = [{"label": "dense", "flops": 4.0e7, "latency_b1": 2e-3, "latency_b64": 5e-2},
            {"label": "pruned", "flops": 2.0e7, "latency_b1": 1.5e-3, "latency_b64": 3e-2}]
    _labelled(cmp.plot_latency_vs_flops(rows, latency_keys={"latency_b1": "batch 1", "latency_b64": "batch 64"}))
    history = [{"epoch": e, "top1_gated": 10.0 * e, "flops_masked": 4e7 / e, "disagreement": 0.01 / e}
               for e in (1, 2, 3)]
    fig = cmp.plot_training_curves(history, flops_dense=4e7)
    assert len(fig.axes) == 3
    _labelled(fig)
    _labelled(cmp.plot_training_curves([{"epoch": 1, "top1_gated": 20.0}]))


def test_stacked_panels_sit_one_above_the_other():
    runs = {"consensus": {"top1_extracted": 60.0, "flops_extracted": 2.0e7, "flops_dense": 4.0e7}}
    pub = cmp.published("cifar10")
    history = [{"epoch": e, "top1_gated": 10.0 * e, "flops_masked": 4e7 / e, "disagreement": 0.01 / e}
               for e in (1, 2)]
    figures = [cmp.plot_top1_vs_flops(runs, dense_top1=62.0, published_results=pub, stack=True),
               cmp.plot_drop_vs_flops(runs, dense_top1=62.0, published_results=pub, stack=True),
               cmp.plot_training_curves(history, flops_dense=4e7, stack=True)]
    for fig in figures:
        fig.canvas.draw()
        boxes = [ax.get_position() for ax in fig.axes]
        width, height = fig.get_size_inches()
        assert height > width  # a tall, narrow figure for a narrow page
        assert all(a.y0 > b.y1 - 1e-6 for a, b in zip(boxes, boxes[1:]))  # each panel above the next
        assert all(abs(a.x0 - b.x0) < 0.05 for a, b in zip(boxes, boxes[1:]))
        _labelled(fig)
    side = cmp.plot_top1_vs_flops(runs, dense_top1=62.0, published_results=pub)
    side.canvas.draw()
    left, right = (ax.get_position() for ax in side.axes)
    assert right.x0 > left.x1
    plt.close("all")


def test_table_shows_as_html_and_markdown():
    shown = cmp.table([{"run": "a<b", "top-1 (%)": 12.345}, {"run": "c"}], ["run", "top-1 (%)"])
    html = shown._repr_html_()
    assert html.startswith("<table>") and "a&lt;b" in html and "<td>12.345</td>" in html and "<td>-</td>" in html
    assert str(shown) == shown._repr_markdown_() == cmp.format_table(shown.rows, ["run", "top-1 (%)"])
