"""`toy` — Figure 2 (skips) and Figure A.17 (no skips): deep linear networks on the toy
task, trained by full-batch GD with closed-form inference, against the DMFT curve
(docs/background.md §5.2). The same machinery serves `toy-sp`, `gamma0-sweep` and `saddle`."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

import pcscale as pc

from . import _names
from ._claims import apart, below, coincide, falls_like_inverse_width, stays_off, theory_shrinks
from ._config import check_config, check_positive, field
from ._lockstep import ClosedForm, optimiser_for, train_lockstep
from ._results import Cell, CellResult, trace_of
from ._runner import CellContext, Experiment
from ._shared import DepthFields, SizeFields, TrainingFields
from ._table import number, table
from ._verdict import COINCIDE_TOLERANCE, Verdict, report


@dataclasses.dataclass(frozen=True)
class ToyConfig(TrainingFields, DepthFields, SizeFields):
    """Settings of the toy-task experiments (`toy`, `toy-sp`, `gamma0-sweep`, `saddle`;
    `pcscale show-config toy` lists each with its meaning). With a fixed `data_seed`,
    the seeds are initialisations of one task, whose mean is what the DMFT describes
    (docs/background.md §4.8 averages 3); `data_seed = -1` gives each seed its own data
    (docs/background.md §5.0: key = PRNGKey(seed), then (data_key, model_key) =
    split(key)). `dmft_iterations = -1` solves the DMFT exactly (causally); n ≥ 0 runs n
    Jacobi sweeps as in the reference code (10 there; they overflow at strong feature
    learning, see docs/dmft.md)."""

    widths: tuple[int, ...] = (8, 32, 128, 512)
    seeds: tuple[int, ...] = field((0,), "the model seeds swept, one cell each (the data come from data_seed)")
    hidden_layers: tuple[int, ...] = (4,)
    learning_rate: float = field(0.025, "η: GD's rate, which the parameterisation's SGD rule scales (η·γ0²·N "
                                        "under μPC, η under SP)")
    steps: int = 50
    float64: bool = True
    gamma0s: tuple[float, ...] = field((1.0,), "the γ0 values swept, one cell each")
    skips: tuple[bool, ...] = field((True, False), "the architectures run: true is residual (α = 1/2 under μPC), "
                                                   "false a plain MLP")
    parameterisation: str = field("mupc", "mupc (the paper) or sp (toy-sp); how the network scales with width",
                                  choices=("mupc", "mup", "sp", "ntp"))
    data_seed: int = field(-1, "the toy data's seed, or -1 for each cell's own seed")
    input_dim: int = field(40, "D: the toy task's input dimension")
    samples: int = field(20, "P: the toy task's number of samples")
    dmft: bool = field(True, "also solve the infinite-width DMFT curve (no-skip μP networks only)")
    dmft_iterations: int = field(-1, "-1 for the exact causal DMFT solve, or n ≥ 0 Jacobi sweeps (the "
                                     "reference code's 10)")
    dmft_exact_steps: bool = field(False, "read the DMFT errors exactly as discrete GD steps move them instead "
                                          "of by docs/background.md §4.8's first-order recursion (needs "
                                          "dmft_iterations = -1)")

    def __post_init__(self):
        check_config(self)
        check_positive(self, "widths", "hidden_layers", "gamma0s", "learning_rate", "steps", "input_dim",
                       "samples")
        if self.data_seed < -1:
            raise ValueError(f"`data_seed` must be −1 (each cell's seed) or a seed ≥ 0, got {self.data_seed}.")
        if self.dmft_iterations < -1:
            raise ValueError(f"`dmft_iterations` must be −1 (the exact causal solve) or a number of Jacobi "
                             f"sweeps ≥ 0, got {self.dmft_iterations}.")
        if self.dmft_exact_steps and self.dmft_iterations != -1:
            raise ValueError(f"`dmft_exact_steps` needs the causal solve (dmft_iterations = −1), got "
                             f"dmft_iterations = {self.dmft_iterations}.")
        if self.dmft and self.parameterisation not in ("mupc", "mup"):
            raise ValueError(f"`dmft` describes μP networks only, got parameterisation {self.parameterisation!r}; "
                             "set dmft=false.")


def _name(skips: bool, h: int, gamma0: float) -> str:
    return f"{'skips' if skips else 'noskips'}-H{h}-g{gamma0:g}"


def data_seed(config: ToyConfig, seed: int) -> int:
    return seed if config.data_seed == -1 else config.data_seed


def cells(config: ToyConfig) -> list[Cell]:
    grid = []
    # One DMFT curve per task: per seed when each seed draws its own data.
    dmft_seeds = config.seeds if config.data_seed == -1 else (config.data_seed,)
    for skips in config.skips:
        for h in config.hidden_layers:
            for gamma0 in config.gamma0s:
                for n in config.widths:
                    for seed in config.seeds:
                        settings = {"kind": "network", "skips": skips, "hidden_layers": h, "gamma0": gamma0,
                                    "width": n, "seed": seed, "data_seed": data_seed(config, seed)}
                        grid.append(Cell(f"{_name(skips, h, gamma0)}-N{n}-seed{seed}", settings))
                if config.dmft and not skips:
                    for seed in dmft_seeds:
                        settings = {"kind": "dmft", "skips": False, "hidden_layers": h, "gamma0": gamma0,
                                    "data_seed": seed}
                        grid.append(Cell(f"dmft-H{h}-g{gamma0:g}-data{seed}", settings))
    return grid


def toy_data(config: ToyConfig, seed: int, data_seed: int):
    """The toy batch from `data_seed`'s data key and the model key of `seed` (both the
    §5.0 split of PRNGKey(seed) when they are equal)."""
    data_key, _ = jax.random.split(jax.random.PRNGKey(data_seed))
    _, model_key = jax.random.split(jax.random.PRNGKey(seed))
    x, y = pc.data.toy(input_dim=config.input_dim, samples=config.samples, key=data_key)
    dtype = _names.dtype(config.float64)
    return x.astype(dtype), y.astype(dtype), model_key


def run_cell(config: ToyConfig, cell: Cell, context: CellContext) -> CellResult:
    s = cell.settings
    x, y, model_key = toy_data(config, s.get("seed", s["data_seed"]), s["data_seed"])
    depth = s["hidden_layers"] + 1
    if s["kind"] == "dmft":
        curve = pc.theory.dmft(x, y, depth=depth, learning_rate=config.learning_rate, steps=config.steps,
                               gamma0=s["gamma0"], exact_steps=config.dmft_exact_steps,
                               iterations=None if config.dmft_iterations == -1 else config.dmft_iterations)
        # A curve that is not finite stays in the results as null (a genuine failure, with
        # dmft's warning naming its cause), never silently dropped.
        info = {"dmft_loss": np.asarray(curve.loss), "fixed_point_change": float(curve.fixed_point_change),
                "dmft_converged": bool(curve.converged),
                "depth": depth}
        return CellResult(cell, None, info, 0.0)
    parameterisation = _names.parameterisation(config.parameterisation, gamma0=s["gamma0"])
    build = pc.nn.residual_mlp if s["skips"] else pc.nn.mlp
    model = build(config.input_dim, s["width"], 1, depth, parameterisation=parameterisation, activation="linear",
                  output_energy=pc.MSE(), dtype=x.dtype, key=model_key)
    optimiser = optimiser_for(model, pc.SGD(config.learning_rate))
    trace = train_lockstep(model, x, y, optimiser=optimiser, inference=ClosedForm(), steps=config.steps,
                           progress=context.progress, mesh=context.mesh, description=cell.name)
    info = {"dataset": "toy", "depth": depth,
            "theory_trace_gap": pc.theory.predicted_gap(s["width"], depth, parameterisation, skips=s["skips"])}
    return CellResult(cell, trace, info, 0.0)


def dmft_curves(results: list[CellResult]) -> dict[tuple[int, float, int], np.ndarray]:
    """The DMFT loss curves of a run, keyed by (H, γ0, data seed)."""
    return {(r.cell.settings["hidden_layers"], r.cell.settings["gamma0"], r.cell.settings["data_seed"]):
            np.asarray(r.info["dmft_loss"], float) for r in results if r.cell.settings["kind"] == "dmft"}


def summarise(config: ToyConfig, results: list[CellResult], *, title: str, claims=None,
              section: str = "§5.2") -> str:
    """The per-cell table, then the verdicts of `claims(config, results)` (default
    `width_claims`)."""
    claims = width_claims if claims is None else claims
    curves = dmft_curves(results)
    last = config.steps - 1
    rows = []
    for r in results:
        s = r.cell.settings
        if s["kind"] != "network":
            continue
        trace = trace_of(r)
        dmft = curves.get((s["hidden_layers"], s["gamma0"], s["data_seed"])) if not s["skips"] else None
        rows.append([
            "yes" if s["skips"] else "no", str(s["hidden_layers"]), f"{s['gamma0']:g}", str(s["width"]),
            str(s["seed"]),
            f"{trace.spectral_gap[0]:.3e}", f"{r.info['theory_trace_gap']:.3e}",
            number(trace.pc_energy[last]), number(trace.bp_loss[last]),
            "—" if dmft is None else number(dmft[last]), number(trace.cosine_trajectory[last]),
        ])
    header = ["skips", "H", "γ0", "N", "seed", "s(θ0) − 1", "theory", "F*(T−1)", "BP loss", "DMFT", "cos (traj.)"]
    return "\n".join([
        f"{title}: linear MLPs on the toy task (D = {config.input_dim}, P = {config.samples}), "
        f"{config.parameterisation}, GD η = {config.learning_rate:g}, closed-form inference, T = {config.steps}",
        "",
        table(header, rows),
        "",
        "s − 1 is the PC–BP gap (docs/background.md §4.4–4.5).",
        report(claims(config, results), section),
    ])


class Groups:
    """A run's network cells by group (skips, H, γ0) and width, seeds together, with
    their seed means; what the claims of the toy family are checked on. The groups are
    the config's (`keys`), finished or not."""

    def __init__(self, config: ToyConfig, results: list[CellResult]):
        self.config = config
        self.keys = [(skips, h, gamma0) for skips in config.skips for h in config.hidden_layers
                     for gamma0 in config.gamma0s]
        self.cells: dict[tuple, dict[int, list[CellResult]]] = {}
        for r in results:
            s = r.cell.settings
            if s["kind"] == "network":
                key = (s["skips"], s["hidden_layers"], s["gamma0"])
                self.cells.setdefault(key, {}).setdefault(s["width"], []).append(r)
        self.dmft = dmft_curves(results)
        self.widths = sorted(config.widths)

    def label(self, key: tuple, *, width: int | None = None) -> str:
        skips, h, gamma0 = key
        words = [] if width is None else [f"N = {width}"]
        words.append("skips" if skips else "no skips")
        if len(self.config.hidden_layers) > 1:
            words.append(f"H = {h}")
        if len(self.config.gamma0s) > 1:
            words.append(f"γ0 = {gamma0:g}")
        return ", ".join(words)

    def mean(self, key: tuple, width: int, metric: str) -> np.ndarray:
        """The seed mean of a per-step metric (NaN where the cell has not finished)."""
        found = self.cells.get(key, {}).get(width, [])
        if not found:
            return np.full(self.config.steps, np.nan)
        return np.mean([getattr(r.trace, metric) for r in found], axis=0)

    def theory(self, key: tuple, width: int) -> float:
        """The predicted E[s − 1] at θ_0 (docs/background.md §4.4–4.5)."""
        skips, h, gamma0 = key
        parameterisation = _names.parameterisation(self.config.parameterisation, gamma0=gamma0)
        return float(pc.theory.predicted_gap(width, h + 1, parameterisation, skips=skips))

    def too_narrow(self, key: tuple, width: int) -> str:
        """Why this cell cannot show an infinite-width claim ("" when it can): its
        predicted gap s − 1 ≈ L/(γ0²N), the small parameter of docs/background.md §4.4,
        exceeds the tolerance within which curves count as coinciding."""
        gap = self.theory(key, width)
        if not gap > COINCIDE_TOLERANCE:
            return ""
        return (f"at {self.label(key, width=width)} the predicted s − 1 = {gap:.2g} (docs/background.md §4.4) "
                f"exceeds {COINCIDE_TOLERANCE:g}, too narrow for an infinite-width claim")

    def dmft_for(self, key: tuple) -> np.ndarray | None:
        """The DMFT loss of a no-skip group, averaged over its data seeds; None without one."""
        skips, h, gamma0 = key
        if skips or not self.config.dmft:
            return None
        seeds = sorted({data_seed(self.config, seed) for seed in self.config.seeds})
        found = [self.dmft.get((h, gamma0, d), np.full(self.config.steps, np.nan))[: self.config.steps]
                 for d in seeds]
        return np.mean(found, axis=0)


