"""Figures of `inference-convergence` (docs/background.md §5.6): closed-form against numerical
inference, one panel per (parameterisation, H) with rows by parameterisation and columns
by depth, one curve per inference mode."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ._data import time_axis, trained
from ._panels import curves, finish, no_data, panel_grid, spans_decades, styled

MODE_COLOURS = {"closed-form": "black", "reference": "tab:orange", "tolerance": "tab:blue", "cg": "tab:green"}
MODE_NAMES = {"closed-form": "closed form F*", "reference": "GD, reference budget",
              "tolerance": "GD to tolerance", "cg": "CG to tolerance"}


class _Panels:
    """The run's cells by (parameterisation, H) and mode."""

    def __init__(self, run):
        c = run.config
        self.run = run
        self.keys = [(p, h) for p in c.parameterisations for h in sorted(c.hidden_layers)]
        self.cells = {tuple(r.cell.settings[k] for k in ("parameterisation", "hidden_layers", "mode")): r
                      for r in trained(run.results)}
        self.modes = [m for m in c.modes if any(key[2] == m for key in self.cells)]
        self.columns = len(c.hidden_layers)
        self.t, self.t_label = time_axis(c.steps)

    def describe(self) -> str:
        c = self.run.config
        return (f"linear MLPs (N = {c.width}, {'skips' if c.skips else 'no skips'}) on the toy task, "
                f"GD η = {c.learning_rate:g}, T = {c.steps}; reference: β = {c.reference_step_size:g} for "
                f"{c.reference_steps_per_layer}·H steps; tolerance/CG: rtol = {c.rtol:g}, "
                f"≤ {c.max_inference_steps} steps")

    def draw(self, out_dir: Path, name: str, title: str, panel, *, ylabel: str) -> Path:
        """One panel per (parameterisation, H); `panel(axis, cells_by_mode)` draws it
        and returns whether it drew anything."""
        with styled():
            figure, axes = panel_grid(len(self.keys), columns=self.columns, sharex=True)
            for axis, (parameterisation, h) in zip(axes, self.keys, strict=True):  # one panel per key
                by_mode = {m: self.cells[(parameterisation, h, m)] for m in self.modes
                           if (parameterisation, h, m) in self.cells}
                if not panel(axis, by_mode):
                    no_data(axis)
                elif not any(a.get_legend() for a in axes):
                    axis.legend()  # one legend: every panel uses the same mode colours
                axis.set_title(f"{parameterisation}, H = {h} (L = {h + 1})")
                axis.set_xlabel(self.t_label)
                axis.set_ylabel(ylabel)
            return finish(figure, out_dir / name, f"{title}\n{self.describe()}")


def _metric(panels: _Panels, name: str, *, log_y: bool | str = False, numerical_only: bool = False,
            unconverged: bool = False):
    """A panel of metric `name` per mode; `log_y="auto"`: log only when the values span
    more than a decade or so."""

    def panel(axis, by_mode) -> bool:
        drawn = []
        shown = {mode: np.asarray(getattr(result.trace, name), float) for mode, result in by_mode.items()
                 if not (numerical_only and mode == "closed-form")}
        log = spans_decades(*shown.values()) if log_y == "auto" else bool(log_y)
        for mode, values in shown.items():
            colour = MODE_COLOURS[mode]
            width = 2.2 if mode == "closed-form" else 1.2
            drawn += curves(axis, panels.t, {MODE_NAMES[mode]: values}, colours=[colour], log_y=log,
                            legend=False, linewidth=width)
            if unconverged and mode != "closed-form":
                visible = np.isfinite(values) & (values > 0 if log else True)
                missed = ~np.asarray(by_mode[mode].trace.converged, bool) & visible
                axis.plot(panels.t[missed], values[missed], "x", color=colour, markersize=4)
        return bool(drawn)

    return panel


def _losses(panels: _Panels):
    def panel(axis, by_mode) -> bool:
        drawn = []
        for mode, result in by_mode.items():
            drawn += curves(axis, panels.t, {f"PC loss, {MODE_NAMES[mode]}": result.trace.pc_loss},
                            colours=[MODE_COLOURS[mode]], log_y=True, legend=False)
        if by_mode:
            reference = next(iter(by_mode.values()))
            drawn += curves(axis, panels.t, {"BP loss": reference.trace.bp_loss}, colours=["0.5"],
                            linestyle=":", linewidth=2.0, log_y=True, legend=False)
        return bool(drawn)

    return panel


def _cosines(panels: _Panels):
    def panel(axis, by_mode) -> bool:
        drawn = []
        for mode, result in by_mode.items():
            numerical = mode != "closed-form"
            if numerical:
                drawn += curves(axis, panels.t, {MODE_NAMES[mode]: result.trace.closed_form_cosine},
                                colours=[MODE_COLOURS[mode]], legend=False)
            drawn += curves(axis, panels.t, {MODE_NAMES[mode]: result.trace.cosine_lockstep},
                            colours=[MODE_COLOURS[mode]], linestyle="--", labelled=not numerical,
                            legend=False)
        return bool(drawn)

    return panel


def plot_inference_convergence(run, out_dir: Path) -> list[Path]:
    """Figures of an `inference-convergence` run: `energies.png` (F of every mode),
    `energy-error.png` (|F − F*|/F*), `inference-steps.png`, `residuals.png` (relative
    residual, × where the solve did not converge), `losses.png` and `cosines.png`
    (with ∇F* solid, with the BP gradient dashed)."""
    panels = _Panels(run)
    numerical = {"numerical_only": True}
    figures = [
        ("energies.png", "Energy at the final activities, every inference mode",
         _metric(panels, "pc_energy", log_y="auto"), "energy F"),
        ("energy-error.png", "Distance of the numerical energy from the closed form",
         _metric(panels, "closed_form_error", log_y=True, **numerical), r"$|F - F^*|\,/\,F^*$"),
        ("inference-steps.png", "Inference iterations per training step",
         _metric(panels, "inference_steps", log_y=True, unconverged=True, **numerical),
         "iterations (× not converged)"),
        ("residuals.png", r"Final relative residual $\|\nabla_z F\|\,/\,\|\nabla_z F(z_0)\|$",
         _metric(panels, "relative_residual", log_y=True, unconverged=True, **numerical),
         "relative residual (× not converged)"),
        ("losses.png", "Loss of the PC weights per inference mode, and the BP loss", _losses(panels),
         r"loss $\mathcal{L}$"),
        ("cosines.png",
         r"Cosine of the PC gradient with $\nabla F^*$ (solid) and $\nabla\mathcal{L}$ (dashed)",
         _cosines(panels), "cosine"),
    ]
    return [panels.draw(out_dir, name, title, panel, ylabel=ylabel) for name, title, panel, ylabel in figures]
