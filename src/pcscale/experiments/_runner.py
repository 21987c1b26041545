"""The sweep runner: one results file per cell, written atomically; the resolved config,
versions and device saved beside them; finished cells skipped on rerun."""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh

from .._sharding import make_data_mesh, nearest_sizes, resolve_devices
from . import _names
from ._concurrent import run_concurrently
from ._config import from_dict
from ._folder import CELLS, RUN_FILE, ConfigMismatch, FolderLock, finished, prepare, read_run_file
from ._names import resolve_data
from ._results import Cell, CellResult, cell_to_json, write_json


@dataclasses.dataclass(frozen=True)
class Experiment:
    """One experiment of the paper, as the registry holds it.

    - `name`, `description`: as `pcscale list` shows them.
    - `config_type`: the frozen config dataclass; `presets`: "quick" and "paper" configs.
    - `cells(config)`: the grid, a list of [`Cell`][pcscale.experiments.Cell]s.
    - `run_cell(config, cell, context)`: runs one cell with a
      [`CellContext`][pcscale.experiments.CellContext] (progress bars, data-parallel
      mesh), returns a [`CellResult`][pcscale.experiments.CellResult].
    - `summarise(config, results)`: the terminal table.
    - `resolve_data(config)`: what the config's data resolve to on this machine (dataset
      used, source, fingerprint; None for generated data), read once per run before the
      cells and part of every cell's identity; the default reads the config's `dataset`,
      `data_root` and `fallback` fields.
    - `figures`: the functions that draw the run's figures, each named "module:function"
      (e.g. "pcscale.plots._training:plot_training") and called as `function(run,
      out_dir)` for a [`RunResults`][pcscale.experiments.RunResults], returning the paths
      it wrote. They are named, not imported, so that the experiments never import the
      plotting code (which needs the `plot` extra); `pcscale.plots.plot_run` imports
      them when it draws.
    """

    name: str
    description: str
    config_type: type
    presets: dict[str, Any]
    cells: Callable[[Any], list[Cell]]
    run_cell: Callable[[Any, Cell, CellContext], CellResult]
    summarise: Callable[[Any, list[CellResult]], str]
    resolve_data: Callable[[Any], dict[str, Any] | None] = resolve_data
    figures: tuple[str, ...] = ()

    def __post_init__(self):
        if not isinstance(self.figures, tuple):
            raise TypeError(f"`figures` of experiment {self.name!r} must be a tuple of \"module:function\" names, "
                            f"got {self.figures!r}; e.g. (\"pcscale.plots._training:plot_training\",).")
        for figure in self.figures:
            module, sep, function = figure.partition(":") if isinstance(figure, str) else ("", "", "")
            if not (sep and module.strip() and function.strip()) or ":" in function:
                raise ValueError(f"`figures` of experiment {self.name!r} names {figure!r}, which is not "
                                 "\"module:function\"; e.g. \"pcscale.plots._training:plot_training\".")
        for name, config in self.presets.items():
            if not isinstance(config, self.config_type):
                raise TypeError(f"preset {name!r} of experiment {self.name!r} must be a "
                                f"{self.config_type.__name__}, got {type(config).__name__}.")

    def preset(self, name: str):
        if name not in self.presets:
            raise ValueError(f"unknown preset {name!r} for {self.name}; choose one of {', '.join(self.presets)}.")
        return self.presets[name]


class Parallel(enum.Enum):
    """How [`run_experiment`][pcscale.experiments.run_experiment] uses several devices.

    - `CELLS`: independent cells run concurrently, one per device (each cell whole on
      its device); for grids of cells too small to split, such as the width × depth
      sweeps.
    - `BATCH`: the cells run one after another, each data parallel over every device
      (batch split, weights replicated); for cells too large for one device. This is
      also the mode that spans several hosts.
    """

    CELLS = "cells"
    BATCH = "batch"


@dataclasses.dataclass(frozen=True)
class CellContext:
    """What the runner tells a cell besides its config: whether to show per-step
    `progress`, and the data-parallel `mesh` to train on (None: the current default
    device). Cells that do not go through `train_lockstep` (DMFT curves, coordinate
    checks) ignore the mesh and run on the default device."""

    progress: bool = False
    mesh: Mesh | None = None


