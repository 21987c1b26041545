"""`pc-variants` — the PC family against BP on a classification task: each variant trains
the same tanh residual MLP (μPC by default) with mini-batches over epochs, and its test accuracy (by a
feedforward pass), cost and inference work are compared with its BP twin's."""

from __future__ import annotations

import dataclasses
import time
from typing import cast

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

import pcscale as pc
from pcscale import data as pcdata

from . import _names
from ._config import check_config, check_positive, field
from ._learners import accuracy
from ._lockstep import optimiser_for
from ._results import Cell, CellResult
from ._runner import CellContext, Experiment
from ._table import number, table

METHODS = ("bp", "pc", "epc", "ipc", "hybrid", "mcpc", "bpc")
MEANING = {
    "bp": "backpropagation (the BP twin)",
    "pc": "certified PC (auto_solver to rtol)",
    "epc": "error-based PC (GD on the errors to rtol, within max_inference_steps)",
    "ipc": "incremental PC (ipc_iterations joint updates per batch)",
    "hybrid": "hybrid PC (amortiser's guess, then auto_solver to rtol)",
    "mcpc": "Monte Carlo PC (Langevin samples, averaged update)",
    "bpc": "bidirectional PC (top-down maps beside the network, both ends clamped)",
}


@dataclasses.dataclass(frozen=True)
class PCVariantsConfig:
    """Settings of `pc-variants` (`pcscale show-config pc-variants` lists each with its
    meaning). Every method trains the same network from the same initial weights on the
    same shuffled mini-batches with Adam: the μPC reference rule for the PCModel, and
    plain Adam at η/√(N·L) for the amortiser and the bidirectional model (not PCModels).
    bPC's top term is Gaussian (½‖y − z_L‖², its energy), the others' cross-entropy.
    Test accuracy is that of the trained network's feedforward pass (for bPC, of its
    bottom-up network); times per epoch are the last epoch's (the first compiles)."""

    dataset: str = field("digits", "the image dataset (train and test splits)", choices=tuple(_names.IMAGE_DATASETS))
    data_root: str = field("", 'the folder datasets are read from; "" is $PCSCALE_DATA, or else the cache')
    fallback: bool = field(True, "a missing dataset falls back to the offline default instead of being an error")
    train_size: int = field(1500, "training samples (a seeded subset of the train split)")
    test_size: int = field(297, "test samples (a seeded subset of the test split)")
    batch: int = field(64, "B: the mini-batch")
    epochs: int = field(2, "passes over the training samples")
    width: int = field(64, "N: the hidden width")
    parameterisation: str = field("mupc", "the parameterisation of the network (and its optimiser's rule)",
                                  choices=tuple(_names.PARAMETERISATIONS))
    hidden_layers: int = field(3, "H: hidden layers (L = H + 1 weight layers)")
    learning_rate: float = field(1.0, "Adam's η, scaled by the μPC reference rule η/√(N·L)")
    methods: tuple[str, ...] = field(METHODS, "the methods compared, one cell each", choices=METHODS)
    rtol: float = field(1e-4, "the certified tolerance of pc, epc and hybrid")
    max_inference_steps: int = field(2000, "the step budget of every solve")
    step_size: float = field(0.2, "β per sample: epc's and ipc's activity steps, mcpc's Langevin step")
    ipc_iterations: int = field(20, "ipc: joint updates per batch")
    mcpc_samples: int = field(4, "mcpc: kept samples per batch (after mcpc_burn_in steps, thinned by 5)")
    mcpc_burn_in: int = field(100, "mcpc: Langevin steps before the first kept sample")
    mcpc_temperature: float = field(0.01, "mcpc: τ, the Langevin noise's temperature")
    bpc_gen_weight: float = field(0.1, "bpc: α_g, the weight of the top-down (generative) term")
    float64: bool = field(False, "compute in float64 (the run turns JAX's 64-bit mode on)")
    seed: int = field(0, "the seed of the subsets, the batches and the initialisation")

    def __post_init__(self):
        check_config(self)
        check_positive(self, "train_size", "test_size", "batch", "epochs", "width", "hidden_layers",
                       "learning_rate", "rtol", "max_inference_steps", "step_size", "ipc_iterations",
                       "mcpc_samples", "mcpc_burn_in", "mcpc_temperature", "bpc_gen_weight")


QUICK = PCVariantsConfig()
PAPER = PCVariantsConfig(dataset="mnist", fallback=False, train_size=60_000, test_size=10_000, batch=128, epochs=5,
                         width=256, hidden_layers=7, rtol=1e-5)


def cells(config: PCVariantsConfig) -> list[Cell]:
    return [Cell(method, {"method": method}) for method in config.methods]


def _data(config: PCVariantsConfig, split: str, n: int):
    loaded, note = _names._load(config.dataset, config.fallback, root=config.data_root or None, split=split,
                                 n=n, seed=config.seed, flatten=True)
    dataset = cast(pcdata.ImageDataset, loaded)  # an image dataset (or its fallback) loads images
    return np.asarray(dataset.x), np.asarray(dataset.y), {**_names._describe(dataset), "fallback_note": note}


