"""`pcscale bench`: one task's methods, each in a results folder of its own under one
suite folder (so that a method added later, or a method rerun, never touches the others),
read back together as one run for the table and the figures."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

from ._bench_tasks import TASKS
from ._folder import RUN_FILE
from ._learners import METHODS
from ._runner import RunResults


def experiment_name(task: str) -> str:
    """The registry name of a task's experiment, refusing an unknown task."""
    if task not in TASKS:
        raise ValueError(f"unknown benchmark task {task!r}; choose one of {', '.join(TASKS)}.")
    return f"bench-{task}"


def suite_folder(task: str, preset: str, out: str | Path | None = None) -> Path:
    """Where `pcscale bench TASK --preset P` writes: `out`, or runs/bench/TASK-P."""
    return Path(out) if out is not None else Path("runs") / "bench" / f"{task}-{preset}"


def run_suite(task: str, *, methods: Sequence[str] | None = None, preset: str = "quick",
              out: str | Path | None = None, overrides: Sequence[str] = (), float64: bool | None = None,
              force: bool = False, progress: bool = True) -> RunResults:
    """Run `task`'s `methods` (default: the preset's) from `preset` with `key=value`
    `overrides`, each into `<suite folder>/<method>` (finished cells are reused: an
    interrupted suite resumes where it stopped), and return every method found in the
    suite folder as one run."""
    from ._registry import resolve_config, run

    name = experiment_name(task)
    config = resolve_config(name, preset, overrides=overrides, float64=float64)
    chosen = tuple(methods) if methods else config.methods
    unknown = [m for m in chosen if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {', '.join(map(repr, unknown))}; choose among {', '.join(METHODS)}.")
    folder = suite_folder(task, preset, out)
    computed, reused = [], []
    for method in chosen:
        if progress:
            print(f"bench {task}: {method} → {folder / method}", flush=True)
        done = run(name, preset, folder / method, overrides=[*overrides, f"methods={method}"], float64=float64,
                   force=force, progress=progress)
        computed += done.computed
        reused += done.reused
    return dataclasses.replace(load_suite(folder), computed=tuple(computed), reused=tuple(reused))


def is_suite(folder: str | Path) -> bool:
    """Whether `folder` is a suite folder: no run file of its own, a method's run folder
    inside."""
    folder = Path(folder)
    return not (folder / RUN_FILE).exists() and any((folder / m / RUN_FILE).is_file() for m in METHODS)


def load_suite(folder: str | Path) -> RunResults:
    """Every method folder under a suite `folder`, read as one run: the results in the
    order of the methods, the config of the first with `methods` listing those found."""
    from ._registry import load_run

    folder = Path(folder)
    if (folder / RUN_FILE).exists():
        raise ValueError(f"{folder} is a run folder, not a suite folder; read it with pcscale.experiments.load_run.")
    found = [folder / m for m in METHODS if (folder / m / RUN_FILE).is_file()]
    if not found:
        raise FileNotFoundError(f"{folder} holds no benchmark results (no <method>/{RUN_FILE}); run pcscale bench "
                                "TASK --out FOLDER first.")
    runs = [load_run(path) for path in found]
    names = {r.experiment for r in runs}
    if len(names) > 1:
        raise ValueError(f"{folder} mixes the results of {', '.join(sorted(names))}; keep one task per suite folder.")
    config = dataclasses.replace(runs[0].config, methods=tuple(path.name for path in found))
    return RunResults(
        experiment=runs[0].experiment, config=config, results=[r for run in runs for r in run.results],
        out_dir=folder, computed=tuple(c for run in runs for c in run.computed),
        reused=tuple(c for run in runs for c in run.reused), missing=tuple(c for run in runs for c in run.missing))
