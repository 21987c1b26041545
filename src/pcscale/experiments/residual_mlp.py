"""`residual-mlp` — Figure 4a: tanh residual MLPs under μPC trained by PC and BP with
numerical inference, across widths (docs/background.md §5.7)."""

from __future__ import annotations

import dataclasses

import jax

import pcscale as pc

from . import _names, _nonlinear
from ._config import check_choice, check_config, check_positive
from ._lockstep import optimiser_for, train_lockstep
from ._results import Cell, CellResult
from ._runner import CellContext, Experiment


@dataclasses.dataclass(frozen=True)
class ResidualMLPConfig:
    """Settings of `residual-mlp`.

    - `dataset`, `data_root`, `fallback`: as for `width-depth-linear`.
    - `batch`: B. `widths`: N. `hidden_layers`: H (L = H + 1). `seeds`.
    - `activation`: "tanh" (the paper) or "relu", "linear"…; `parameterisation`, `gamma0`.
    - `learning_rate`: Adam's η (the reference rule η/√(N·L) under μPC).
    - `solver`: the inference solver: "auto" (default: Newton–Krylov with the depth
      preconditioner, which certifies every step; in float32 it is wrapped in
      `pcscale.MixedPrecision` when `rtol` lies below the float32 rounding floor, about
      2e-4 at N = 256, L = 32, docs/inference.md), or "gd" (the paper's gradient
      descent), "cg", "newton", "nesterov", "lbfgs", "ode", "mixed"; `step_size`: β per
      sample (gd, nesterov); `rtol`: stop at this relative residual;
      `max_inference_steps`: the budget, in the solver's own steps (Newton steps for
      "auto"). `rtol = 0` runs exactly `max_inference_steps` steps (the reference's
      fixed budget: `solver=gd`, `max_inference_steps=3100` = 100·H is the paper's
      fidelity option); the residual is reported either way and unconverged steps are
      flagged.
    - `steps`: T. `float64`: compute in float64.
    """

    dataset: str = "mnist"
    data_root: str = ""
    fallback: bool = True
    batch: int = 32
    widths: tuple[int, ...] = (8, 32, 128)
    hidden_layers: int = 7
    seeds: tuple[int, ...] = (0,)
    activation: str = "tanh"
    parameterisation: str = "mupc"
    gamma0: float = 1.0
    learning_rate: float = 1e-3
    solver: str = "auto"
    step_size: float = 0.3
    rtol: float = 1e-6
    max_inference_steps: int = 100
    steps: int = 10
    float64: bool = False

    def __post_init__(self):
        check_config(self)
        check_positive(self, "batch", "widths", "hidden_layers", "gamma0", "learning_rate", "steps")
        check_choice(self, "dataset", _names.IMAGE_DATASETS)
        check_choice(self, "parameterisation", _names.PARAMETERISATIONS)
        check_choice(self, "activation", ("tanh", "relu", "linear", "gelu"))
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
            "tracked_layers": layers, "layer_labels": [f"W{i + 1}" for i in layers]}
    return CellResult(cell, trace, info, 0.0)


def summarise(config: ResidualMLPConfig, results: list[CellResult]) -> str:
    title = (f"residual-mlp: {config.activation} residual MLPs, {config.parameterisation}, "
             f"L = {config.hidden_layers + 1}, B = {config.batch}, Adam η = {config.learning_rate:g}")
    # The per-layer column lists every layer; keep it short by showing first, middle, last.
    return _nonlinear.summarise(title, config, [_thin(r) for r in results], label=lambda r: f"N = {r.cell.settings['width']}")


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
)
