"""The training methods the benchmark suite compares — BP and the PC family — behind one
interface: a `Learner` holds one method's network, optimiser state and step; `signal_reach`
measures, per layer, the update a method applies and how it points against BP's on the
same batch."""

from __future__ import annotations

import dataclasses
import functools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

import pcscale as pc

from ._lockstep import optimiser_for

METHODS = ("bp", "pc-fixed", "pc", "epc", "ipc", "hybrid")
MEANING = {
    "bp": "backpropagation (the BP twin)",
    "pc-fixed": "standard PC, a fixed inference budget (fixed_steps GD steps on the activities, the field's "
                "usual protocol)",
    "pc": "certified PC (the config's solver to rtol)",
    "epc": "error-based PC (fixed_steps GD steps on the errors, the ePC paper's protocol)",
    "ipc": "incremental PC (ipc_iterations joint activity and weight updates per batch)",
    "hybrid": "hybrid PC (an amortiser's guess, then the config's solver to rtol)",
}


@dataclasses.dataclass(frozen=True)
class MethodSettings:
    """What a method needs besides its network: Adam's `learning_rate` and
    `weight_decay` (the parameterisation's per-role rules apply), the certified
    tolerance `rtol` and `max_inference_steps` (pc, hybrid), the fixed budget
    `fixed_steps` and step `step_size` β of pc-fixed and epc (β also ipc's),
    `ipc_iterations`, `decay_steps`: None for a constant rate, else the number of
    steps over which η decays to 0 along a cosine, and `solver`: the name
    ([`pcscale.make_solver`][pcscale.make_solver]) of pc's and hybrid's certified solver."""

    learning_rate: float
    weight_decay: float
    rtol: float
    max_inference_steps: int
    fixed_steps: int
    step_size: float
    ipc_iterations: int
    decay_steps: int | None = None
    solver: str = "auto"

    def optimiser(self) -> pc.AbstractOptimiser:
        """AdamW at the parameterisation's per-role rates, with η constant or decaying
        along a cosine (the decay also scales the weight decay, as optax's AdamW does)."""
        if self.decay_steps is None:
            return pc.Adam(self.learning_rate, weight_decay=self.weight_decay, decoupled_weight_decay=True)
        return pc.FromOptax(functools.partial(_cosine_adamw, steps=self.decay_steps, weight_decay=self.weight_decay),
                            self.learning_rate)


def _cosine_adamw(rate: float, *, steps: int, weight_decay: float) -> optax.GradientTransformation:
    return optax.adamw(optax.cosine_decay_schedule(rate, steps), weight_decay=weight_decay)


class Learner:
    """One method's network, optimiser state and step.

    `step(x, y)` trains on one batch and returns a `StepRecord`; `propose(x, y,
    optimiser, state)` returns the network a step *would* give (nothing kept), which
    `signal_reach` uses."""

    def __init__(self, method: str, settings: MethodSettings, model: pc.PCModel, x_probe, y_probe):
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}.")
        self.method, self.settings, self.model = method, settings, model
        if method == "ipc" and settings.decay_steps is not None:  # iPC updates the weights at every iteration
            settings = dataclasses.replace(settings, decay_steps=settings.decay_steps * settings.ipc_iterations)
        self.optimiser = optimiser_for(model, settings.optimiser())
        self.state = self.optimiser.init(eqx.filter(model, eqx.is_array))
        self.solver = self._solver(model, x_probe, y_probe)
        self.amortiser = self.amortiser_optimiser = self.amortiser_state = None
        if method == "hybrid":
            self.amortiser = pc.Amortiser.from_model(model)
            self.amortiser_optimiser = optax.adam(settings.learning_rate)
            self.amortiser_state = self.amortiser_optimiser.init(eqx.filter(self.amortiser, eqx.is_array))

    def _solver(self, model, x, y) -> pc.AbstractInferenceSolver | None:
        s = self.settings
        if self.method in ("pc", "hybrid") and s.solver == "mixed":
            # The auto solver's choice in the model's dtype, polished in float64 where its
            # rounding floor stops it (the floor rises, relative to the feedforward
            # residual, as training shrinks the output errors).
            cheap = pc.make_solver("auto", model, x=x, y=y, rtol=max(s.rtol, 1e-4), max_steps=s.max_inference_steps)
            cheap = cheap.solver if isinstance(cheap, pc.MixedPrecision) else cheap
            return pc.MixedPrecision(solver=cheap, rtol=s.rtol)
        if self.method in ("pc", "hybrid"):
            return pc.make_solver(s.solver, model, x=x, y=y, rtol=s.rtol, max_steps=s.max_inference_steps)
        if self.method == "pc-fixed":
            return pc.GradientDescent(step_size=s.step_size, rtol=s.rtol, max_steps=s.fixed_steps)
        if self.method == "epc":
            return pc.ErrorCoordinates(pc.GradientDescent(step_size=s.step_size), rtol=s.rtol, max_steps=s.fixed_steps)
        return None

    def _apply(self, x, y, optimiser, state):
        """One step of this method from the current weights with `optimiser` and its
        `state`: (network, optimiser state, amortiser, amortiser state, record)."""
        m, s = self.method, self.settings
        amortiser, amortiser_state = self.amortiser, self.amortiser_state
        if m == "bp":
            model, state, bp = pc.bp_step(self.model, state, x, y, optimiser=optimiser)
            return model, state, amortiser, amortiser_state, StepRecord(float(bp.loss), 0.0, None, False)
        if m == "ipc":
            model, state, metrics, _ = pc.ipc_step(self.model, state, x, y, optimiser=optimiser,
                                                   step_size=s.step_size, iterations=s.ipc_iterations)
            record = StepRecord(float(metrics.loss), float(2 * s.ipc_iterations), None, bool(metrics.diverged))
            return model, state, amortiser, amortiser_state, record
        assert self.solver is not None
        if m == "hybrid":
            assert amortiser is not None and self.amortiser_optimiser is not None
            model, amortiser, state, amortiser_state, hybrid, _ = pc.hybrid_step(
                self.model, amortiser, state, amortiser_state, x, y, optimiser=optimiser,
                amortiser_optimiser=self.amortiser_optimiser, solver=self.solver)
            metrics = hybrid.pc
        else:
            model, state, metrics = pc.pc_step(self.model, state, x, y, optimiser=optimiser, solver=self.solver)[:3]
        stats = metrics.inference
        record = StepRecord(float(metrics.loss), float(stats.evaluations), bool(stats.converged),
                            bool(stats.diverged))
        return model, state, amortiser, amortiser_state, record

    def propose(self, x, y, optimiser, state) -> tuple[pc.PCModel, StepRecord]:
        """The network after one step of this method from the current weights with
        `optimiser` and its `state`, and the step's record; nothing is kept."""
        model, _, _, _, record = self._apply(x, y, optimiser, state)
        return model, record

    def step(self, x, y) -> StepRecord:
        """Train on one batch (x, y)."""
        self.model, self.state, self.amortiser, self.amortiser_state, record = self._apply(
            x, y, self.optimiser, self.state)
        return record


