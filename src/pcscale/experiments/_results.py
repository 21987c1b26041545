"""Results files: one JSON file per cell, written atomically, and the run's metadata file
(experiment, resolved config, versions, device) beside them."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
from pathlib import Path
from typing import Any

import numpy as np

from .._files import atomic_path
from .._health import TrainingFailure
from .._solution import RESULTS
from ._trace import Trace, trace_from_json, trace_to_json

CELL_FORMAT = "pcscale-cell/1"
RUN_FORMAT = "pcscale-run/1"
# pcscale.RESULTS names, ordered by the integer codes stored in `metrics.result`.
RESULT_NAMES = tuple(sorted(RESULTS._name_to_item, key=lambda name: int(RESULTS._name_to_item[name]._value)))


@dataclasses.dataclass(frozen=True)
class Cell:
    """One point of an experiment's grid: `name` (the results file's stem, e.g.
    "H3-N64-seed0") and `settings` (what distinguishes it, e.g. width, depth, seed)."""

    name: str
    settings: dict[str, Any]


@dataclasses.dataclass(frozen=True)
class CellResult:
    """What one cell produced.

    - `cell`: the [`Cell`][pcscale.experiments.Cell].
    - `trace`: the per-step [`Trace`][pcscale.experiments.Trace] (None for cells that do
      not train, such as a DMFT curve or a coordinate check).
    - `info`: experiment-specific values, documented by each experiment (the dataset
      used, theory predictions, layer labels, a DMFT curve…), JSON-compatible.
    - `wall_time`: seconds the cell took.
    """

    cell: Cell
    trace: Trace | None
    info: dict[str, Any]
    wall_time: float

    @property
    def failure(self) -> TrainingFailure | None:
        """The training failure of the cell (its trace's, or for a cell without a trace
        the one its `info["failure"]` records), or None."""
        if self.trace is None:
            return TrainingFailure.from_json(self.info.get("failure"))
        return self.trace.failure


def trace_of(result: CellResult) -> Trace:
    """The trace of a cell that trains (every cell of a training experiment has one)."""
    if result.trace is None:
        raise ValueError(f"cell {result.cell.name!r} has no training trace, but its experiment trains a network.")
    return result.trace


def _clean(value):
    """JSON-ready: arrays to lists, non-finite floats to None (JSON has no NaN)."""
    if isinstance(value, np.ndarray):
        return _clean(value.tolist())
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value


def write_json(path: Path, content: dict[str, Any]) -> None:
    with atomic_path(path) as temporary:
        temporary.write_text(json.dumps(_clean(content), indent=1, allow_nan=False) + "\n")


def cell_to_json(result: CellResult, *, experiment: str, config_digest: str,
                 data: dict[str, Any] | None = None) -> dict[str, Any]:
    content: dict[str, Any] = {
        "format": CELL_FORMAT,
        "experiment": experiment,
        "config_digest": config_digest,
        "data": data,
        "cell": result.cell.name,
        "settings": result.cell.settings,
        "wall_time": result.wall_time,
        "info": result.info,
    }
    if result.trace is not None:
        trace = result.trace
        content["steps"] = trace.steps
        content["result_names"] = RESULT_NAMES
        content["metrics"] = trace_to_json(trace)
        content["final"] = {"pc_loss": trace.final_pc_loss, "bp_loss": trace.final_bp_loss}
        content["status"] = "failed" if trace.failed else "ok"
        content["failure"] = None if trace.failure is None else trace.failure.to_json()
    return content


def cell_from_json(content: dict[str, Any]) -> CellResult:
    trace = None
    if "metrics" in content:
        final = content["final"]
        final_pc, final_bp = _none_to_nan(final["pc_loss"]), _none_to_nan(final["bp_loss"])
        # Files written before failures were recorded (no "status") are judged now.
        recorded = "status" in content
        failure = TrainingFailure.from_json(content["failure"]) if recorded else None
        trace = trace_from_json(content["metrics"], final_pc, final_bp, recorded=recorded, failure=failure)
    return CellResult(
        cell=Cell(content["cell"], content["settings"]), trace=trace, info=content["info"],
        wall_time=float(content["wall_time"]),
    )


def _none_to_nan(value) -> float:
    return float("nan") if value is None else float(value)


def read_json(path: Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text())


def versions() -> dict[str, str]:
    """Python, pcscale and the numerical stack's versions."""
    import importlib.metadata

    found = {"python": platform.python_version()}
    for package in ("pcscale", "jax", "jaxlib", "equinox", "optax", "numpy", "optimistix", "lineax"):
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            found[package] = "not installed"
    return found


def device() -> dict[str, Any]:
    import jax

    devices = jax.devices()
    return {
        "platform": devices[0].platform,
        "kind": devices[0].device_kind,
        "count": len(devices),
        "host": platform.node(),
        "cpu_count": os.cpu_count(),
    }
