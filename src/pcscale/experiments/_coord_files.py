"""Coordinate checks as plain records and JSON files (written atomically)."""

from __future__ import annotations

import json

import jax.numpy as jnp
import numpy as np

from .._files import atomic_path
from ..theory import CoordCheck

_ARRAY_FIELDS = ("activation", "error", "update", "own_update", "output", "output_update")


def coord_check_record(result: CoordCheck) -> dict:
    """A [`CoordCheck`][pcscale.theory.CoordCheck] as plain JSON-compatible values."""
    if not isinstance(result, CoordCheck):
        raise TypeError(f"`result` must be a CoordCheck, got {type(result).__name__}.")
    record = {"sizes": list(result.sizes), "steps": result.steps, "converged": list(result.converged)}
    for name in _ARRAY_FIELDS:
        record[name] = [np.asarray(v, dtype=np.float64).tolist() for v in getattr(result, name)]
    return record


def coord_check_from_record(record: dict, source: str = "the record") -> CoordCheck:
    """The inverse of [`coord_check_record`][pcscale.experiments.coord_check_record];
    `source` names the record in errors."""
    missing = [name for name in ("sizes", "steps", "converged") + _ARRAY_FIELDS if name not in record]
    if missing:
        raise ValueError(f"{source} is not a coordinate-check record: it lacks {missing}.")
    arrays = {name: tuple(jnp.asarray(v) for v in record[name]) for name in _ARRAY_FIELDS}
    return CoordCheck(
        sizes=tuple(record["sizes"]), steps=int(record["steps"]), converged=tuple(record["converged"]), **arrays
    )


def save_coord_check(result: CoordCheck, path) -> None:
    """Write a [`CoordCheck`][pcscale.theory.CoordCheck] to a JSON file, atomically
    (temporary file, then rename), so that an interrupted write never leaves a partial
    file."""
    record = coord_check_record(result)
    with atomic_path(path) as temporary:
        temporary.write_text(json.dumps(record))


def load_coord_check(path) -> CoordCheck:
    """Read a [`CoordCheck`][pcscale.theory.CoordCheck] written by
    [`save_coord_check`][pcscale.experiments.save_coord_check]."""
    try:
        with open(path) as file:
            record = json.load(file)
    except FileNotFoundError:
        raise FileNotFoundError(
            f"no coordinate-check file at {str(path)!r}; write one with save_coord_check."
        ) from None
    except json.JSONDecodeError as error:
        raise ValueError(f"{str(path)!r} is not a coordinate-check JSON file ({error}).") from None
    return coord_check_from_record(record, f"{str(path)!r}")
