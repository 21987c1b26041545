"""Figures of the nonlinear training experiments (docs/background.md §5.7–5.9): `residual-mlp`,
`resnet-cnn` and `transformer`. One curve per width, coloured from narrow (dark) to wide
(light), seeds averaged; lockstep cosines solid, trajectory cosines dashed."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ._data import group, mean_metric, nan_mean, spread_indices, time_axis, trained
from ._panels import (
    COSINE,
    SINGLE_PANEL,
    curves,
    finish,
    no_data,
    panel_grid,
    spans_decades,
    styled,
    value_ticks,
)
from ._style import layer_colours

MAX_LAYER_PANELS = 8


class _Widths:
    """A training run's cells by width, with labels as the paper writes them."""

    def __init__(self, run):
        self.run = run
        self.by_width = dict(sorted(group(trained(run.results), lambda r: r.cell.settings["width"]).items()))
        self.colours = layer_colours(len(self.by_width))
        self.t, self.t_label = time_axis(run.config.steps)
        first = next(iter(self.by_width.values()))[0] if self.by_width else None
        self.tracked = list(first.info.get("tracked_layers", [])) if first else []
        self.layer_labels = list(first.info.get("layer_labels", [])) if first else []
        self.per_token = bool(first.info.get("per_token")) if first else False

    def label(self, width: int, cells) -> str:
        if self.run.experiment == "resnet-cnn":
            return f"N = 9C = {cells[0].info.get('plot_width', 9 * width)}"
        if self.run.experiment == "transformer":
            return f"d = {width}"
        return f"N = {width}"

    def series(self, value) -> dict:
        """label → `value(cells of one width)`."""
        return {self.label(w, cells): value(cells) for w, cells in self.by_width.items()}

    def describe(self) -> str:
        c = self.run.config
        first = next(iter(self.by_width.values()))[0] if self.by_width else None
        dataset = first.info.get("dataset", c.dataset) if first else c.dataset
        if self.run.experiment == "residual-mlp":
            model = f"{c.activation} residual MLPs, L = {c.hidden_layers + 1}"
        elif self.run.experiment == "resnet-cnn":
            model = f"3-stage {c.activation} ResNets, n_res = {c.n_res}"
        else:
            model = f"transformers, {c.n_blocks} blocks, {c.n_heads} heads, T_seq = {c.seq_len}"
        seeds = f"seeds {', '.join(map(str, c.seeds))}"
        paper_seed = first.info.get("paper_seed") if first else None
        if paper_seed is not None and len(c.seeds) > 1:
            seeds += f" (the paper's: {paper_seed})"
        return (f"{model}, {c.parameterisation}, {dataset} (B = {c.batch}), Adam η = {c.learning_rate:g}, "
                f"T = {c.steps}; inference {c.solver} β = {c.step_size:g}, rtol = {c.rtol:g}, "
                f"≤ {c.max_inference_steps} steps; {seeds}")


def _cosine_pair(axis, widths: _Widths, lockstep: dict, trajectory: dict, *, legend: bool = True) -> bool:
    drawn = curves(axis, widths.t, lockstep, colours=widths.colours, legend=legend)
    curves(axis, widths.t, trajectory, colours=widths.colours, linestyle="--", labelled=False, legend=False)
    return bool(drawn)


def _cosine(widths: _Widths, out_dir: Path) -> Path:
    with styled():
        figure, (axis,) = panel_grid(1, size=SINGLE_PANEL)
        if not _cosine_pair(axis, widths, widths.series(lambda c: mean_metric(c, "cosine_lockstep")),
                            widths.series(lambda c: mean_metric(c, "cosine_trajectory"))):
            no_data(axis)
        axis.set_xlabel(widths.t_label)
        axis.set_ylabel(COSINE)
        axis.set_title("lockstep (same weights) solid, along the BP trajectory dashed")
        return finish(figure, out_dir / "cosine.png", f"Cosine of PC and BP gradients\n{widths.describe()}")