class _Learner:
    """One method's model, optimiser state and step, behind one interface."""

    def __init__(self, method: str, config: PCVariantsConfig, model: pc.PCModel, x_probe, y_probe):
        self.method, self.config = method, config
        self.optimiser = optimiser_for(model, pc.Adam(config.learning_rate))
        self.key = jax.random.PRNGKey(config.seed + 1)
        self.model = model
        self.state = self.optimiser.init(eqx.filter(model, eqx.is_array))
        rtol, budget = config.rtol, config.max_inference_steps
        self.solver: pc.AbstractInferenceSolver = pc.make_solver("auto", model, x=x_probe, y=y_probe, rtol=rtol,
                                                                 max_steps=budget)
        if method == "epc":
            self.solver = pc.ErrorCoordinates(pc.GradientDescent(step_size=config.step_size), rtol=rtol,
                                              max_steps=budget)
        self.amortiser = pc.Amortiser.from_model(model)
        # The amortiser and the bidirectional model are not PCModels: plain Adam at the
        # rate the μPC reference rule gives the network's hidden weights, η/√(N·L).
        scaled = config.learning_rate / (config.width * (config.hidden_layers + 1)) ** 0.5
        self.amortiser_optimiser = optax.adam(scaled)
        self.amortiser_state = self.amortiser_optimiser.init(eqx.filter(self.amortiser, eqx.is_array))
        down = pc.nn.mlp(y_probe.shape[1], config.width, x_probe.shape[1], config.hidden_layers + 1,
                         parameterisation=_names.parameterisation(config.parameterisation), activation="tanh",
                         dtype=model.dtype,
                         key=jax.random.PRNGKey(config.seed + 2))
        self.bidirectional = pc.BidirectionalModel(up=model, down=down, disc_weight=1.0,
                                                   gen_weight=config.bpc_gen_weight)
        self.bidirectional_optimiser = optax.adam(scaled)
        self.bidirectional_state = self.bidirectional_optimiser.init(eqx.filter(self.bidirectional, eqx.is_array))

    @property
    def network(self) -> pc.PCModel:
        """The network whose feedforward pass is evaluated."""
        if self.method == "bpc":
            up = self.bidirectional.up
            assert up is not None
            return up
        return self.model

    def step(self, x, y) -> tuple[float, float, float, bool]:
        """One update; returns (the batch's loss before it, inference evaluations, whether
        inference was certified: 1, 0, or NaN where nothing is certified, whether the
        method reported divergence)."""
        m, c = self.method, self.config
        if m == "bp":
            self.model, self.state, metrics = pc.bp_step(self.model, self.state, x, y, optimiser=self.optimiser)
            return float(metrics.loss), 0.0, float("nan"), False
        if m in ("pc", "epc"):
            out = pc.pc_step(self.model, self.state, x, y, optimiser=self.optimiser, solver=self.solver)
            self.model, self.state, metrics = out[0], out[1], out[2]
            stats = metrics.inference
            return float(metrics.loss), float(stats.evaluations), float(bool(stats.converged)), False
        if m == "ipc":
            self.model, self.state, metrics, _ = pc.ipc_step(self.model, self.state, x, y, optimiser=self.optimiser,
                                                             step_size=c.step_size, iterations=c.ipc_iterations)
            return float(metrics.loss), float(2 * c.ipc_iterations), float("nan"), bool(metrics.diverged)
        if m == "hybrid":
            (self.model, self.amortiser, self.state, self.amortiser_state, metrics, _) = pc.hybrid_step(
                self.model, self.amortiser, self.state, self.amortiser_state, x, y, optimiser=self.optimiser,
                amortiser_optimiser=self.amortiser_optimiser, solver=self.solver)
            stats = metrics.pc.inference
            return float(metrics.pc.loss), float(stats.evaluations), float(bool(stats.converged)), False
        if m == "mcpc":
            self.key, key = jax.random.split(self.key)
            loss = float(self.model.loss(x, y))
            self.model, self.state, mc, _ = pc.mcpc_step(
                self.model, self.state, x, y, optimiser=self.optimiser, key=key, step_size=c.step_size,
                burn_in=c.mcpc_burn_in, samples=c.mcpc_samples, thin=5, temperature=c.mcpc_temperature)
            return loss, float(c.mcpc_burn_in + 5 * c.mcpc_samples), float("nan"), bool(mc.diverged)
        loss = float(self.network.loss(x, y))
        self.bidirectional, self.bidirectional_state, bmetrics, _ = pc.bpc_step(
            self.bidirectional, self.bidirectional_state, x, y, optimiser=self.bidirectional_optimiser,
            solver=pc.NewtonKrylov(rtol=c.rtol, max_steps=c.max_inference_steps))
        stats = bmetrics.inference
        return loss, float(stats.evaluations), float(bool(stats.converged)), False


