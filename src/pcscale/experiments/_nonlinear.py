"""What the three nonlinear experiments (`residual-mlp`, `resnet-cnn`, `transformer`)
share: the inference settings, tracked layers and the summary table."""

from __future__ import annotations

import numpy as np

from . import _names
from ._claims import rises_with_width
from ._config import check_choice, check_positive
from ._results import CellResult, trace_of
from ._table import inference_note, number, table
from ._verdict import Verdict, report


def check_inference(config) -> None:
    check_choice(config, "solver", _names.SOLVERS)
    check_positive(config, "step_size", "max_inference_steps")
    if config.rtol < 0:
        raise ValueError(f"`rtol` must be ≥ 0 (0 runs the whole budget), got {config.rtol!r}.")


def solver_for(config, model, x=None, y=None, *, progress: bool = False):
    """The config's inference solver for `model` (the batch `x`, `y` lets "auto" check
    the tolerance against the dtype's rounding floor; `progress` prints a line every
    10 s during long solves)."""
    return _names.solver(config.solver, model, step_size=config.step_size, rtol=config.rtol,
                         max_steps=config.max_inference_steps, x=x, y=y, progress=progress)


def layers_with_weights(model) -> list[int]:
    import equinox as eqx
    import jax

    return [i for i, layer in enumerate(model.layers) if jax.tree.leaves(eqx.filter(layer, eqx.is_array))]


def summarise(title: str, config, results: list[CellResult], *, label, symbol: str = "N",
              section: str = "§5.7") -> str:
    """Per cell: cosines at t = 0 and T − 1 in both modes, mean cosine of the tracked
    layers, energy/loss ratio and losses at the end; then the verdict on the claim
    that alignment rises with width (`symbol`: the width's symbol; `section`: where
    docs/background.md states the claim)."""
    rows = []
    for r in results:
        tr = trace_of(r)
        tracked = r.info.get("tracked_layers", [])
        layers = tr.layer_cosine_lockstep[:, tracked] if tracked else tr.layer_cosine_lockstep
        rows.append([
            label(r), str(r.cell.settings.get("seed", "")),
            number(tr.cosine_lockstep[0]), number(tr.cosine_lockstep[-1]),
            number(tr.cosine_trajectory[-1]),
            " ".join(f"{v:.3f}" if np.isfinite(v) else "—" for v in layers[-1]),
            number(tr.energy_loss_ratio[-1]), number(tr.final_pc_loss), number(tr.final_bp_loss),
            f"{int(tr.converged.sum())}/{tr.steps}",
        ])
    labels = results[0].info.get("layer_labels") if results else None
    header = ["width", "seed", "cos t=0", "cos T−1", "cos traj. T−1",
              "tracked layers T−1" + (f" ({', '.join(labels)})" if labels else ""),
              "F/𝓛 T−1", "PC loss θ_T", "BP loss θ_T", "converged"]
    dataset = results[0].info.get("dataset") if results else "—"
    return "\n".join([
        f"{title} (data: {dataset}, T = {config.steps}, inference {config.solver} β = {config.step_size:g}, "
        f"rtol = {config.rtol:g}, ≤ {config.max_inference_steps} steps)",
        "",
        table(header, rows),
        "",
        inference_note(results),
        report([alignment_rises(config, results, symbol=symbol)], section),
    ])


def alignment_rises(config, results: list[CellResult], *, symbol: str = "N") -> Verdict:
    """The overall lockstep cosine rises with width at every training step (seeds
    averaged; NaN for a width whose cells have not finished)."""
    widths = sorted(config.widths)
    per_width = []
    for width in widths:
        traces = [r.trace for r in results if r.cell.settings["width"] == width and r.trace is not None]
        per_width.append(np.mean([tr.cosine_lockstep for tr in traces], axis=0) if traces
                         else np.full(config.steps, np.nan))
    at_step = {f"t = {t}": [curve[t] for curve in per_width] for t in range(config.steps)}
    return rises_with_width(widths, at_step, claim="PC–BP cosine rises with width at every training step",
                            symbol=symbol)