def _layer_metric(cells, name: str, layer: int) -> np.ndarray:
    return nan_mean([np.asarray(getattr(r.trace, name), float)[:, layer] for r in cells
                     if np.ndim(getattr(r.trace, name)) == 2 and layer < np.shape(getattr(r.trace, name))[1]])


def _layer_cosine(widths: _Widths, out_dir: Path) -> Path:
    chosen = spread_indices(len(widths.tracked), MAX_LAYER_PANELS)
    note = "" if len(chosen) == len(widths.tracked) else f" ({len(chosen)} of {len(widths.tracked)} layers)"
    with styled():
        figure, axes = panel_grid(max(len(chosen), 1), sharex=True, sharey=True)
        # One panel more than layers when none is tracked (it says so).
        for axis, index in zip(axes, chosen, strict=False):
            layer = widths.tracked[index]
            name = widths.layer_labels[index] if index < len(widths.layer_labels) else f"layer {layer}"
            lockstep = widths.series(lambda c, layer=layer: _layer_metric(c, "layer_cosine_lockstep", layer))
            trajectory = widths.series(lambda c, layer=layer: _layer_metric(c, "layer_cosine_trajectory", layer))
            if not _cosine_pair(axis, widths, lockstep, trajectory, legend=axis is axes[0]):
                no_data(axis)
            axis.set_title(name)
            axis.set_xlabel(widths.t_label)
            axis.set_ylabel("layer cosine")
        if not chosen:
            no_data(axes[0], "no tracked layers")
        return finish(figure, out_dir / "layer-cosine.png",
                      f"Per-layer cosine of PC and BP gradients{note} (lockstep solid, trajectory dashed)\n"
                      f"{widths.describe()}")


def _layer_profile(widths: _Widths, out_dir: Path) -> Path:
    """Cosine of every tracked layer at the first and the last step."""
    x = np.arange(len(widths.tracked))
    last = len(widths.t) - 1
    with styled():
        figure, axes = panel_grid(2, columns=2, size=(max(3.4, 0.35 * len(x) + 1.5), 3.0), sharey=True)
        for axis, t in zip(axes, (0, last), strict=True):
            series = widths.series(lambda c, t=t: np.array([_layer_metric(c, "layer_cosine_lockstep", layer)[t]
                                                            for layer in widths.tracked]))
            if not curves(axis, x, series, colours=widths.colours, marker="o", markersize=3,
                          legend=axis is axes[0]):
                no_data(axis)
            axis.set_xticks(x, widths.layer_labels[: len(x)] or [str(i) for i in widths.tracked],
                            rotation=90 if len(x) > 8 else 0)
            axis.set_xlabel("tracked layer")
            axis.set_ylabel("layer cosine (lockstep)")
            axis.set_title(f"t = {t}")
        return finish(figure, out_dir / "layer-cosine-profile.png",
                      f"Per-layer cosine across depth, first and last step\n{widths.describe()}")


def _energy_loss(widths: _Widths, out_dir: Path) -> Path:
    unit = " per token" if widths.per_token else ""
    panels = [
        ("pc_energy", f"PC energy F at the final activities{unit}", True),
        ("pc_loss", r"PC weights' loss $\mathcal{L}(\theta_t^{PC})$" + unit, True),
        ("bp_loss", r"BP loss $\mathcal{L}(\theta_t^{BP})$" + unit, True),
        ("energy_loss_ratio", r"$F\,/\,\mathcal{L}$ at $\theta_t^{PC}$", False),
    ]
    with styled():
        figure, axes = panel_grid(len(panels), columns=2, sharex=True)
        for axis, (name, title, log_y) in zip(axes, panels, strict=True):
            series = widths.series(lambda c, name=name: mean_metric(c, name))
            log_y = log_y and spans_decades(*series.values())
            first = axis is axes[0]
            if not curves(axis, widths.t, series, colours=widths.colours, log_y=log_y, legend=first):
                no_data(axis)
            axis.set_title(title)
            axis.set_xlabel(widths.t_label)
        return finish(figure, out_dir / "energy-loss.png", f"Energies and losses\n{widths.describe()}")