@dataclasses.dataclass(frozen=True)
class RunResults:
    """A run folder's content: the `experiment` name, its `config`, the `results` of
    every cell present (in grid order), and which cells this call `computed` and which it
    `reused` from an earlier call (resume)."""

    experiment: str
    config: Any
    results: list[CellResult]
    out_dir: Path
    computed: tuple[str, ...] = ()
    reused: tuple[str, ...] = ()
    missing: tuple[str, ...] = ()

    @property
    def failed(self) -> tuple[CellResult, ...]:
        """The cells whose training failed (`CellResult.failure`: a non-finite or
        diverging loss, a refused update), in grid order."""
        return tuple(result for result in self.results if result.failure is not None)


def run_experiment(
    experiment: Experiment,
    config,
    out_dir: str | Path,
    *,
    force: bool = False,
    progress: bool = True,
    devices: int | Sequence[jax.Device] | None = 1,  # pyright: ignore[reportInvalidTypeForm]  # JAX binds jax.Device by assignment
    parallel: Parallel = Parallel.CELLS,
    preset: str | None = None,
) -> RunResults:
    """Run every cell of `config` that `out_dir` does not already hold, writing one
    results file per cell as soon as it finishes (temporary file, then rename): an
    interrupted sweep (Ctrl-C, kill, an error) keeps every finished cell, and rerunning
    the same command computes only the rest.

    **Arguments:**

    - `experiment`: from the registry (`pcscale.experiments.get(name)`).
    - `config`: its config (e.g. `experiment.preset("quick")`).
    - `out_dir`: the run folder; created if absent. A folder holding results of another
      experiment or config is refused ([`ConfigMismatch`][pcscale.experiments.ConfigMismatch],
      naming each setting that differs) unless `force`, which deletes those results
      first. A cell is reused only if it was computed for this experiment, config, cell
      and data (what the config's dataset resolves to now: see `Experiment.resolve_data`);
      cells computed on other data (e.g. the offline fallback, before the dataset was
      placed in the data root) are computed again, with a warning. While the run goes
      on, the folder is claimed (an exclusive lock on `.pcscale-lock`, released by the
      operating system when the process ends); a second run into it refuses with
      [`FolderInUse`][pcscale.experiments.FolderInUse] instead of computing the same
      cells. A cell whose training failed is saved
      with the failure (see `RunResults.failed`) and reused like any other.
    - `progress`: progress bars over cells and steps.
    - `devices`: how many devices to use (an int), which (a sequence of `jax.Device`),
      or None for all of them; default 1, the current default device.
    - `parallel`: with several devices, [`Parallel.CELLS`][pcscale.experiments.Parallel]
      (one cell per device, concurrently) or `Parallel.BATCH` (each cell data parallel
      over all of them). Both write the same results files as a one-device run, up to
      the order of floating-point sums in `BATCH` mode and the wall times.
    - `preset`: the name of the preset `config` came from, if any; recorded in run.json
      and named in a refusal (the config's values are what identify the run).

    With several hosts (after `jax.distributed.initialize`), use `Parallel.BATCH`: every
    process runs every cell together and process 0 alone writes the files.

    A config that needs JAX's 64-bit mode (`float64`, or `solver` "auto" or "mixed",
    which certify in float64) runs in it: where the process has not turned it on, for
    the run's own threads only (`jax.enable_x64`), so that the process-wide setting is
    as it was when the call returns.

    **Returns:** [`RunResults`][pcscale.experiments.RunResults].
    """
    if not isinstance(config, experiment.config_type):
        raise TypeError(f"`config` must be a {experiment.config_type.__name__} for {experiment.name}, got "
                        f"{type(config).__name__}.")
    if not isinstance(parallel, Parallel):
        raise TypeError(f"`parallel` must be a pcscale.experiments.Parallel, got {parallel!r}; e.g. "
                        "Parallel.CELLS (one cell per device) or Parallel.BATCH (each cell split over devices).")
    chosen = resolve_devices(devices)
    if parallel is Parallel.BATCH:
        _check_batch_divisible(config, len(chosen))
    if jax.process_count() > 1 and (parallel is Parallel.CELLS or len(chosen) < jax.device_count()):
        raise ValueError(
            f"{jax.process_count()} processes are connected (jax.distributed), so a run must spread each cell "
            f"over every host's devices: pass devices=None and parallel=Parallel.BATCH (--devices all "
            f"--parallel batch); got devices={devices!r}, parallel={parallel}."
        )
    out_dir = Path(out_dir)
    writer = jax.process_index() == 0
    cells = _unique(experiment.cells(config))
    claim = contextlib.ExitStack()
    with precision_scope(config):
        try:
            # Once per run, before any cell: a missing dataset fails here, before the folder
            # is touched, and the data are part of every cell's identity.
            data = experiment.resolve_data(config)
            if writer:
                out_dir.mkdir(parents=True, exist_ok=True)
                claim.enter_context(FolderLock(out_dir))  # held until the run returns or fails
            key = prepare(out_dir, experiment.name, config, data, preset=preset, force=force, write=writer)
        except BaseException:
            claim.close()
            _broadcast([False])  # the other processes stop too instead of waiting for process 0
            raise
        with claim:
            return _run_cells(experiment, config, out_dir, cells, data, key, writer=writer, progress=progress,
                              chosen=chosen, devices=devices, parallel=parallel)


