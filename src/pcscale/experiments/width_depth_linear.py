"""`width-depth-linear` — Figure 1: linear residual MLPs over a width × depth grid,
trained by Adam with closed-form inference (docs/background.md §5.1)."""

from __future__ import annotations

import dataclasses

import jax

import pcscale as pc

from . import _names
from ._claims import falls_like_inverse_width, rises_with_width, stays_off, theory_shrinks
from ._config import check_config, check_positive
from ._lockstep import ClosedForm, optimiser_for, train_lockstep
from ._results import Cell, CellResult
from ._runner import CellContext, Experiment
from ._shared import DataFields, DepthFields, ParameterisationFields, SizeFields, TrainingFields
from ._table import at, table
from ._verdict import Verdict, report


@dataclasses.dataclass(frozen=True)
class WidthDepthLinearConfig(TrainingFields, ParameterisationFields, DepthFields, SizeFields, DataFields):
    """Settings of `width-depth-linear` (`pcscale show-config width-depth-linear` lists
    each with its meaning): linear residual MLPs on one fixed flattened image batch,
    trained by Adam in float64, which resolves ‖S‖ − 1 ≈ 1e-3."""

    widths: tuple[int, ...] = (4, 16, 64, 256)
    hidden_layers: tuple[int, ...] = (1, 3, 7)
    float64: bool = True

    def __post_init__(self):
        check_config(self)
        check_positive(self, "batch", "widths", "hidden_layers", "gamma0", "learning_rate", "steps")


QUICK = WidthDepthLinearConfig()
PAPER = WidthDepthLinearConfig(
    dataset="cifar10", fallback=False, batch=64, widths=(2, 8, 32, 128, 512, 2048),
    hidden_layers=(1, 3, 7, 15, 31), seeds=(0, 1, 2), steps=100,
)


def cells(config: WidthDepthLinearConfig) -> list[Cell]:
    return [
        Cell(f"H{h}-N{n}-seed{seed}", {"hidden_layers": h, "width": n, "seed": seed})
        for h in config.hidden_layers for n in config.widths for seed in config.seeds
    ]


def run_cell(config: WidthDepthLinearConfig, cell: Cell, context: CellContext) -> CellResult:
    h, n, seed = cell.settings["hidden_layers"], cell.settings["width"], cell.settings["seed"]
    x, y, data_info = _names.image_batch(config.dataset, batch=config.batch, seed=seed, flatten=True,
                                         data_root=config.data_root, fallback=config.fallback)
    dtype = _names.dtype(config.float64)
    _, model_key = jax.random.split(jax.random.PRNGKey(seed))
    parameterisation = _names.parameterisation(config.parameterisation, gamma0=config.gamma0)
    model = pc.nn.residual_mlp(x.shape[1], n, y.shape[1], h + 1, parameterisation=parameterisation,
                               activation="linear", output_energy=pc.MSE(), dtype=dtype, key=model_key)
    optimiser = optimiser_for(model, pc.Adam(config.learning_rate))
    trace = train_lockstep(model, x.astype(dtype), y.astype(dtype), optimiser=optimiser, inference=ClosedForm(),
                           steps=config.steps, progress=context.progress, mesh=context.mesh, description=cell.name)
    info = {**data_info, "depth": h + 1,
            "theory_trace_gap": pc.theory.predicted_gap(n, h + 1, parameterisation, skips=True)}
    return CellResult(cell, trace, info, 0.0)


def summarise(config: WidthDepthLinearConfig, results: list[CellResult]) -> str:
    by_cell = {(r.cell.settings["hidden_layers"], r.cell.settings["width"]): r for r in results
               if r.cell.settings["seed"] == config.seeds[0]}
    last = config.steps - 1

    def grid(cell_text) -> list[list[str]]:
        """One row per depth, one column per width; "—" for cells not finished."""
        return [[str(h)] + ["—" if (h, n) not in by_cell else cell_text(by_cell[(h, n)]) for n in config.widths]
                for h in config.hidden_layers]

    rows = grid(lambda r: f"{at(r.trace.cosine_lockstep, 0):.4f} → {at(r.trace.cosine_lockstep, last):.4f}")
    gaps = grid(lambda r: f"{at(r.trace.trace_gap, 0):.2e} ({r.info['theory_trace_gap']:.2e})")
    widths = [f"N = {n}" for n in config.widths]
    dataset = results[0].info["dataset"] if results else config.dataset
    return "\n".join([
        f"width-depth-linear: linear residual MLPs, {config.parameterisation}, closed-form inference, "
        f"{dataset} (B = {config.batch}), Adam η = {config.learning_rate:g}, T = {config.steps}, "
        f"seed {config.seeds[0]}",
        "",
        "cosine(PC gradient, BP gradient) at the same weights, t = 0 → t = T−1:",
        table(["H"] + widths, rows),
        "",
        "tr(S − I)/d_y at t = 0, measured (theory, docs/background.md §4.4):",
        table(["H"] + widths, gaps),
        "",
        report(_verdicts(config, by_cell), "§5.1"),
    ])


def _verdicts(config: WidthDepthLinearConfig, by_cell) -> list[Verdict]:
    """Figure 1's claims from the table's cells: the cosine rises with width at every
    depth, at t = 0 and t = T−1; the gap falls like 1/N where theory says it shrinks
    (μP family), and stays O(1) where it does not (SP, NTP)."""
    last, widths = config.steps - 1, sorted(config.widths)

    def per_depth(value) -> dict[str, list[float]]:
        return {f"H = {h}": [value(by_cell[(h, n)]) if (h, n) in by_cell else float("nan") for n in widths]
                for h in config.hidden_layers}

    cosines = {f"{label}, t = {t}": values for t in sorted({0, last})
               for label, values in per_depth(lambda r, t=t: at(r.trace.cosine_lockstep, t)).items()}
    gaps = per_depth(lambda r: at(r.trace.trace_gap, 0))
    theory = per_depth(lambda r: r.info["theory_trace_gap"])
    verdicts = [rises_with_width(widths, cosines,
                                 claim="PC–BP cosine rises with width at every depth, at t = 0 and T−1")]
    if theory_shrinks(theory):
        verdicts.append(falls_like_inverse_width(widths, gaps, quantity="tr(S − I)/d_y"))
    else:
        verdicts.append(stays_off(widths, gaps))
    return verdicts


EXPERIMENT = Experiment(
    name="width-depth-linear",
    description="Figure 1: linear residual MLPs over a width × depth grid, closed-form PC against BP",
    config_type=WidthDepthLinearConfig,
    presets={"quick": QUICK, "paper": PAPER},
    cells=cells,
    run_cell=run_cell,
    summarise=summarise,
    figures=("pcscale.plots._linear:plot_width_depth_linear",),
)
