"""Figures of `width-depth-linear` (docs/background.md §5.1, the paper's Figure 1): quantities
over the width × depth grid as annotated heatmaps (columns N, rows L), averaged over
seeds."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ._data import group, nan_mean, trained
from ._panels import COSINE, SINGLE_PANEL, curves, finish, heatmap, no_data, panel_grid, styled, value_ticks
from ._style import layer_colours

ROW_LABEL = "depth L = H + 1"
COLUMN_LABEL = "width N"


class _Grid:
    """A run's cells arranged by (H, N), with seeds pooled."""

    def __init__(self, run):
        config = run.config
        self.hidden = sorted(config.hidden_layers)
        self.widths = sorted(config.widths)
        self.cells = group(trained(run.results),
                           lambda r: (r.cell.settings["hidden_layers"], r.cell.settings["width"]))
        self.steps = config.steps

    @property
    def depths(self) -> list[int]:
        return [h + 1 for h in self.hidden]

    def matrix(self, value) -> np.ndarray:
        """`value(results of one cell)` → float, for every (H, N); NaN where missing."""
        out = np.full((len(self.hidden), len(self.widths)), np.nan)
        for i, h in enumerate(self.hidden):
            for j, n in enumerate(self.widths):
                results = self.cells.get((h, n))
                if results:
                    out[i, j] = value(results)
        return out

    def at(self, name: str, t: int) -> np.ndarray:
        """The seed mean of metric `name` at step `t`."""

        def mean(results) -> float:
            return float(nan_mean([np.asarray(getattr(r.trace, name), float)[t:t + 1] for r in results])[0])

        return self.matrix(mean)

    def theory(self) -> np.ndarray:
        """The predicted E[tr(S − I)]/d_y of each cell (docs/background.md §4.4)."""
        return self.matrix(lambda rs: float(np.mean([r.info.get("theory_trace_gap", np.nan) for r in rs])))


def _describe(run) -> str:
    c = run.config
    dataset = next((r.info.get("dataset") for r in run.results if r.info.get("dataset")), c.dataset)
    return (f"linear residual MLPs, {c.parameterisation}, closed-form inference, {dataset} (B = {c.batch}), "
            f"Adam η = {c.learning_rate:g}, T = {c.steps}, seeds {', '.join(map(str, c.seeds))}")


_MODES = {
    "lockstep": ("cosine-heatmaps.png", "at the same weights (lockstep)"),
    "trajectory": ("cosine-heatmaps-trajectory.png", "along separate PC and BP trajectories (the paper's Fig. 1)"),
}


