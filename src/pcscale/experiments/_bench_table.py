"""The benchmark suite's comparison table and its targets' verdicts, each computed from
the run's own numbers."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ._bench_tasks import TASKS
from ._results import CellResult
from ._table import number, table


def _last(info: dict, key: str) -> Any:
    """The last epoch's value of `key`, None when there is none (or the cell was written
    before `key` was recorded)."""
    values = info.get("history", {}).get(key)
    return values[-1] if values else None


def _finite(values) -> list[float]:
    return [float(v) for v in (values or []) if v is not None and math.isfinite(v)]


def reach_summary(cosines) -> tuple[float, int | None]:
    """The smallest per-layer cosine with BP and its layer (1-based), NaN / None when
    no layer has one."""
    finite = [(float(c), i + 1) for i, c in enumerate(cosines or []) if c is not None and math.isfinite(c)]
    if not finite:
        return float("nan"), None
    value, layer = min(finite)
    return value, layer


def summarise(config, results: list[CellResult]) -> str:
    """One row per (method, depth): test accuracy and its gap to BP at the same depth,
    train loss, the last epoch's time and the median step time's ratio to BP's, inference evaluations per
    step, the share of certified steps, and the signal reach (the smallest layer cosine
    with BP's update, and where); then the task's targets, each PASS or MISS from the
    numbers above."""
    task = TASKS[config.task]
    by_cell = {(r.info["method"], r.info["depth"]): r.info for r in results}
    rows = []
    for (method, depth), info in by_cell.items():
        bp = by_cell.get(("bp", depth))
        acc, seconds = _last(info, "test_accuracy"), _last(info, "step_seconds")
        bp_acc = _last(bp, "test_accuracy") if bp else None
        bp_seconds = _last(bp, "step_seconds") if bp else None
        share = _last(info, "certified_share")
        low, layer = reach_summary(_last(info, "cosines"))
        rows.append([method, depth, number(acc), number(acc - bp_acc) if bp_acc is not None else "—",
                     number(_last(info, "train_loss")), number(_last(info, "seconds")),
                     number(seconds / bp_seconds) if seconds and bp_seconds else "—",
                     number(_last(info, "evaluations_per_step")),
                     "—" if share is None else number(share),
                     "—" if layer is None else f"{low:.3f} (layer {layer})",
                     "FAILED" if info.get("failure") else "ok"])
    header = ["method", "L", "test acc.", "Δ vs BP", "train loss", "s/epoch (last)", "step time / BP", "evals/step",
              "certified", "min cos. with BP", "status"]
    first = next(iter(by_cell.values()))
    lines = [f"bench-{task.name}: {task.architecture} on {first['dataset']} ({config.train_size} train / "
             f"{config.test_size} test), B = {config.batch}, {config.epochs} epoch(s), {config.parameterisation}; "
             "test accuracy by the feedforward pass; literature: " + task.published, "", table(header, rows)]
    lines += verdicts(task, by_cell)
    return "\n".join(lines)


def verdicts(task, by_cell: dict) -> list[str]:
    """The task's targets for certified PC at the deepest depth run, each PASS or MISS;
    a target whose cells are missing or failed says so instead."""
    depths = sorted({depth for _, depth in by_cell})
    if not depths or all(t is None for t in (task.target_gap, task.target_accuracy, task.target_cosine)):
        return []
    deepest = depths[-1]
    pc, bp = by_cell.get(("pc", deepest)), by_cell.get(("bp", deepest))
    out = [""]
    if pc is None or pc.get("failure"):
        return out + [f"targets at L = {deepest}: not checked (certified PC {'failed' if pc else 'was not run'})"]
    acc = _last(pc, "test_accuracy")
    if task.target_accuracy is not None:
        met = acc >= task.target_accuracy
        verdict = "PASS" if met else "MISS"
        out.append(f"{verdict}  target: certified PC test accuracy {acc:.4f} ≥ {task.target_accuracy}")
    if task.target_gap is not None:
        if bp is None or bp.get("failure"):
            out.append(f"target gap to BP at L = {deepest}: not checked (BP {'failed' if bp else 'was not run'})")
        else:
            gap = acc - _last(bp, "test_accuracy")
            met = abs(gap) <= task.target_gap or gap > 0
            out.append(f"{'PASS' if met else 'MISS'}  target: certified PC within {task.target_gap:.3f} of BP at L = "
                       f"{deepest}: Δ = {gap:+.4f}")
    if task.target_cosine is not None:
        cosines = _last(pc, "cosines")
        low, layer = reach_summary(cosines)
        finite = _finite(cosines)
        below = sum(1 for c in finite if c < task.target_cosine)
        met = bool(finite) and below == 0
        verdict = "PASS" if met else "MISS"
        out.append(f"{verdict}  target: every layer's update cosine with BP ≥ {task.target_cosine} at "
                   f"L = {deepest}: smallest {low:.3f} (layer {layer}), {below} of {len(finite)} layers below; "
                   f"median {float(np.median(finite)) if finite else float('nan'):.3f}")
    return out
