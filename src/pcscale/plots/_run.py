"""`plot_run`: a results folder in, that experiment's figures out. Which functions draw
an experiment's figures is declared by the experiment itself (`Experiment.figures`, in
the experiments registry); this module imports them by name when it draws."""

from __future__ import annotations

import importlib
import os
import warnings
from collections.abc import Callable
from pathlib import Path

from ._coord import coord_check
from ._panels import finish, styled


def plot_coord_check_run(run, out_dir: Path) -> list[Path]:
    """`coord-check-<parameterisation>.png`, one per cell, by `coord_check`."""
    from ..experiments import coord_check_from_record
    from ..experiments.coord_check import claim

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


def resolve_figure(name: str) -> Callable:
    """The drawing function an experiment names as "module:function" (`Experiment.figures`)."""
    module_name, _, function_name = name.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        if module_name.startswith("pcscale.") and error.name == module_name:
            raise ValueError(f"the figure {name!r} names the module {module_name!r}, which does not exist; fix "
                             "the experiment's `figures`.") from None
        raise  # a missing dependency of the plotting code (e.g. matplotlib): the plot extra
    function = getattr(module, function_name, None)
    if not callable(function):
        raise TypeError(f"the figure {name!r} names {function_name!r}, which module {module_name!r} does not "
                        "define as a function; fix the experiment's `figures`.")
    return function


def figures() -> dict[str, tuple[Callable, ...]]:
    """Every experiment that draws figures → its drawing functions, read from the
    experiments registry."""
    from ..experiments import EXPERIMENTS

    return {name: tuple(resolve_figure(figure) for figure in experiment.figures)
            for name, experiment in EXPERIMENTS.items() if experiment.figures}


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
    from ..experiments import EXPERIMENTS, RunResults, load_run

    if isinstance(run_dir, RunResults):
        run = run_dir
    elif isinstance(run_dir, (str, os.PathLike)):
        run = load_run(Path(run_dir))
    else:
        raise TypeError(f"`run_dir` must be a results folder (str or path) or a RunResults, got "
                        f"{type(run_dir).__name__}.")
    experiment = EXPERIMENTS.get(run.experiment)
    if experiment is None or not experiment.figures:
        drawn = [name for name, found in EXPERIMENTS.items() if found.figures]
        raise ValueError(f"no figures are defined for experiment {run.experiment!r} (in {run.out_dir}); "
                         f"plot_run draws {', '.join(drawn)}. Give the folder of one of those runs.")
    drawers = [resolve_figure(figure) for figure in experiment.figures]
    out_dir = Path(out_dir) if out_dir is not None else Path(run.out_dir) / "figures"
    if run.missing:
        shown = ", ".join(run.missing[:5]) + (" …" if len(run.missing) > 5 else "")
        warnings.warn(f"{len(run.missing)} cells of {run.out_dir} are not finished ({shown}); plotting the "
                      f"{len(run.results)} that are.", stacklevel=2)
    if not run.results:
        return []
    return [path for draw in drawers for path in draw(run, out_dir)]
