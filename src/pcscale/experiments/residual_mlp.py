"""`residual-mlp` — Figure 4a: tanh residual MLPs under μPC trained by PC and BP with
numerical inference, across widths (docs/background.md §5.7)."""

from __future__ import annotations

import dataclasses

import jax

import pcscale as pc
from pcscale import theory

from . import _names, _nonlinear
from ._config import check_config, check_positive, field
from ._lockstep import optimiser_for, train_lockstep
from ._results import Cell, CellResult
from ._runner import CellContext, Experiment
from ._shared import ImageTrainingFields
from ._table import number, table


@dataclasses.dataclass(frozen=True)
class ResidualMLPConfig(ImageTrainingFields):
    """Settings of `residual-mlp` (`pcscale show-config residual-mlp` lists each with its
    meaning). Adam's η follows the reference rule η/√(N·L) under μPC. The default
    solver, "auto", is Newton–Krylov with the Gauss–Newton preconditioner, which certifies
    every step; in float32 it is wrapped in `pcscale.MixedPrecision` when `rtol` lies
    below the float32 rounding floor, about 2e-4 at N = 256, L = 32
    (docs/inference.md). `solver=gd` with `rtol=0` and `max_inference_steps=3100`
    (100·H) is the reference's fixed budget, the paper's fidelity option; the residual
    is reported either way and unconverged steps are flagged."""

    batch: int = 32
    steps: int = 10
    hidden_layers: int = field(7, "H: hidden layers (L = H + 1 weight layers)")

    def __post_init__(self):
        check_config(self)
        check_positive(self, "batch", "widths", "hidden_layers", "gamma0", "learning_rate", "steps")
        _nonlinear.check_inference(self)


QUICK = ResidualMLPConfig()
PAPER = ResidualMLPConfig(dataset="cifar10", fallback=False, batch=64, widths=(8, 16, 32, 64, 128, 256, 512),
                          hidden_layers=31, steps=100)


def cells(config: ResidualMLPConfig) -> list[Cell]:
    return [Cell(f"N{n}-seed{seed}", {"width": n, "seed": seed}) for n in config.widths for seed in config.seeds]


def run_cell(config: ResidualMLPConfig, cell: Cell, context: CellContext) -> CellResult:
    n, seed = cell.settings["width"], cell.settings["seed"]
    x, y, data_info = _names.image_batch(config.dataset, batch=config.batch, seed=seed, flatten=True,
                                         data_root=config.data_root, fallback=config.fallback)
    dtype = _names.dtype(config.float64)
    _, model_key = jax.random.split(jax.random.PRNGKey(seed))
    parameterisation = _names.parameterisation(config.parameterisation, gamma0=config.gamma0)
    model = pc.nn.residual_mlp(x.shape[1], n, y.shape[1], config.hidden_layers + 1,
                               parameterisation=parameterisation, activation=config.activation,
                               output_energy=pc.CrossEntropy(), dtype=dtype, key=model_key)
    optimiser = optimiser_for(model, pc.Adam(config.learning_rate))
    x, y = x.astype(dtype), y.astype(dtype)
    solver = _nonlinear.solver_for(config, model, x, y, progress=context.progress)
    trace = train_lockstep(model, x, y, optimiser=optimiser, inference=solver,
                           steps=config.steps, progress=context.progress, mesh=context.mesh, description=cell.name)
    layers = list(range(len(model.layers)))
    info = {**data_info, "depth": config.hidden_layers + 1, "solver": type(solver).__name__,
            "tracked_layers": layers, "layer_labels": [f"W{i + 1}" for i in layers],
            **_one_step(model, x, y, trace)}
    return CellResult(cell, trace, info, 0.0)


def _one_step(model, x, y, trace) -> dict:
    """The one-step estimate F̂ of the equilibrium energy at θ_0
    (`pcscale.theory.nonlinear_rescaling`, docs/theory.md), the certified F* the PC
    step solved for at t = 0 (`pc_energy[0]`, certified where `converged[0]`) and their
    relative difference |F̂ − F*|/F*. Computed after training, from the untouched θ_0,
    so the trace is the same with or without it."""
    estimate = theory.nonlinear_rescaling(model, x, y)
    one_step, certified = float(estimate.energy), float(trace.pc_energy[0])
    error = abs(one_step - certified) / abs(certified) if certified != 0 else float("nan")
    return {"one_step_energy": one_step, "equilibrium_energy_t0": certified, "one_step_error": error,
            "rescaling_spectral_gap_t0": float(estimate.spectral_gap)}


def summarise(config: ResidualMLPConfig, results: list[CellResult]) -> str:
    title = (f"residual-mlp: {config.activation} residual MLPs, {config.parameterisation}, "
             f"L = {config.hidden_layers + 1}, B = {config.batch}, Adam η = {config.learning_rate:g}")
    # The per-layer column lists every layer; keep it short by showing first, middle, last.
    text = _nonlinear.summarise(title, config, [_thin(r) for r in results],
                                label=lambda r: f"N = {r.cell.settings['width']}")
    return text + "\n\n" + _one_step_table(results)


def _one_step_table(results: list[CellResult]) -> str:
    """The one-step estimate F̂ against the certified F* at t = 0, per cell ("—" for a
    results file written before they were recorded)."""
    rows = []
    for r in results:
        certified = r.trace is not None and bool(r.trace.converged[0])
        rows.append([f"N = {r.cell.settings['width']}", str(r.cell.settings.get("seed", "")),
                     number(r.info.get("rescaling_spectral_gap_t0")), number(r.info.get("one_step_energy")),
                     number(r.info.get("equilibrium_energy_t0")), number(r.info.get("one_step_error")),
                     "yes" if certified else "no"])
    header = ["width", "seed", "‖S‖₂ − 1/λ", "F̂ (one step)", "F* (solved)", "|F̂ − F*|/F*", "F* certified"]
    return ("One-step (Gauss–Newton) estimate of the equilibrium energy at t = 0 against the solved F* "
            "(pcscale.theory.nonlinear_rescaling; ‖S‖₂ − 1/λ averaged over the batch):\n\n"
            + table(header, rows))


def _thin(result: CellResult) -> CellResult:
    tracked = result.info["tracked_layers"]
    keep = sorted({tracked[0], tracked[len(tracked) // 2], tracked[-1]})
    labels = [result.info["layer_labels"][tracked.index(i)] for i in keep]
    return dataclasses.replace(result, info={**result.info, "tracked_layers": keep, "layer_labels": labels})


EXPERIMENT = Experiment(
    name="residual-mlp",
    description="Figure 4a: tanh residual MLPs under μPC, PC against BP across widths with numerical inference",
    config_type=ResidualMLPConfig,
    presets={"quick": QUICK, "paper": PAPER},
    cells=cells,
    run_cell=run_cell,
    summarise=summarise,
    figures=("pcscale.plots._training:plot_training",),
)
