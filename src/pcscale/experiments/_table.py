"""Plain-text tables for the terminal summaries."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def number(value, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    value = float(value)
    if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e5):
        return f"{value:.2e}"
    return f"{value:.{digits}f}"


def table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Right-aligned columns, a rule under the header."""
    text = [[str(h) for h in header]] + [[c if isinstance(c, str) else number(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in text) for i in range(len(header))]
    lines = ["  ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=False)) for row in text]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def at(values: np.ndarray, t: int) -> float:
    return float(values[t]) if len(values) else float("nan")


def inference_note(results) -> str:
    """One line on inference: how many steps met the tolerance, over all cells."""
    traces = [r.trace for r in results if r.trace is not None]
    if not traces:
        return ""
    total = sum(tr.steps for tr in traces)
    converged = sum(int(np.sum(tr.converged)) for tr in traces)
    worst = max(float(np.nanmax(tr.relative_residual)) for tr in traces)
    if converged == total:
        return f"inference met its tolerance at all {total} steps (largest relative residual {worst:.1e})."
    from ._results import RESULT_NAMES

    codes = np.concatenate([np.asarray(tr.result).ravel() for tr in traces])
    ended = ", ".join(f"{int(np.sum(codes == code))} {name.replace('_', ' ')}"
                      for code, name in enumerate(RESULT_NAMES) if name != "converged" and np.any(codes == code))
    hint = ""
    if "stalled" in ended:
        hint = (" A stalled solve could not improve its residual: usually the tolerance is below the "
                "dtype's rounding floor (docs/inference.md, 'The rounding floor'); --set solver=auto "
                "certifies float32 models in float64.")
    return (f"inference met its tolerance at {converged} of {total} steps ({ended}; largest relative "
            f"residual {worst:.1e}); unconverged steps are flagged in the results (metrics.converged).{hint}")
