"""`inference-convergence` — closed-form against numerical inference, SP against μPC
(docs/background.md §5.6): the same linear network trained once with the exact equilibrium and
once with each numerical solver, checking every numerical solve against F* and ∇F*."""

from __future__ import annotations

import dataclasses

import numpy as np

import pcscale as pc

from . import _names
from ._claims import apart, grows_with_depth, off_closed_form, reaches_closed_form
from ._config import check_config, check_positive, field
from ._lockstep import ClosedForm, optimiser_for, train_lockstep
from ._results import Cell, CellResult, trace_of
from ._runner import CellContext, Experiment
from ._shared import DepthFields, SolveFields, TrainingFields
from ._table import number, table
from ._verdict import Support, Verdict, report
from .toy import ToyConfig, toy_data

MODES = ("closed-form", "reference", "tolerance", "cg")


@dataclasses.dataclass(frozen=True)
class InferenceConvergenceConfig(TrainingFields, SolveFields, DepthFields):
    """Settings of `inference-convergence` (toy data, linear MLPs, GD training;
    `pcscale show-config inference-convergence` lists each with its meaning). Each mode
    is a separate training run: "closed-form" (exact, docs/background.md §4.2);
    "reference" (GD with β = `reference_step_size` per sample for exactly
    `reference_steps_per_layer`·H steps, as [R] ran it); "tolerance" (GD with
    β = `step_size` to a relative residual `rtol`, at most `max_inference_steps`); "cg"
    (conjugate gradients, same stopping rule)."""

    step_size: float = field(0.3, "β per sample of the tolerance mode's gradient descent")
    rtol: float = field(1e-8, "the tolerance and cg modes stop at this relative residual")
    max_inference_steps: int = field(10_000, "the budget of the tolerance and cg modes, in their own steps")
    learning_rate: float = field(0.025, "η: GD's rate, which each parameterisation's SGD rule scales")
    float64: bool = True
    width: int = field(128, "N: the width of every network")
    parameterisations: tuple[str, ...] = field(("sp", "mupc"), "the parameterisations compared, one cell each",
                                               choices=("sp", "mupc", "mup", "ntp"))
    skips: bool = field(False, "residual networks (false: plain MLPs, as the paper)")
    modes: tuple[str, ...] = field(MODES, "the inference of each training run, one cell each", choices=MODES)
    reference_step_size: float = field(0.05, "β per sample of the reference mode's gradient descent")
    reference_steps_per_layer: int = field(100, "the reference mode's fixed budget per hidden layer")
    seed: int = field(0, "the seed of the toy data and the initialisation")

    def __post_init__(self):
        check_config(self)
        check_positive(self, "width", "hidden_layers", "reference_step_size", "reference_steps_per_layer",
                       "step_size", "max_inference_steps", "learning_rate", "steps")


QUICK = InferenceConvergenceConfig()
PAPER = InferenceConvergenceConfig(width=2048, hidden_layers=(1, 3, 7), max_inference_steps=100_000, steps=100)


def cells(config: InferenceConvergenceConfig) -> list[Cell]:
    return [
        Cell(f"{name}-H{h}-{mode}", {"parameterisation": name, "hidden_layers": h, "mode": mode})
        for name in config.parameterisations for h in config.hidden_layers for mode in config.modes
    ]


def inference_for(config: InferenceConvergenceConfig, mode: str, hidden_layers: int):
    if mode == "closed-form":
        return ClosedForm()
    if mode == "reference":
        return pc.GradientDescent(step_size=config.reference_step_size, rtol=0.0,
                                  max_steps=config.reference_steps_per_layer * hidden_layers)
    if mode == "tolerance":
        return pc.GradientDescent(step_size=config.step_size, rtol=config.rtol, max_steps=config.max_inference_steps)
    return pc.ConjugateGradient(rtol=config.rtol, max_steps=config.max_inference_steps)


def run_cell(config: InferenceConvergenceConfig, cell: Cell, context: CellContext) -> CellResult:
    s = cell.settings
    toy = ToyConfig(float64=config.float64, dmft=False)
    x, y, model_key = toy_data(toy, config.seed, config.seed)
    depth = s["hidden_layers"] + 1
    parameterisation = _names.parameterisation(s["parameterisation"])
    build = pc.nn.residual_mlp if config.skips else pc.nn.mlp
    model = build(toy.input_dim, config.width, 1, depth, parameterisation=parameterisation, activation="linear",
                  output_energy=pc.MSE(), dtype=x.dtype, key=model_key)
    optimiser = optimiser_for(model, pc.SGD(config.learning_rate))
    inference = inference_for(config, s["mode"], s["hidden_layers"])
    trace = train_lockstep(model, x, y, optimiser=optimiser, inference=inference, steps=config.steps,
                           theory=not isinstance(inference, ClosedForm), progress=context.progress, mesh=context.mesh,
                           description=cell.name)
    info = {"dataset": "toy", "depth": depth, "solver": type(inference).__name__,
            "theory_trace_gap": pc.theory.predicted_gap(config.width, depth, parameterisation, skips=config.skips)}
    return CellResult(cell, trace, info, 0.0)


