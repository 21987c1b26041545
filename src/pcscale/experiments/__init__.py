"""Every experiment of the paper (docs/background.md §5), each a frozen typed config with `quick`
and `paper` presets, run cell by cell into a results folder that resumes after an
interruption. From Python: `run("width-depth-linear", "quick", "runs/wdl")`; from the
shell: `pcscale run width-depth-linear --preset quick`."""

from __future__ import annotations

from ._lockstep import ClosedForm as ClosedForm, Trace as Trace, train_lockstep as train_lockstep
from ._folder import ConfigMismatch as ConfigMismatch, FolderInUse as FolderInUse
from ._results import Cell as Cell, CellResult as CellResult
from ._runner import (
    CellContext as CellContext,
    Parallel as Parallel,
    Experiment as Experiment,
    RunResults as RunResults,
    run_experiment as run_experiment,
)
from ._registry import (
    EXPERIMENTS as EXPERIMENTS, get as get, load_run as load_run, run as run, summary as summary,
)