def _inference(widths: _Widths, out_dir: Path) -> Path:
    budget = widths.run.config.max_inference_steps
    with styled():
        figure, axes = panel_grid(2, columns=2, sharex=True)
        residual_axis, steps_axis = axes
        for (width, cells), colour in zip(widths.by_width.items(), widths.colours, strict=True):
            label = widths.label(width, cells)
            residual = mean_metric(cells, "relative_residual")
            steps = mean_metric(cells, "inference_steps")
            converged = np.all([np.asarray(r.trace.converged, bool) for r in cells], axis=0)
            curves(residual_axis, widths.t, {label: residual}, colours=[colour], log_y=True, legend=False)
            curves(steps_axis, widths.t, {label: steps}, colours=[colour], legend=False)
            missed = ~converged & np.isfinite(residual) & (residual > 0)
            residual_axis.plot(widths.t[missed], residual[missed], "x", color=colour, markersize=5)
            steps_axis.plot(widths.t[~converged], steps[~converged], "x", color=colour, markersize=5)
        steps_axis.axhline(budget, color="0.5", linestyle=":", label=f"budget {budget}")
        for axis in axes:
            if axis.get_lines():
                axis.legend()
            axis.set_xlabel(widths.t_label)
        residual_axis.set_ylabel(r"relative residual $\|\nabla_z F\|\,/\,\|\nabla_z F(z_{ff})\|$")
        residual_axis.set_title("final inference residual (× not converged)")
        steps_axis.set_ylabel("inference iterations")
        steps_axis.set_title("iterations used (× not converged)")
        return finish(figure, out_dir / "inference.png",
                      f"Inference diagnostics per training step\n{widths.describe()}")


def _cosine_vs_iterations(widths: _Widths, out_dir: Path) -> Path:
    with styled():
        figure, (axis,) = panel_grid(1, size=SINGLE_PANEL)
        drawn, budgets_drawn = False, []
        for (width, cells), colour in zip(widths.by_width.items(), widths.colours, strict=True):
            budgets = np.asarray(cells[0].info.get("iteration_sweep", []), float)
            cosines = nan_mean([np.asarray(r.info.get("cosine_vs_iterations", []), float) for r in cells])
            if budgets.size and cosines.shape == budgets.shape:
                drawn |= bool(curves(axis, budgets, {widths.label(width, cells): cosines}, colours=[colour],
                                     marker="o", log_x=True, legend=False))
                budgets_drawn += list(budgets)
        if drawn:
            axis.legend()
            value_ticks(axis, budgets_drawn)
        else:
            no_data(axis, "no iteration sweep in this run")
        axis.set_xlabel("inference iterations")
        axis.set_ylabel(COSINE + r" at $\theta_0$")
        return finish(figure, out_dir / "cosine-vs-iterations.png",
                      f"Cosine at initialisation against the inference budget\n{widths.describe()}")


def plot_training(run, out_dir: Path) -> list[Path]:
    """Figures of `residual-mlp`, `resnet-cnn` and `transformer` runs: `cosine.png`,
    `layer-cosine.png` (one panel per tracked layer, at most 8), `layer-cosine-profile.png`,
    `energy-loss.png`, `inference.png`, and for `resnet-cnn` also
    `cosine-vs-iterations.png`."""
    widths = _Widths(run)
    if not widths.by_width:
        return []
    paths = [_cosine(widths, out_dir), _layer_cosine(widths, out_dir), _layer_profile(widths, out_dir),
             _energy_loss(widths, out_dir), _inference(widths, out_dir)]
    if run.experiment == "resnet-cnn":
        paths.append(_cosine_vs_iterations(widths, out_dir))
    return paths
