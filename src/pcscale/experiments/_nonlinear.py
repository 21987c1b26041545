"""What the three nonlinear experiments (`residual-mlp`, `resnet-cnn`, `transformer`)
share: the inference settings, tracked layers and the summary table."""

from __future__ import annotations

import numpy as np

from . import _names
from ._config import check_choice, check_positive
from ._results import CellResult
from ._table import inference_note, number, table

def check_inference(config) -> None:
    check_choice(config, "solver", _names.SOLVERS)
    check_positive(config, "step_size", "max_inference_steps")
    if config.rtol < 0:
        raise ValueError(f"`rtol` must be ≥ 0 (0 runs the whole budget), got {config.rtol!r}.")


def solver_for(config, model):
    return _names.solver(config.solver, model, step_size=config.step_size, rtol=config.rtol,
                         max_steps=config.max_inference_steps)


def layers_with_weights(model) -> list[int]:
    import equinox as eqx
    import jax

    return [i for i, layer in enumerate(model.layers) if jax.tree.leaves(eqx.filter(layer, eqx.is_array))]


def summarise(title: str, config, results: list[CellResult], *, label) -> str:
    """Per cell: cosines at t = 0 and T − 1 in both modes, mean cosine of the tracked
    layers, energy/loss ratio and losses at the end."""
    rows = []
    for r in results:
        tr = r.trace
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
        "Alignment with BP should rise with width; narrow networks start poorly aligned.",
    ])