def needs_float64(config) -> bool:
    """Whether a run of `config` needs JAX's 64-bit mode: float64 models, and float32 ones
    certified in float64 (`pcscale.MixedPrecision`, which the "auto" solver picks for
    tolerances below the float32 rounding floor)."""
    return bool(getattr(config, "float64", False)) or getattr(config, "solver", None) in _names.CERTIFY_IN_FLOAT64


def precision_scope(config) -> contextlib.AbstractContextManager:
    """JAX's 64-bit mode for the calling thread while a run of `config` computes, where
    the config needs it (`needs_float64`) and the process has not turned it on. It is
    `jax.enable_x64(True)`, which is thread-local and restores the previous mode on
    exit: a library call never changes the process-wide flag (the command line turns it
    on at start-up instead). Each worker thread of a run enters it too."""
    if needs_float64(config) and not jax.config.read("jax_enable_x64"):
        return jax.enable_x64(True)
    return contextlib.nullcontext()


def _run_cells(experiment, config, out_dir: Path, cells: list[Cell], data, key: str, *, writer: bool,
               progress: bool, chosen: list, devices, parallel: Parallel) -> RunResults:
    """Compute the cells the folder does not hold yet (run_experiment, past its checks)."""
    if not _broadcast([True])[0]:
        raise ConfigMismatch(f"process 0 refused the run folder {out_dir}; its output says why.")
    done = {cell.name: finished(out_dir / CELLS / f"{cell.name}.json", experiment.name, key, data, cell.settings)
            for cell in cells}
    todo = _agree([cell for cell in cells if done[cell.name] is None], cells)

    def compute(cell: Cell, context: CellContext) -> CellResult:
        start = time.perf_counter()
        result = experiment.run_cell(config, cell, context)
        result = dataclasses.replace(result, wall_time=time.perf_counter() - start)
        if writer:
            write_json(out_dir / CELLS / f"{cell.name}.json",
                       cell_to_json(result, experiment=experiment.name, config_digest=key, data=data))
        return result

    from .._progress import progress_bar

    bar = progress_bar(total=len(cells), initial=len(cells) - len(todo), disable=not progress,
                       desc=experiment.name, unit="cell", line_per_update=True)
    try:
        if len(chosen) > 1 and parallel is Parallel.CELLS:
            done.update(run_concurrently(todo, chosen, lambda cell: compute(cell, CellContext(progress=False)), bar,
                                         lambda: precision_scope(config)))
        else:
            context = CellContext(progress, make_data_mesh(chosen) if len(chosen) > 1 else None)
            # One device named by the caller becomes the default; devices=1 keeps the
            # current default device.
            one = len(chosen) == 1 and not isinstance(devices, (int, np.integer))
            with jax.default_device(chosen[0]) if one else contextlib.nullcontext():
                for cell in todo:
                    bar.set_postfix_str(cell.name)
                    done[cell.name] = compute(cell, context)
                    bar.update(1)
    finally:
        bar.close()
    results = [result for cell in cells if (result := done[cell.name]) is not None]
    _check_same_data(results)
    computed = {cell.name for cell in todo}
    return RunResults(experiment.name, config, results, out_dir,
                      tuple(cell.name for cell in cells if cell.name in computed),
                      tuple(cell.name for cell in cells if cell.name not in computed))


