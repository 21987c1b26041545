"""The registry of experiments: names to `Experiment`s, and the two entry points."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import jax

from . import (
    coord_check, gamma0_sweep, inference_convergence, residual_mlp, resnet_cnn, saddle, toy, toy_sp, transformer,
    width_depth_linear,
)
from ._config import apply_overrides
from ._runner import Experiment, Parallel, RunResults, load_run as _load_run, run_experiment

EXPERIMENTS: dict[str, Experiment] = {
    module.EXPERIMENT.name: module.EXPERIMENT
    for module in (
        width_depth_linear, toy, toy_sp, gamma0_sweep, saddle, inference_convergence, residual_mlp,
        resnet_cnn, transformer, coord_check,
    )
}


def get(name: str) -> Experiment:
    """The experiment called `name` (see `EXPERIMENTS`, or `pcscale list`)."""
    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; choose one of {', '.join(EXPERIMENTS)} (pcscale list).")
    return EXPERIMENTS[name]


def run(
    name: str,
    preset: str = "quick",
    out_dir: str | Path | None = None,
    *,
    overrides: Sequence[str] = (),
    float64: bool | None = None,
    force: bool = False,
    progress: bool = True,
    devices: int | Sequence[jax.Device] | None = 1,
    parallel: Parallel = Parallel.CELLS,
) -> RunResults:
    """Run experiment `name` from a preset with `key=value` overrides, into `out_dir`
    (default `runs/<name>-<preset>`); see [`run_experiment`][pcscale.experiments.run_experiment].

    **Arguments:**

    - `name`: an experiment name, e.g. "width-depth-linear".
    - `preset`: "quick" (minutes on a laptop CPU) or "paper" (the paper's sizes).
    - `out_dir`: the run folder.
    - `overrides`: e.g. `("widths=8,64", "steps=5")`, parsed by each field's type.
    - `float64`: force float64 on (True) or off (False); default: the preset's.
    - `force`, `progress`, `devices`, `parallel`: as for `run_experiment`.
    """
    experiment = get(name)
    config = apply_overrides(experiment.preset(preset), overrides, experiment=name)
    if float64 is not None:
        config = apply_overrides(config, [f"float64={float64}"], experiment=name)
    out_dir = Path(out_dir) if out_dir is not None else Path("runs") / f"{name}-{preset}"
    return run_experiment(experiment, config, out_dir, force=force, progress=progress, devices=devices,
                          parallel=parallel, preset=preset)


def load_run(out_dir: str | Path) -> RunResults:
    """Read a run folder: its config and finished cells (see `RunResults.missing`)."""
    return _load_run(out_dir, EXPERIMENTS)