def run_cell(config: PCVariantsConfig, cell: Cell, context: CellContext) -> CellResult:
    method = cell.settings["method"]
    dtype = _names.dtype(config.float64)
    x_train, y_train, info = _data(config, "train", config.train_size)
    x_test, y_test, _ = _data(config, "test", config.test_size)
    x_train, y_train = jnp.asarray(x_train, dtype), jnp.asarray(y_train, dtype)
    x_test, y_test = jnp.asarray(x_test, dtype), jnp.asarray(y_test, dtype)
    model = pc.nn.residual_mlp(x_train.shape[1], config.width, y_train.shape[1], config.hidden_layers + 1,
                               parameterisation=_names.parameterisation(config.parameterisation),
                               activation="tanh", output_energy=pc.CrossEntropy(), dtype=dtype,
                               key=jax.random.PRNGKey(config.seed))
    batch = min(config.batch, len(x_train))
    learner = _Learner(method, config, model, x_train[:batch], y_train[:batch])
    rng = np.random.default_rng(config.seed)
    history = {"train_loss": [], "test_accuracy": [], "seconds": [], "evaluations_per_step": [],
               "certified_share": []}
    failure, step = None, 0
    for epoch in range(config.epochs):
        order, start = rng.permutation(len(x_train)), time.perf_counter()
        losses, evaluations, certified = [], [], []
        for first in range(0, len(order) - batch + 1, batch):
            index = order[first:first + batch]
            loss, work, ok, diverged = learner.step(x_train[index], y_train[index])
            losses.append(loss)
            evaluations.append(work)
            certified.append(ok)
            step += 1
            if not np.isfinite(loss) or diverged:
                what = f"the loss is {loss}" if not np.isfinite(loss) else "its activities diverged"
                failure = {"step": step - 1, "reason": f"{method}: {what} in epoch {epoch + 1}"}
                break
        history["seconds"].append(time.perf_counter() - start)
        history["train_loss"].append(float(np.mean(losses)))
        history["test_accuracy"].append(accuracy(learner.network, x_test, y_test))
        history["evaluations_per_step"].append(float(np.mean(evaluations)))
        shares = [c for c in certified if not np.isnan(c)]
        history["certified_share"].append(float(np.mean(shares)) if shares else None)
        if context.progress:
            print(f"  {method}: epoch {epoch + 1}/{config.epochs} test accuracy "
                  f"{history['test_accuracy'][-1]:.3f}", flush=True)
        if failure is not None:
            break
    info = {**info, "method": method, "meaning": MEANING[method], "steps": step, "history": history,
            "test_accuracy_note": "feedforward pass of the trained network", "failure": failure}
    return CellResult(cell, None, info, float(sum(history["seconds"])))


def summarise(config: PCVariantsConfig, results: list[CellResult]) -> str:
    by_method = {r.cell.settings["method"]: r.info for r in results}
    bp = by_method.get("bp")
    bp_accuracy = bp["history"]["test_accuracy"][-1] if bp else None
    bp_time = float(bp["history"]["seconds"][-1]) if bp else None
    rows = []
    for method, info in by_method.items():
        h = info["history"]
        accuracy, seconds = h["test_accuracy"][-1], float(h["seconds"][-1])
        share = h["certified_share"][-1]
        rows.append([method, number(accuracy), number(accuracy - bp_accuracy) if bp_accuracy is not None else "—",
                     number(h["train_loss"][-1]), number(seconds),
                     number(seconds / bp_time) if bp_time else "—", number(h["evaluations_per_step"][-1]),
                     "—" if share is None else number(share), "FAILED" if info.get("failure") else "ok"])
    header = ["method", "test acc.", "Δ vs BP", "train loss", "s/epoch (last)", "time / BP", "evals/step",
              "certified", "status"]
    lines = [f"pc-variants: {config.parameterisation} tanh residual MLP N = {config.width}, "
             f"L = {config.hidden_layers + 1} on {config.dataset} ({config.train_size} train / "
             f"{config.test_size} test), B = {config.batch}, {config.epochs} epochs; "
             "test accuracy by the feedforward pass", "", table(header, rows)]
    finished = {m: i["history"]["test_accuracy"][-1] for m, i in by_method.items() if not i.get("failure")}
    family = {m: a for m, a in finished.items() if m != "bp"}
    if family and bp_accuracy is not None:
        best = max(family, key=lambda m: family[m])
        lines += ["", f"Best of the PC family here: {best} at {family[best]:.3f} test accuracy against BP's "
                      f"{bp_accuracy:.3f} ({family[best] - bp_accuracy:+.3f})."]
    return "\n".join(lines)


EXPERIMENT = Experiment(
    name="pc-variants",
    description="the PC family (PC, ePC, iPC, hybrid, MCPC, bPC) against BP on a classification task",
    config_type=PCVariantsConfig,
    presets={"quick": QUICK, "paper": PAPER},
    cells=cells,
    run_cell=run_cell,
    summarise=summarise,
    figures=("pcscale.plots._variants:plot_variants",),
)
