"""Every experiment of the paper (docs/background.md §5), each a frozen typed config with `quick`
and `paper` presets, run cell by cell into a results folder that resumes after an
interruption. From Python: `run("width-depth-linear", "quick", "runs/wdl")`; from the
shell: `pcscale run width-depth-linear --preset quick`."""

from __future__ import annotations

from ._bench_suite import load_suite as load_suite, run_suite as run_suite
from ._coord_files import (
    coord_check_from_record as coord_check_from_record,
    coord_check_record as coord_check_record,
    load_coord_check as load_coord_check,
    save_coord_check as save_coord_check,
)
from ._folder import ConfigMismatch as ConfigMismatch, FolderInUse as FolderInUse
from ._lockstep import ClosedForm as ClosedForm, train_lockstep as train_lockstep
from ._registry import (
    EXPERIMENTS as EXPERIMENTS,
    get as get,
    load_run as load_run,
    run as run,
    summary as summary,
)
from ._results import Cell as Cell, CellResult as CellResult
from ._runner import (
    CellContext as CellContext,
    Experiment as Experiment,
    Parallel as Parallel,
    RunResults as RunResults,
    run_experiment as run_experiment,
)
from ._trace import Trace as Trace

__all__ = [
    "EXPERIMENTS", "Cell", "CellContext", "CellResult", "ClosedForm", "ConfigMismatch",
    "Experiment", "FolderInUse", "Parallel", "RunResults", "Trace", "coord_check_from_record",
    "coord_check_record", "get", "load_coord_check", "load_run", "load_suite", "run", "run_experiment",
    "run_suite", "save_coord_check", "summary", "train_lockstep",
]
