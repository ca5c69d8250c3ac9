"""The toy polarization problems, the plot helpers and the widget explorer (CPU, fast)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

import consensus_tutorial as ct  # noqa: E402
from consensus_tutorial import plots, toy, widgets  # noqa: E402
from figure_checks import legends_clear_of_data  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _labelled(fig: Figure) -> None:
    """Every visible panel has a title (or the figure one) and both axis labels somewhere in
    its grid; the figure fits the book's column; no legend covers data."""
    assert isinstance(fig, Figure)
    axes = [ax for ax in fig.axes if ax.get_visible() and ax.get_label() != "<colorbar>"]
    assert axes
    assert any(ax.get_xlabel() for ax in axes) and any(ax.get_ylabel() for ax in axes)
    for ax in axes:
        assert ax.get_title() or fig._suptitle is not None
    assert fig.get_size_inches()[0] <= plots.COLUMN_WIDTH + 0.01, "wider than the book's text column"
    legends_clear_of_data(fig)


# ----------------------------------------------------------------------------- one gate


def test_one_gate_useful_unit_opens_and_useless_unit_closes():
    useful = toy.one_gate(output=1.0, target=1.0, init_prob=0.3, steps=60, lr=0.2)
    useless = toy.one_gate(output=1.0, target=0.0, init_prob=0.7, steps=60, lr=0.2)
    assert useful.p.shape == (61, 1)
    assert useful.final[0] >= 0.5 > useful.p[0, 0]
    assert useless.final[0] < 0.5 <= useless.p[0, 0]
    # once the hard decision is right the task gradient vanishes: the gate parks near 0.5
    assert abs(useful.final[0] - 0.5) < 0.1 and useful.terms["grad_g"][-1] == 0.0


def test_one_gate_polarizer_pushes_past_the_threshold_and_clip_blocks_saturated_gates():
    pushed = toy.one_gate(init_prob=0.3, steps=100, lr=0.2, lambda_pol=2.0)
    assert pushed.final[0] > 0.85
    frozen = toy.one_gate(init_prob=0.02, steps=30, lr=0.2, clip=3.0)  # |logit(0.02)| = 3.9 > 3
    assert np.allclose(frozen.p[:, 0], 0.02)
    moving = toy.one_gate(init_prob=0.02, steps=30, lr=0.2)
    assert moving.final[0] > 0.02


# ----------------------------------------------------------------------------- many gates


def test_simulate_shapes_terms_and_errors():
    run = toy.simulate(8, 20)
    assert run.p.shape == (21, 8) and run.units == 8 and len(run.steps) == 21
    assert set(run.terms) == {"loss", "polarization", "sparsity", "task"}
    assert all(v.shape == (21,) for v in run.terms.values())
    assert np.all((run.p > 0) & (run.p < 1))
    with pytest.raises(ValueError, match="needs t"):
        toy.simulate(8, 5, polarizer="zhuang")
    with pytest.raises(ValueError, match="optimizer"):
        toy.simulate(8, 5, optimizer="sgd")
    with pytest.raises(ValueError, match="one probability per unit"):
        toy.simulate(8, 5, init=[0.5, 0.5])


def test_bimodal_polarizes_every_unit_and_keeps_those_above_half():
    run = toy.simulate(32, 300, init="spread")
    assert run.undecided_share() == 0.0
    assert np.array_equal(run.final >= 0.5, run.p[0] >= 0.5)
    assert run.terms["polarization"][-1] < 0.1 * run.terms["polarization"][0]


def test_bimodal_zero_slope_at_half_makes_it_slower_than_zhuang():
    """Started at p = 0.5 +- 0.01, the bimodal barely moves at first (its force is zero at 0.5),
    the Zhuang polarizer (slope +-1 there) leaves at once."""
    bimodal = toy.simulate(32, 40, init="half")
    zhuang = toy.simulate(32, 40, polarizer="zhuang", t=0.0, init="half")
    spread = lambda r: float(np.abs(r.final - 0.5).mean())  # noqa: E731
    assert spread(bimodal) < 0.05 < 0.2 < spread(zhuang)


@pytest.mark.parametrize("t", [-1.0, 0.0, 0.8, 1.2])
def test_zhuang_minimiser_share_is_half_minus_t_over_four(t):
    assert toy.zhuang_minimiser_share(t, units=200) == pytest.approx(0.5 - t / 4, abs=0.01)


@pytest.mark.parametrize("t", [-0.8, 0.0, 0.8])
def test_zhuang_from_the_minimiser_basin_converges_to_half_minus_t_over_four(t):
    """Started with 1/2 - t/4 of the units above the mean, the toy polarizes every unit and
    keeps that share: the global minimiser."""
    units = 40
    rho = 0.5 - t / 4
    k = round(units * rho)
    init = np.r_[np.linspace(0.7, 0.8, k), np.linspace(0.2, 0.3, units - k)]
    run = toy.simulate(units, 400, polarizer="zhuang", t=t, init=init)
    assert run.kept_share() == pytest.approx(rho, abs=1.0 / units)
    assert run.undecided_share() == 0.0


@pytest.mark.parametrize("t", [-0.5, 0.0, 0.8])
def test_zhuang_from_a_random_start_keeps_the_initial_split_not_the_minimiser(t):
    """Gradient descent keeps the units that started above the mean (about half) for
    |t| < 1: vertices with other shares are local minima too. DESIGN.md's 1/2 - t/4 is the
    global minimiser, which a start (or a sparsity target) must select."""
    run = toy.simulate(64, 300, polarizer="zhuang", t=t, init="uniform")
    above = float((run.p[0] > run.p[0].mean()).mean())
    assert run.kept_share() == pytest.approx(above, abs=1.0 / 64)