def _check_batch_divisible(config, count: int) -> None:
    """Name the config key when a data-parallel run cannot split the batch."""
    for key in ("batch", "samples"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value % count:
            raise ValueError(
                f"`{key}={value}` cannot be split equally over {count} devices (parallel=Parallel.BATCH, "
                f"--parallel batch); set {key} to a multiple of {count} "
                f"(--set {key}={nearest_sizes(value, count)[0]}), "
                "use fewer devices, or run one cell per device (--parallel cells)."
            )


def _broadcast(flags: list[bool]) -> list[bool]:
    """Process 0's `flags`, on every process (the identity with one process)."""
    if jax.process_count() == 1:
        return flags
    from jax.experimental import multihost_utils

    return [bool(flag) for flag in np.asarray(multihost_utils.broadcast_one_to_all(np.array(flags)))]


def _agree(todo: list[Cell], cells: list[Cell]) -> list[Cell]:
    """With several processes, every one runs the cells process 0 found unfinished (the
    others may not see its files), so that all enter the same computations."""
    names = {cell.name for cell in todo}
    flags = _broadcast([cell.name in names for cell in cells])
    return [cell for cell, flag in zip(cells, flags, strict=True) if flag]  # one flag per cell, on every process


def _unique(cells: list[Cell]) -> list[Cell]:
    names = [cell.name for cell in cells]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"the config gives several cells the same name {repeated}: a list setting repeats a "
                         "value (e.g. widths=8,8); give each value once.")
    return cells


def _check_same_data(results: list[CellResult]) -> None:
    """Warn when the cells of one run used different data: the data root changed while
    the run was going (cells are matched against the data resolved at its start)."""
    used = {(r.info.get("dataset"), r.info.get("source")) for r in results if "dataset" in r.info}
    if len(used) > 1:
        import warnings

        warnings.warn(
            f"the cells of this run used different data: {sorted(map(str, used))}; the data root changed "
            "between sessions. Rerun into a new --out (or with --force) to use one dataset throughout.",
            stacklevel=3,
        )


def load_run(out_dir: str | Path, registry: dict[str, Experiment]) -> RunResults:
    """Read a run folder written by [`run`][pcscale.experiments.run]: its config and
    every finished cell (cells not yet run are listed in `missing`)."""
    out_dir = Path(out_dir)
    run_file = out_dir / RUN_FILE
    if not run_file.exists():
        raise FileNotFoundError(f"{out_dir} is not a pcscale run folder: no {RUN_FILE}. Give the --out folder "
                                "of a `pcscale run`.")
    saved = read_run_file(run_file, force=False)
    name = saved.get("experiment")
    if name not in registry:
        raise ValueError(f"{run_file} is a run of {name!r}, which this pcscale does not know.")
    experiment = registry[name]
    try:
        config = from_dict(experiment.config_type, saved["config"])
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(f"{run_file} holds a config this version of {name} cannot read ({error}); it was "
                         "written by another pcscale version: rerun the experiment into a new folder.") from None
    results, missing = [], []
    for cell in experiment.cells(config):
        done = finished(out_dir / CELLS / f"{cell.name}.json", name, saved.get("digest"), saved.get("data"),
                         cell.settings)
        if done is None:
            missing.append(cell.name)
        else:
            results.append(done)
    return RunResults(name, config, results, out_dir, missing=tuple(missing))