def summarise(config: InferenceConvergenceConfig, results: list[CellResult]) -> str:
    rows = []
    for r in results:
        s, tr = r.cell.settings, trace_of(r)
        numerical = s["mode"] != "closed-form"
        rows.append([
            s["parameterisation"], str(s["hidden_layers"]), s["mode"],
            number(float(tr.closed_form_error.max())) if numerical else "exact",
            f"{int(tr.inference_steps.min())}–{int(tr.inference_steps.max())}" if numerical else "—",
            number(float(tr.relative_residual.max())) if numerical else "—",
            f"{int(tr.converged.sum())}/{tr.steps}",
            number(float(tr.closed_form_cosine.min())) if numerical else "1",
            number(tr.cosine_lockstep[0]), number(tr.cosine_lockstep[-1]),
        ])
    header = ["param.", "H", "inference", "max |F−F*|/F*", "steps", "max rel. resid.", "converged",
              "min cos(∇F, ∇F*)", "cos BP t=0", "cos BP T−1"]
    return "\n".join([
        f"inference-convergence: linear MLPs (N = {config.width}, skips {config.skips}) on the toy task, "
        f"GD η = {config.learning_rate:g}, T = {config.steps}",
        "",
        table(header, rows),
        "",
        report(claims(config, results), "§5.6"),
    ])


SHOWN = {name: found.shown for name, found in _names.PARAMETERISATIONS.items()}  # "mupc" → "μPC"


def claims(config: InferenceConvergenceConfig, results: list[CellResult]) -> list[Verdict]:
    """docs/background.md §5.6's claims: under the μP family, numerical inference that
    met its tolerance reaches F*; under SP (or NTP) the numerical energy stays measurably
    off F* within the reference budget, and F* stays off the loss; deeper networks
    need more iterations to the tolerance (GD and CG)."""
    traces = {
        (r.cell.settings["parameterisation"], r.cell.settings["hidden_layers"], r.cell.settings["mode"]): trace_of(r)
        for r in results
    }

    def reference(name):
        return {h: tr.closed_form_error for (p, h, mode), tr in traces.items() if p == name and mode == "reference"}

    mu = [p for p in config.parameterisations if p in _names.MU_FAMILY]
    verdicts = []
    for name in mu:
        converged = {f"H = {h}, {mode}": tr.closed_form_error[tr.converged] for (p, h, mode), tr in traces.items()
                     if p == name and mode != "closed-form"}
        verdicts.append(reaches_closed_form(
            converged, claim=f"{SHOWN[name]}: numerical inference that met its tolerance reaches F*"))
    for name in (p for p in config.parameterisations if p not in _names.MU_FAMILY):
        verdicts.append(off_closed_form(
            reference(name), claim=f"{SHOWN[name]}: within the reference budget the numerical energy stays "
                                   "measurably off F*",
            compare=reference(mu[0]) if mu else None, compare_name=SHOWN[mu[0]] if mu else ""))
        # F* against the loss of the same weights (their ratio is 1/s): the BP twin's loss
        # follows another trajectory and may cross F* during training.
        closed = {f"H = {h}": {"F*": tr.pc_energy, "loss": tr.pc_loss} for (p, h, mode), tr in traces.items()
                  if p == name and mode == "closed-form"}
        claim = f"{SHOWN[name]}: F* stays off the loss of the same weights (PC ≠ BP)"
        verdicts.append(apart(closed, claim=claim, every_step=True) if closed else
                        Verdict(claim, Support.CANNOT_TELL, "the closed-form mode has not run"))
    iterations: dict[str, dict[int, float]] = {}
    for (p, h, mode), tr in traces.items():
        if mode in ("tolerance", "cg"):
            iterations.setdefault(f"{SHOWN[p]} {'GD' if mode == 'tolerance' else 'CG'}", {})[h] = float(
                np.median(tr.inference_steps))
    verdicts.append(grows_with_depth(iterations, claim="deeper networks need more iterations to the tolerance "
                                                       "(median per training step)"))
    return verdicts


EXPERIMENT = Experiment(
    name="inference-convergence",
    description="Closed-form against numerical inference (reference budget, tolerance, CG), SP against μPC",
    config_type=InferenceConvergenceConfig,
    presets={"quick": QUICK, "paper": PAPER},
    cells=cells,
    run_cell=run_cell,
    summarise=summarise,
    figures=("pcscale.plots._inference:plot_inference_convergence",),
)