@dataclasses.dataclass(frozen=True)
class StepRecord:
    """One training step: the batch's `loss` before it, the inference `evaluations`,
    whether inference `certified` its tolerance (None where nothing is certified: BP,
    iPC) and whether it `diverged`."""

    loss: float
    evaluations: float
    certified: bool | None
    diverged: bool


@dataclasses.dataclass(frozen=True)
class SignalReach:
    """Per layer f_1 … f_L: `update_norms`, the norm of what the method changed in the
    layer's weights since a reference point (the start of the epoch, in the benchmark);
    `cosines`, the cosine of the method's update with BP's from the same weights on the
    same batch, both taken by plain SGD at the parameterisation's per-role rates (so
    that Adam's state, which both would share, does not inflate the agreement). NaN
    where a layer has no parameters or a zero update."""

    update_norms: list[float]
    cosines: list[float]


def _difference(new: pc.PCModel, old: pc.PCModel) -> pc.PCModel:
    """new − old on the array leaves, as a model-shaped tree (non-arrays kept)."""
    new_arrays, rest = eqx.partition(new, eqx.is_array)
    old_arrays = eqx.filter(old, eqx.is_array)
    return eqx.combine(jax.tree.map(jnp.subtract, new_arrays, old_arrays), rest)


def layer_norms(update: pc.PCModel) -> list[float]:
    """The Euclidean norm of each layer's part of a model-shaped `update` (NaN for a
    layer without parameters)."""
    norms = []
    for layer in update.layers:
        leaves = jax.tree.leaves(eqx.filter(layer, eqx.is_array))
        norms.append(float(np.sqrt(sum(float(jnp.vdot(v, v)) for v in leaves))) if leaves else float("nan"))
    return norms


def update_cosines(old: pc.PCModel, new: pc.PCModel, reference: pc.PCModel) -> list[float]:
    """Per layer, the cosine of the update old → `new` with the update old → `reference`."""
    alignment = pc.compare_gradients(_difference(new, old), _difference(reference, old))
    return [float(c) for c in np.asarray(alignment.layer_cosines)]


def signal_reach(learner: Learner, x, y, *, probe_rate: float, since: pc.PCModel) -> SignalReach:
    """How far each layer of the learner's network has moved since the network `since`,
    and how the method's update on (x, y) from its current weights points against BP's
    (see [`SignalReach`]); nothing is kept."""
    sgd = optimiser_for(learner.model, pc.SGD(probe_rate))
    fresh = sgd.init(eqx.filter(learner.model, eqx.is_array))
    probe, _ = learner.propose(x, y, sgd, fresh)
    bp, _, _ = pc.bp_step(learner.model, fresh, x, y, optimiser=sgd)
    return SignalReach(layer_norms(_difference(learner.model, since)), update_cosines(learner.model, probe, bp))


def accuracy(model, x, y, chunk: int = 1000) -> float:
    """Test accuracy of the feedforward pass, in chunks of `chunk` samples."""
    hits = 0
    for first in range(0, len(x), chunk):
        logits = np.asarray(model(x[first:first + chunk]))
        hits += int(np.sum(np.argmax(logits, axis=1) == np.argmax(np.asarray(y[first:first + chunk]), axis=1)))
    return hits / len(x)
