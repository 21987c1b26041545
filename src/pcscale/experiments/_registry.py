"""The one registry of experiments: names to `Experiment`s, each declaring its config,
presets, cells, summary and figures; and the entry points that resolve, run and read
them."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import jax

from . import (
    bench,
    coord_check,
    gamma0_sweep,
    inference_convergence,
    pc_variants,
    residual_mlp,
    resnet_cnn,
    saddle,
    toy,
    toy_sp,
    transformer,
    width_depth_linear,
)
from ._config import apply_overrides, describe_config
from ._runner import Experiment, Parallel, RunResults, load_run as _load_run, run_experiment


def _registry(experiments: Sequence[Experiment]) -> dict[str, Experiment]:
    """Name → experiment, refusing two experiments of one name."""
    registry: dict[str, Experiment] = {}
    for experiment in experiments:
        if experiment.name in registry:
            raise ValueError(f"two experiments are named {experiment.name!r}; give each a name of its own.")
        registry[experiment.name] = experiment
    return registry


EXPERIMENTS: dict[str, Experiment] = _registry([
    module.EXPERIMENT for module in (
        width_depth_linear, toy, toy_sp, gamma0_sweep, saddle, inference_convergence, residual_mlp,
        resnet_cnn, transformer, coord_check, pc_variants,
    )
] + list(bench.EXPERIMENTS))
"""Every experiment of the paper by name (the names `pcscale list` prints), each an
[`Experiment`][pcscale.experiments.Experiment] with its config class and presets."""


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
    devices: int | Sequence[jax.Device] | None = 1,  # pyright: ignore[reportInvalidTypeForm]  # JAX binds jax.Device by assignment
    parallel: Parallel = Parallel.CELLS,
) -> RunResults:
    """Run experiment `name` from a preset with `key=value` overrides, into `out_dir`
    (default `runs/<name>-<preset>`); see [`run_experiment`][pcscale.experiments.run_experiment].

    **Arguments:**

    - `name`: an experiment name, e.g. "width-depth-linear".
    - `preset`: "quick" (minutes on a laptop CPU) or "paper" (the paper's sizes).
    - `out_dir`: the run folder.
    - `overrides`: e.g. `("widths=8,64", "steps=5")`, parsed by each field's type.
    - `float64`: force float64 on (True) or off (False); default: the preset's. The
      process-wide 64-bit flag of JAX is left as it is (see `run_experiment`).
    - `force`, `progress`, `devices`, `parallel`: as for `run_experiment`.
    """
    experiment, config = get(name), resolve_config(name, preset, overrides=overrides, float64=float64)
    out_dir = Path(out_dir) if out_dir is not None else Path("runs") / f"{name}-{preset}"
    return run_experiment(experiment, config, out_dir, force=force, progress=progress, devices=devices,
                          parallel=parallel, preset=preset)


def resolve_config(name: str, preset: str = "quick", *, overrides: Sequence[str] = (),
                   float64: bool | None = None):
    """The config `run` runs: experiment `name`'s `preset` with the `key=value`
    `overrides` applied, then `float64` (None: the preset's)."""
    experiment = get(name)
    config = apply_overrides(experiment.preset(preset), overrides, experiment=name)
    if float64 is not None:
        config = apply_overrides(config, [f"float64={float64}"], experiment=name)
    return config


def describe(name: str, preset: str = "quick") -> str:
    """Every field of experiment `name`'s config: its value in `preset`, type, default,
    valid names and one-line meaning (what `pcscale show-config` prints)."""
    config = get(name).preset(preset)
    return describe_config(config, title=f"{name} --preset {preset} (change a key with --set KEY=VALUE):")


def load_run(out_dir: str | Path) -> RunResults:
    """Read a run folder: its config and finished cells (see `RunResults.missing`); or a
    benchmark suite folder (`pcscale bench`, one run folder per method), as one run."""
    from ._bench_suite import is_suite

    if is_suite(out_dir):
        from ._bench_suite import load_suite

        return load_suite(out_dir)
    return _load_run(out_dir, EXPERIMENTS)


def summary(run: RunResults) -> str:
    """The terminal summary of a run: the experiment's tables and the paper's claims over
    the cells that finished without failing, then the failed cells (each with its step
    and reason, never averaged into a conclusion) and the cells not finished yet."""
    experiment = get(run.experiment)
    healthy = [result for result in run.results if result.failure is None]
    parts = []
    if healthy:
        parts.append(experiment.summarise(run.config, healthy))
    elif run.results:
        parts.append(f"{run.experiment}: every finished cell failed, so there is no table and no claim is checked.")
    if run.failed:
        solver = (", or infer with a solver that converges on this network (--set solver=auto)"
                  if hasattr(run.config, "solver") else "")
        if hasattr(run.config, "step_size"):
            solver = f", lower the activity step where a fixed-step inference diverged (--set step_size=…){solver}"
        lines = "\n".join(f"  {result.cell.name}: {result.failure}" for result in run.failed)
        parts.append(
            f"FAILED: {len(run.failed)} of {len(run.results)} finished cells failed in training and are left out "
            f"of the tables and claims above:\n{lines}\nFix: lower the learning rate (--set learning_rate=…)"
            f"{solver}. Failed cells are saved like finished ones (rerunning the same config reuses them): "
            "change the config and run into a new --out."
        )
    if run.missing:
        more = " …" if len(run.missing) > 8 else ""
        parts.append(f"{len(run.missing)} cells not finished yet: {', '.join(run.missing[:8])}{more} (rerun the "
                     "same command to finish them)")
    return "\n\n".join(parts)
