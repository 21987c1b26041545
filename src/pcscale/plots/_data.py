"""Small helpers that turn a run's cell results into arrays to draw: grouping cells by
their settings, and averaging a metric over seeds without warnings for missing values."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import TypeVar

import numpy as np


def nan_mean(arrays: Sequence, axis: int = 0) -> np.ndarray:
    """Mean over `axis` of the stacked `arrays`, ignoring NaN; NaN where every entry is
    NaN (numpy's `nanmean` would warn there). Arrays of different lengths are padded
    with NaN to the longest."""
    arrays = [np.asarray(a, dtype=float) for a in arrays]
    if not arrays:
        return np.array([])
    length = max(a.shape[0] if a.ndim else 1 for a in arrays)
    padded = []
    for a in arrays:
        a = np.atleast_1d(a)
        if a.shape[0] < length:
            a = np.concatenate([a, np.full((length - a.shape[0],) + a.shape[1:], np.nan)])
        padded.append(a)
    stack = np.stack(padded, axis=axis)
    finite = np.isfinite(stack)
    count = finite.sum(axis=axis)
    total = np.where(finite, stack, 0.0).sum(axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


_Item = TypeVar("_Item")


def group(items: Iterable[_Item], key: Callable[[_Item], Hashable]) -> dict:
    """`items` grouped by `key(item)`, in order of first appearance."""
    groups: dict = {}
    for item in items:
        groups.setdefault(key(item), []).append(item)
    return groups


def mean_metric(results: Sequence, name: str) -> np.ndarray:
    """The seed mean of trace metric `name` over `results` (cells with a trace)."""
    return nan_mean([getattr(r.trace, name) for r in results])


def trained(results: Sequence) -> list:
    """The cells that carry a training trace and did not fail (a failed cell's curves
    stop at its failure and would bias seed means; the summary lists it instead)."""
    return [r for r in results if r.trace is not None and r.trace.failure is None]


def time_axis(steps: int, *, log_time: bool = False) -> tuple[np.ndarray, str]:
    """The x values and label of a per-step plot: t, or t + 1 for a log-time axis."""
    t = np.arange(steps, dtype=float)
    return (t + 1, "step t + 1") if log_time else (t, "step t")


def spread_indices(count: int, at_most: int) -> list[int]:
    """Up to `at_most` indices of `range(count)`, evenly spread, first and last kept."""
    if count <= at_most:
        return list(range(count))
    return sorted({int(round(v)) for v in np.linspace(0, count - 1, at_most)})
