"""`coord-check` — coordinate checks of a residual MLP family across widths, one cell per
parameterisation: per-layer activation, error and update scales at initialisation and
over a few PC training steps (`pcscale.theory.coord_check`)."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

import pcscale as pc

from . import _names, _nonlinear
from ._claims import width_stable
from ._config import check_config, check_positive, field
from ._results import Cell, CellResult
from ._runner import CellContext, Experiment
from ._shared import ActivationFields, DataFields, InferenceFields, TrainingFields
from ._table import number, table
from ._verdict import Verdict, negate, report


@dataclasses.dataclass(frozen=True)
class CoordCheckConfig(TrainingFields, InferenceFields, ActivationFields, DataFields):
    """Settings of `coord-check` (`pcscale show-config coord-check` lists each with its
    meaning). Adam's η is scaled per weight by the parameterisation's per-role rule
    (`AdamRule.PER_ROLE` for the μP family); SP leaves it unscaled, which is what makes
    its updates grow with width."""

    batch: int = 32
    learning_rate: float = 1e-2
    steps: int = field(3, "the PC training steps recorded")
    float64: bool = True
    widths: tuple[int, ...] = field((32, 64, 128, 256), "N: the widths compared")
    hidden_layers: int = field(3, "H: hidden layers (L = H + 1 weight layers)")
    parameterisations: tuple[str, ...] = field(("mupc", "sp"), "the parameterisations checked, one cell each (mupc "
                                                               "passes, sp fails)",
                                               choices=tuple(_names.PARAMETERISATIONS))
    seeds: int = field(1, "the number of initialisations averaged")
    seed: int = field(0, "the seed of the batch and of the initialisations")

    def __post_init__(self):
        check_config(self)
        check_positive(self, "batch", "widths", "hidden_layers", "learning_rate", "steps", "seeds")
        _nonlinear.check_inference(self)


QUICK = CoordCheckConfig()
PAPER = CoordCheckConfig(dataset="cifar10", fallback=False, batch=64, widths=(64, 128, 256, 512, 1024, 2048),
                         hidden_layers=7, max_inference_steps=10_000, seeds=3)


def cells(config: CoordCheckConfig) -> list[Cell]:
    return [Cell(name, {"parameterisation": name}) for name in config.parameterisations]


def run_cell(config: CoordCheckConfig, cell: Cell, context: CellContext) -> CellResult:
    x, y, data_info = _names.image_batch(config.dataset, batch=config.batch, seed=config.seed, flatten=True,
                                         data_root=config.data_root, fallback=config.fallback)
    dtype = _names.dtype(config.float64)
    parameterisation = _names.parameterisation(cell.settings["parameterisation"])
    if cell.settings["parameterisation"] in _names.MU_FAMILY:
        # μP's per-role Adam rates (η/fan_in on hidden weights, η on the readout): the
        # width-stable rule a coordinate check is meant to confirm.
        parameterisation = dataclasses.replace(parameterisation, adam_rule=pc.AdamRule.PER_ROLE)

    def make_model(width, key):
        return pc.nn.residual_mlp(x.shape[1], width, y.shape[1], config.hidden_layers + 1,
                                  parameterisation=parameterisation, activation=config.activation,
                                  output_energy=pc.CrossEntropy(), dtype=dtype, key=key)

    def solver(model):
        return _nonlinear.solver_for(config, model)

    result = pc.theory.coord_check(
        make_model, config.widths, x.astype(dtype), y.astype(dtype), optimiser=pc.Adam(config.learning_rate),
        solver=solver, steps=config.steps, seeds=config.seeds, progress=context.progress,
        key=jax.random.PRNGKey(config.seed),
    )
    record = pc.experiments.coord_check_record(result)
    info = {**data_info, "coord_check": record,
            "activation_spread": _spreads(result, "activation"), "update_spread": _spreads(result, "update")}
    return CellResult(cell, None, info, 0.0)


def _spreads(result, quantity: str) -> list[float]:
    """max/min over widths of each hidden layer's scale at the last recorded step."""
    spread = pc.theory.spread(getattr(result, quantity))
    return [float(v) for v in jax.device_get(spread)[-1]]


def summarise(config: CoordCheckConfig, results: list[CellResult]) -> str:
    found = {r.cell.settings["parameterisation"]: r for r in results}
    rows = []
    for r in results:
        rows.append([r.cell.name, number(max(r.info["activation_spread"])), number(max(r.info["update_spread"])),
                     f"{min(r.info['coord_check']['converged']):.0%}"])
    return "\n".join([
        f"coord-check: {config.activation} residual MLPs, L = {config.hidden_layers + 1}, widths "
        f"{', '.join(map(str, config.widths))}, Adam η = {config.learning_rate:g}, {config.steps} PC steps",
        "",
        table(["parameterisation", "activation spread", "update spread", "solves converged (worst width)"], rows),
        "",
        "spread = max/min over widths of a layer's scale (worst layer, last step); ≈ 1 means width-stable.",
        report([claim(name, found.get(name)) for name in config.parameterisations], "§3.2"),
    ])


def claim(name: str, result: CellResult | None) -> Verdict:
    """The μP family's activations and updates are width-stable; SP's (and NTP's)
    updates are not (Adam's rate is not scaled with width). `result`: the
    parameterisation's cell, None when it has not finished."""
    info = result.info if result is not None else {}

    def largest(key: str) -> float:
        """The worst layer's spread; NaN when missing or any layer's is undefined."""
        values = np.asarray([np.nan if v is None else v for v in info.get(key, [])], dtype=float)
        return float(values.max()) if values.size else float("nan")

    if name in _names.MU_FAMILY:
        spreads = {"activation": largest("activation_spread"), "update": largest("update_spread")}
        return width_stable(spreads, claim=f"{name}: activation and update scales are width-stable")
    stable = width_stable({"update": largest("update_spread")}, claim="")
    return negate(stable, f"{name}: update scales are not width-stable")


EXPERIMENT = Experiment(
    name="coord-check",
    description="Coordinate checks: per-layer activation and update scales across widths, μPC against SP",
    config_type=CoordCheckConfig,
    presets={"quick": QUICK, "paper": PAPER},
    cells=cells,
    run_cell=run_cell,
    summarise=summarise,
    figures=("pcscale.plots._run:plot_coord_check_run",),
)