def width_claims(config: ToyConfig, results: list[CellResult]) -> list[Verdict]:
    """`toy` and `toy-sp` (docs/background.md §5.2–5.3). Where theory says the gap
    shrinks with width (μP family): s − 1 falls like 1/N; F*, the BP loss and the DMFT
    loss coincide at the largest width; the PC energy is below the BP loss in the
    narrowest network. Where it does not (SP, NTP): s − 1 stays O(1) and F* stays off
    the loss of the same weights at the largest width. Seeds are averaged."""
    groups = Groups(config, results)
    keys = groups.keys
    gaps = {groups.label(k): [groups.mean(k, n, "spectral_gap")[0] for n in groups.widths] for k in keys}
    theory = {groups.label(k): [groups.theory(k, n) for n in groups.widths] for k in keys}
    widest, narrowest = groups.widths[-1], groups.widths[0]

    def curves(key, width, with_dmft):
        found = {"F*": groups.mean(key, width, "pc_energy"), "BP loss": groups.mean(key, width, "bp_loss")}
        dmft = groups.dmft_for(key) if with_dmft else None
        return found if dmft is None else {**found, "DMFT": dmft}

    if not theory_shrinks(theory):
        # F* against the loss of the same weights (their ratio is 1/s): the BP twin's
        # loss follows another trajectory and may cross F* during training.
        same_weights = {groups.label(k, width=widest): {"F*": groups.mean(k, widest, "pc_energy"),
                                                        "loss": groups.mean(k, widest, "pc_loss")} for k in keys}
        return [stays_off(groups.widths, gaps),
                apart(same_weights, claim="F* stays off the loss of the same weights at the largest width",
                      every_step=True)]
    with_dmft = any(groups.dmft_for(k) is not None for k in keys)
    narrow = {groups.label(k, width=widest): groups.too_narrow(k, widest) for k in keys}
    compared = "F*, the BP loss and the DMFT loss" if with_dmft else "F* and the BP loss"
    return [
        falls_like_inverse_width(groups.widths, gaps),
        coincide({groups.label(k, width=widest): curves(k, widest, True) for k in keys
                  if not narrow[groups.label(k, width=widest)]},
                 claim=f"{compared} coincide at the largest width",
                 excluded={where: why for where, why in narrow.items() if why}),
        below({groups.label(k, width=narrowest): curves(k, narrowest, False) for k in keys},
              claim="the PC energy F* is below the BP loss in the narrowest network"),
    ]


def experiment(name: str, description: str, quick: ToyConfig, paper: ToyConfig, *,
               claims=width_claims, section: str = "§5.2") -> Experiment:
    """An experiment of the toy family; `claims(config, results)` gives its verdicts,
    `section` where docs/background.md states them. Every one draws the toy family's
    figures."""
    return Experiment(
        name=name, description=description, config_type=ToyConfig, presets={"quick": quick, "paper": paper},
        cells=cells, run_cell=run_cell,
        summarise=lambda config, results: summarise(config, results, title=name, claims=claims, section=section),
        figures=("pcscale.plots._toy:plot_toy_family",),
    )


EXPERIMENT = experiment(
    "toy",
    "Figure 2 / A.17: deep linear μPC networks on the toy task; PC energy, BP loss and the DMFT curve",
    ToyConfig(widths=(8, 32, 128, 512, 2048), seeds=(0, 1, 2), data_seed=0),
    ToyConfig(widths=(8, 16, 32, 64, 128, 256, 512, 1024, 2048), steps=100),
)