def _cosine_heatmaps(grid: _Grid, out_dir: Path, describe: str, mode: str = "lockstep") -> Path:
    times = sorted({0, grid.steps // 2, grid.steps - 1})
    maps = [grid.at(f"cosine_{mode}", t) for t in times]
    finite = np.concatenate([m[np.isfinite(m)] for m in maps])
    low = float(finite.min()) if finite.size else 0.0
    with styled():
        figure, axes = panel_grid(len(times), columns=3)
        for axis, t, values in zip(axes, times, maps, strict=True):  # one panel per time
            heatmap(axis, values, rows=grid.depths, columns=grid.widths, row_label=ROW_LABEL,
                    column_label=COLUMN_LABEL, vmin=min(low, 0.999), vmax=1.0, fmt="{:.3f}",
                    colourbar_label=COSINE)
            axis.set_title(f"t = {t}")
        name, what = _MODES[mode]
        return finish(figure, out_dir / name, f"Cosine of PC and BP gradients {what}\n{describe}")


def _gap_vs_theory(grid: _Grid, out_dir: Path, describe: str) -> Path:
    spectral = grid.at("spectral_gap", 0)
    trace = grid.at("trace_gap", 0)
    theory = grid.theory()
    with np.errstate(invalid="ignore", divide="ignore"):
        error = np.abs(trace - theory) / np.abs(theory)
    shared = np.concatenate([m[np.isfinite(m) & (m > 0)] for m in (spectral, trace, theory)])
    low, high = (float(shared.min()), float(shared.max())) if shared.size else (None, None)
    panels = [
        (spectral, r"$\|S(\theta_0)\|_2 - 1$, measured", low, high, r"$\|S\|_2 - 1$"),
        (trace, r"$\mathrm{tr}(S(\theta_0) - I)/d_y$, measured", low, high, r"$\mathrm{tr}(S - I)/d_y$"),
        (theory, r"$E[\mathrm{tr}(S - I)]/d_y$, theory (background.md §4.4)", low, high, r"$\mathrm{tr}(S - I)/d_y$"),
        (error, "|measured − theory| / theory (trace)", None, None, "relative difference"),
    ]
    with styled():
        figure, axes = panel_grid(len(panels), columns=2, size=(4.0, 3.0))
        for axis, (values, title, vmin, vmax, label) in zip(axes, panels, strict=True):
            heatmap(axis, values, rows=grid.depths, columns=grid.widths, row_label=ROW_LABEL,
                    column_label=COLUMN_LABEL, log=True, vmin=vmin, vmax=vmax, fmt="{:.2g}",
                    colourbar_label=label)
            axis.set_title(title)
        return finish(figure, out_dir / "gap-vs-theory.png", f"PC–BP gap S − I at initialisation\n{describe}")


def _gap_vs_width(grid: _Grid, out_dir: Path, describe: str) -> Path:
    from matplotlib.lines import Line2D

    widths = np.asarray(grid.widths, dtype=float)
    trace, spectral = grid.at("trace_gap", 0), grid.at("spectral_gap", 0)
    theory = grid.theory()
    colours = layer_colours(len(grid.hidden))
    with styled():
        figure, (axis,) = panel_grid(1, size=SINGLE_PANEL)
        depth_lines = []
        for i, h in enumerate(grid.hidden):
            options = {"colours": [colours[i]], "log_x": True, "log_y": True, "legend": False}
            depth_lines += curves(axis, widths, {f"L = {h + 1}": trace[i]}, marker="o", **options)
            curves(axis, widths, {"": spectral[i]}, marker="s", linestyle="none", fillstyle="none",
                   labelled=False, **options)
            curves(axis, widths, {"": theory[i]}, linestyle=":", labelled=False, **options)
        if depth_lines:
            keys = [Line2D([], [], color="0.3", marker="o", label=r"$\mathrm{tr}(S - I)/d_y$, measured"),
                    Line2D([], [], color="0.3", marker="s", fillstyle="none", linestyle="none",
                           label=r"$\|S\|_2 - 1$, measured"),
                    Line2D([], [], color="0.3", linestyle=":", label=r"theory $E[\mathrm{tr}(S - I)]/d_y$")]
            axis.legend(handles=depth_lines + keys)
            value_ticks(axis, widths)
        else:
            no_data(axis)
        axis.set_xlabel("width N")
        axis.set_ylabel(r"gap at $\theta_0$")
        axis.set_title(r"$S(\theta_0) - I$ against width (theory $\propto L/N$)")
        return finish(figure, out_dir / "gap-vs-width.png", f"PC–BP gap against width per depth\n{describe}")


def _energy_loss(grid: _Grid, out_dir: Path, describe: str) -> Path:
    energy = grid.at("pc_energy", 0)
    loss = grid.at("pc_loss", 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = energy / loss
    shared = np.concatenate([m[np.isfinite(m) & (m > 0)] for m in (energy, loss)])
    low, high = (float(shared.min()), float(shared.max())) if shared.size else (None, None)
    panels = [
        (energy, r"equilibrated energy $F^*(\theta_0)$", low, high),
        (loss, r"loss $\mathcal{L}(\theta_0)$", low, high),
        (ratio, r"$F^*(\theta_0)\,/\,\mathcal{L}(\theta_0)$", None, None),
    ]
    with styled():
        figure, axes = panel_grid(len(panels), columns=3)
        for axis, (values, title, vmin, vmax) in zip(axes, panels, strict=True):
            heatmap(axis, values, rows=grid.depths, columns=grid.widths, row_label=ROW_LABEL,
                    column_label=COLUMN_LABEL, log=True, vmin=vmin, vmax=vmax, fmt="{:.3g}",
                    colourbar_label=title)
            axis.set_title(title)
        return finish(figure, out_dir / "energy-loss-heatmaps.png",
                      f"Energy and loss at initialisation\n{describe}")


def plot_width_depth_linear(run, out_dir: Path) -> list[Path]:
    """Figures of a `width-depth-linear` run: `cosine-heatmaps.png` (lockstep cosine at
    t = 0, T/2, T − 1), `cosine-heatmaps-trajectory.png` (the same along the separate
    trajectories, as the paper plots it; equal at t = 0), `gap-vs-theory.png` (‖S‖₂ − 1, tr(S − I)/d_y, the theory and
    their relative difference at θ₀), `gap-vs-width.png` (the same against N, per L) and
    `energy-loss-heatmaps.png` (F*(θ₀), 𝓛(θ₀) and their ratio)."""
    grid = _Grid(run)
    describe = _describe(run)
    return [
        _cosine_heatmaps(grid, out_dir, describe),
        _cosine_heatmaps(grid, out_dir, describe, "trajectory"),
        _gap_vs_theory(grid, out_dir, describe),
        _gap_vs_width(grid, out_dir, describe),
        _energy_loss(grid, out_dir, describe),
    ]

