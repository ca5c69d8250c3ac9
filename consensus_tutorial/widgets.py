"""An ipywidgets explorer for the toy polarization problem (:mod:`consensus_tutorial.toy`).

Sliders set the polarizer's weight ``lambda_pol``, Zhuang's ``t``, the target pruning
rate and the sparsity weight; every change re-runs :func:`~consensus_tutorial.toy.simulate`
(a fraction of a second) and redraws :func:`explorer_figure` (the first draw comes with
the first change).

Widgets need a live Jupyter kernel: on a static web page (the rendered book) the sliders
show but do nothing, so the book prints :func:`explorer_figure` next to the explorer.
``ipywidgets`` is an optional dependency (``pip install consensus-tutorial[notebooks]``);
:func:`show_polarization_explorer` prints a note instead of failing where it is missing.
"""

from __future__ import annotations

from typing import Any

import matplotlib.pyplot as plt

from . import plots, toy
from .regularizers import POLARIZERS

DEFAULTS: dict[str, Any] = dict(polarizer="bimodal", lambda_pol=1.0, t=0.0, target_rate=0.5, lambda_sp=5.0,
                                init="open")


def explorer_figure(
    polarizer: str = "bimodal",
    lambda_pol: float = 1.0,
    t: float = 0.0,
    target_rate: float = 0.5,
    lambda_sp: float = 5.0,
    init: str = "open",
    *,
    units: int = 32,
    steps: int = 300,
    seed: int = 0,
):
    """What the explorer draws for one setting of its sliders: the toy's gate
    probabilities over the steps (left) and the kept share against the target (right)."""
    takes_t = POLARIZERS[polarizer].takes_t
    run = toy.simulate(units, steps, polarizer=polarizer, t=t if takes_t else None,
                       lambda_pol=lambda_pol, lambda_sp=lambda_sp, target_rate=target_rate, init=init, seed=seed)
    with plt.rc_context(plots.FONT):
        fig, axes = plt.subplots(2, 1, figsize=(7.6, 6.6), layout="constrained")
    label = f"{polarizer}, t = {t:g}" if takes_t else polarizer
    plots.plot_trajectories(run, ax=axes[0], title=f"{label}, lambda_pol = {lambda_pol:g}")
    legend = axes[0].get_legend()
    if legend is not None:  # beside the curves, not on them
        legend.set_loc("center left")
        legend.set_bbox_to_anchor((1.02, 0.5), transform=axes[0].transAxes)
    ax = axes[1]
    ax.plot(run.steps, run.kept_over_steps(), color=plots.OPEN_COLOR, linewidth=2, label="kept share (p >= 0.5)")
    ax.plot(run.steps, [run.undecided_share(s) for s in range(len(run.steps))], color="0.5", linewidth=1.5,
            label="undecided share (0.1 < p < 0.9)")
    if lambda_sp > 0:
        ax.axhline(1.0 - target_rate, color="k", linestyle="--", linewidth=1.2,
                   label=f"keep target 1 - rate = {1.0 - target_rate:.2f}")
    if polarizer == "zhuang":
        ax.axhline(toy.zhuang_minimiser_share(t, units), color=plots.CLOSED_COLOR, linestyle=":", linewidth=1.5,
                   label="Zhuang minimiser share")
    ax.set(title=f"Kept share (lambda_sp = {lambda_sp:g}, target rate = {target_rate:.2f})",
           xlabel="optimisation step", ylabel="share of units", ylim=(-0.03, 1.03))
    ax.legend(loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize=9)  # beside the data, not on it
    ax.grid(alpha=0.3)
    fig.suptitle(f"Toy polarization problem: {units} static gates, start '{init}'")
    return fig


def polarization_explorer(*, units: int = 32, steps: int = 300, **initial: Any):
    """An ipywidgets box of sliders with the toy's plot below; returns the widget.

    Keyword arguments override the sliders' starting values (see ``DEFAULTS``).

    Raises:
        ImportError: where ipywidgets is not installed (with a hint how to install it).
    """
    try:
        import ipywidgets as w
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "the explorer needs ipywidgets: pip install 'consensus-tutorial[notebooks]' (or ipywidgets)."
        ) from err
    unknown = sorted(set(initial) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"unknown explorer setting(s) {unknown}; known: {sorted(DEFAULTS)}.")
    start = {**DEFAULTS, **initial}
    style = {"description_width": "130px"}
    layout = w.Layout(width="420px")
    controls = dict(
        polarizer=w.ToggleButtons(options=list(POLARIZERS), value=start["polarizer"], description="polarizer",
                                  style=style),
        lambda_pol=w.FloatSlider(value=start["lambda_pol"], min=0.0, max=5.0, step=0.1, description="lambda_pol",
                                 style=style, layout=layout, continuous_update=False),
        t=w.FloatSlider(value=start["t"], min=-2.0, max=2.0, step=0.1, description="t (e.g. Zhuang)",
                        style=style, layout=layout, continuous_update=False),
        target_rate=w.FloatSlider(value=start["target_rate"], min=0.0, max=0.9, step=0.05,
                                  description="target pruning rate", style=style, layout=layout,
                                  continuous_update=False),
        lambda_sp=w.FloatSlider(value=start["lambda_sp"], min=0.0, max=10.0, step=0.5, description="lambda_sp",
                                style=style, layout=layout, continuous_update=False),
        init=w.Dropdown(options=list(toy.INITS), value=start["init"], description="start", style=style),
    )

    def toggle_t(change: dict) -> None:
        controls["t"].disabled = not POLARIZERS[change["new"]].takes_t

    controls["polarizer"].observe(toggle_t, names="value")
    controls["t"].disabled = not POLARIZERS[start["polarizer"]].takes_t

    out = w.Output()

    def redraw(change: dict | None = None) -> None:
        with out:
            out.clear_output(wait=True)
            explorer_figure(**{k: c.value for k, c in controls.items()}, units=units, steps=steps)
            plt.show()

    # Drawn on the first change, not when the explorer is built: a notebook run without a
    # browser (papermill, a book build) can stall on output captured into an Output widget,
    # and the chapter prints the starting figure itself.
    for control in controls.values():
        control.observe(redraw, names="value")
    hint = w.HTML("<i>Move a slider to draw the toy for that setting.</i>")
    box = w.VBox([w.HBox([w.VBox(list(controls.values())[:3]), w.VBox(list(controls.values())[3:])]), hint, out])
    box.controls = controls  # for tests and for readers who want to set values in code
    box.redraw = redraw
    return box


def show_polarization_explorer(**kwargs: Any):
    """Display :func:`polarization_explorer` in a notebook; return the widget, or None
    (with a printed note) where ipywidgets or a display are not available."""
    try:
        box = polarization_explorer(**kwargs)
    except ImportError as err:
        print(f"(interactive explorer not shown: {err})")
        return None
    try:
        from IPython.display import display
    except ImportError:  # pragma: no cover - IPython comes with ipywidgets
        print("(interactive explorer not shown: IPython is not available)")
        return None
    display(box)
    return box