@pytest.mark.parametrize("rate", [0.25, 0.5, 0.75])
def test_sparsity_target_sets_the_kept_share(rate):
    run = toy.simulate(32, 300, lambda_sp=5.0, target_rate=rate, init="open")
    assert run.kept_share() == pytest.approx(1.0 - rate, abs=1.5 / 32)
    assert run.undecided_share() <= 1.0 / 32
    soft = toy.simulate(32, 200, lambda_sp=5.0, target_rate=rate, init="open", sparsity_on="soft")
    assert soft.kept_share() == pytest.approx(1.0 - rate, abs=3.0 / 32)


def test_usefulness_decides_which_units_stay():
    u = np.linspace(-1, 1, 32)
    run = toy.simulate(32, 300, lambda_sp=1.0, target_rate=0.5, lambda_task=2.0, usefulness=u, init="open")
    kept = run.final >= 0.5
    assert u[kept].mean() > 0.3 > u[~kept].mean()


def test_adam_and_sweep():
    runs = toy.sweep("target_rate", [0.25, 0.75], lambda_sp=5.0, init="open", optimizer="adam", steps=150)
    assert list(runs) == [0.25, 0.75]
    assert runs[0.25].kept_share() > runs[0.75].kept_share()


# ----------------------------------------------------------------------------- plots


def test_plot_ste_uses_binarize_gradients():
    fig = plots.plot_ste(clip=2.0)
    _labelled(fig)
    grad_line = fig.axes[1].lines[0]
    assert np.allclose(grad_line.get_ydata(), 1.0)  # identity STE
    clipped = fig.axes[1].lines[1].get_ydata()
    assert clipped.min() == 0.0 and clipped.max() == 1.0


def test_toy_plots_return_labelled_figures():
    run = toy.simulate(8, 20)
    _labelled(plots.plot_trajectories(run))
    _labelled(plots.plot_small_multiples({"a": run, "b": toy.simulate(8, 20, polarizer="zhuang", t=0.0)},
                                         ncols=2, title="grid"))
    _labelled(plots.plot_one_gate({"useful": toy.one_gate(steps=10)}))
    _labelled(plots.plot_polarizer_forces(units=11))
    _labelled(plots.plot_kept_share_vs([0, 1], {"gd": [0.5, 0.4]}, reference={"min": [0.5, 0.25]},
                                       xlabel="t", title="kept vs t"))
    _labelled(plots.plot_gate_probabilities(torch.rand(4, 6)))
    _labelled(plots.plot_gate_probabilities(torch.rand(6)))


def _fake_history(epochs=3):
    model = ct.cifar_resnet(8, gating="channel", gate="static")
    gates = ct.gate_modules(model)
    history = []
    gen = np.random.default_rng(0)
    for e in range(1, epochs + 1):
        rates = {n: gen.random(g.units).round(4).tolist() for n, g in gates.items()}
        history.append({"epoch": e, "firing_rates": rates, "disagreement": 0.1 / e,
                        "mean_firing_rate": {n: float(np.mean(r)) for n, r in rates.items()}})
    return history, gates


def test_training_plots_return_labelled_figures():
    history, gates = _fake_history()
    _labelled(plots.plot_firing_rates(history))
    fig = plots.plot_firing_histograms(history, epochs=[1, 3])
    _labelled(fig)
    assert len([ax for ax in fig.axes if ax.get_visible()]) == len(gates)
    with pytest.raises(ValueError, match="not in the history"):
        plots.plot_firing_histograms(history, epochs=[7])
    _labelled(plots.plot_disagreement({"dynamic": history, "static": history}))
    masks = {n: torch.arange(g.units) % 2 == 0 for n, g in gates.items()}
    _labelled(plots.plot_kept_channels(masks))


def test_latency_table_plot():
    table = {"batch_size": 64, "blocks": {f"stages.{s}.0": {"widths": [1, 8, 16 * 2 ** s], "ms": [1.0, 2.0, 3.0 + s]}
                                          for s in range(3)}}
    fig = plots.plot_latency_table(table)
    _labelled(fig)
    assert len(fig.axes[0].get_legend().get_texts()) == 3


def test_mask_agreement_plot():
    history = [{"epoch": e, "mask_agreement": 1.0, "kept_units": {"a": 10 - e, "b": 5}} for e in (1, 2, 3)]
    history[1]["settle"] = {"step": 7}
    fig = plots.plot_mask_agreement(history, processes=2)
    _labelled(fig)
    assert "epoch 2" in fig.axes[0].get_xlabel()


def test_plots_of_a_deep_wide_network_still_fit_the_column():
    """ResNet-56 has 27 gated layers and 64-channel gates: the figures stay column-wide."""
    model = ct.cifar_resnet(56, gating="channel", gate="static")
    gates = ct.gate_modules(model)
    masks = {n: torch.arange(g.units) % 3 > 0 for n, g in gates.items()}
    _labelled(plots.plot_kept_channels(masks))
    _labelled(plots.plot_gate_probabilities(torch.rand(8, 64)))
    assert plots.short_gate_name("stages.1.2.gate") == "stage 2, block 3"


# ----------------------------------------------------------------------------- widgets


def test_explorer_figure_and_widget():
    _labelled(widgets.explorer_figure(polarizer="zhuang", t=0.5, steps=20, units=8))
    pytest.importorskip("ipywidgets")
    box = widgets.polarization_explorer(units=8, steps=10)
    import ipywidgets

    assert isinstance(box, ipywidgets.Widget)
    assert box.controls["t"].disabled  # bimodal by default: t does not apply
    box.controls["polarizer"].value = "zhuang"
    assert not box.controls["t"].disabled
    with pytest.raises(ValueError, match="unknown explorer setting"):
        widgets.polarization_explorer(lamda_pol=1.0)
