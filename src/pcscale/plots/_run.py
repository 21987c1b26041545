"""`plot_run`: a results folder in, that experiment's figures out."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from ._coord import coord_check
from ._inference import plot_inference_convergence
from ._linear import plot_width_depth_linear
from ._panels import finish, styled
from ._toy import plot_toy_family
from ._training import plot_training


def _plot_coord_check(run, out_dir: Path) -> list[Path]:
    """`coord-check-<parameterisation>.png`, one per cell, by `coord_check`."""
    from ..experiments.coord_check import claim
    from ..theory import coord_check_from_record

    c = run.config
    paths = []
    for result in run.results:
        name = result.cell.settings.get("parameterisation", result.cell.name)
        check = coord_check_from_record(result.info["coord_check"], f"cell {result.cell.name!r}")
        dataset = result.info.get("dataset", c.dataset)
        # The verdict is computed from this cell's spreads, never a fixed sentence.
        title = (f"Coordinate check, {name} (flat lines mean width-stable)\n{claim(name, result)}\n"
                 f"{c.activation} residual MLPs, L = {c.hidden_layers + 1}, {dataset} (B = {c.batch}), "
                 f"Adam η = {c.learning_rate:g}, {c.steps} PC steps, {c.seeds} seed(s)")
        with styled():
            figure = coord_check(check)
            figure.tight_layout(rect=(0, 0, 1, 0.88))  # room for the three-line title
            paths.append(finish(figure, out_dir / f"coord-check-{name}.png", title))
    return paths


FIGURES = {
    "width-depth-linear": plot_width_depth_linear,
    "toy": plot_toy_family,
    "toy-sp": plot_toy_family,
    "gamma0-sweep": plot_toy_family,
    "saddle": plot_toy_family,
    "inference-convergence": plot_inference_convergence,
    "residual-mlp": plot_training,
    "resnet-cnn": plot_training,
    "transformer": plot_training,
    "coord-check": _plot_coord_check,
}


def plot_run(run_dir, *, out_dir=None) -> list[Path]:
    """Draw the figures of one experiment's results folder (docs/background.md §5) as PNG files.

    Cells that have not finished yet are left out (with a warning), so a sweep can be
    plotted while it runs. Nothing is trained or compiled: the figures come from the
    saved results only. `docs/plots.md` lists the figures of each experiment.

    **Arguments:**

    - `run_dir`: a folder written by `pcscale run` /
      [`pcscale.experiments.run`][pcscale.experiments.run], or the
      [`RunResults`][pcscale.experiments.RunResults] such a call returned.
    - `out_dir`: where to write the figures; default `<run_dir>/figures`.

    **Returns:** the paths of the files written, in drawing order.
    """
    from ..experiments import RunResults, load_run

    if isinstance(run_dir, RunResults):
        run = run_dir
    elif isinstance(run_dir, (str, os.PathLike)):
        run = load_run(run_dir)
    else:
        raise TypeError(f"`run_dir` must be a results folder (str or path) or a RunResults, got "
                        f"{type(run_dir).__name__}.")
    if run.experiment not in FIGURES:
        raise ValueError(f"no figures are defined for experiment {run.experiment!r} (in {run.out_dir}); "
                         f"plot_run draws {', '.join(FIGURES)}. Give the folder of one of those runs.")
    out_dir = Path(out_dir) if out_dir is not None else Path(run.out_dir) / "figures"
    if run.missing:
        shown = ", ".join(run.missing[:5]) + (" …" if len(run.missing) > 5 else "")
        warnings.warn(f"{len(run.missing)} cells of {run.out_dir} are not finished ({shown}); plotting the "
                      f"{len(run.results)} that are.", stacklevel=2)
    if not run.results:
        return []
    return FIGURES[run.experiment](run, out_dir)
