"""Amortised (hybrid) PC: a bottom-up amortiser proposes the activities, certified
inference refines them, and the amortiser learns to predict the equilibrium."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array, Float, PyTree

from ._custom_types import Activities, BatchX, BatchY
from ._equilibrium import AbstractInferenceMethod, inference_method
from ._layer import PCLayer
from ._model import PCModel
from ._precise import precise_jit
from ._single_step import _check_optimiser
from ._solution import InferenceStats
from ._solver import AbstractInferenceSolver
from ._step import PCStepMetrics, guarded_update, pc_update
from ._validation import as_float_array, check_opt_state, validated


class Amortiser(eqx.Module):
    """A bottom-up network that maps an input to a guess ẑ_1 … ẑ_H of every hidden
    activity: ẑ_l = g_l(ẑ_{l−1}), ẑ_0 = x, with its own layer maps g_l (any
    [`PCLayer`][pcscale.PCLayer]s whose shapes chain like the model's hidden layers).

    [`Amortiser.from_model`][pcscale.Amortiser.from_model] copies the model's own hidden
    layers, so it starts by proposing the feedforward state (no worse than a cold start)
    and then learns, through [`hybrid_step`][pcscale.hybrid_step], to predict the
    certified equilibrium instead. It sees only x: where the equilibrium depends on the
    target beyond what x predicts, it learns the part x predicts.
    """

    layers: tuple[PCLayer, ...]

    def __check_init__(self):
        if not isinstance(self.layers, tuple) or not all(isinstance(g, PCLayer) for g in self.layers):
            raise TypeError("`layers` must be a tuple of PCLayer (one per hidden layer of the model).")

    @classmethod
    def from_model(cls, model: PCModel) -> Amortiser:
        """An amortiser that starts as a copy of `model`'s hidden layers (it then proposes
        the feedforward state)."""
        if not isinstance(model, PCModel):
            raise TypeError(f"`model` must be a PCModel, got {type(model).__name__}.")
        return cls(tuple(model.layers[:-1]))

    def guess_one(self, x: Array) -> Activities:
        """ẑ of one sample (no batch axis)."""
        guesses, z = [], x
        for layer in self.layers:
            z = layer(z)
            guesses.append(z)
        return tuple(guesses)

    def __call__(self, x: Array) -> Activities:
        """ẑ for a batch (batch on axis 0)."""
        return jax.vmap(self.guess_one)(x)

    def loss(self, x: Array, z: Activities) -> Float[Array, ""]:
        """The batch mean of Σ_l ½‖z_l − ẑ_l‖², the amortiser's distance to the
        activities `z` (the certified equilibrium, held fixed)."""
        target = jax.lax.stop_gradient(tuple(z))
        guess = self(x)
        return jnp.mean(sum(0.5 * jnp.sum(jnp.reshape((t - g) ** 2, (t.shape[0], -1)), axis=1)
                            for t, g in zip(target, guess, strict=True)))


class HybridMetrics(eqx.Module):
    """Metrics of one [`hybrid_step`][pcscale.hybrid_step], at the weights before it.

    - `pc`: the PC step's [`PCStepMetrics`][pcscale.PCStepMetrics]; `pc.inference` is the
      solve from the amortiser's guess (certified like any other: its tolerance is
      relative to the feedforward residual).
    - `amortiser_loss`: the amortiser's distance to the equilibrium before its update.
    - `amortiser_updated`: whether its update was applied (a non-finite one is refused).
    - `cold`: with `compare=True`, the [`InferenceStats`][pcscale.InferenceStats] of the
      same solve from the feedforward state, for the evaluations saved
      (`cold.evaluations − pc.inference.evaluations`); None otherwise.
    """

    pc: PCStepMetrics
    amortiser_loss: Float[Array, ""]
    amortiser_updated: jax.Array
    cold: InferenceStats | None = None


@precise_jit
def _hybrid(model, amortiser, opt_state, amortiser_state, x, y, optimiser, amortiser_optimiser, method,
            allow_diverged, compare):
    check_opt_state(model, optimiser, opt_state)
    check_opt_state(amortiser, amortiser_optimiser, amortiser_state)
    x, y = validated(model, x, y)
    guess = jax.lax.stop_gradient(amortiser(x))
    model._check(x, z=guess)  # the guesses must have the model's activity shapes (at trace time)
    new_model, opt_state, found, metrics = pc_update(model, opt_state, x, y, optimiser, method, allow_diverged,
                                                     None, guess)
    loss, grads = eqx.filter_value_and_grad(lambda a: a.loss(x, found.activities))(amortiser)
    new_amortiser, amortiser_state, _, accept = guarded_update(amortiser, amortiser_state, grads,
                                                               amortiser_optimiser, jnp.array(True))
    cold = method.equilibrium(model, x, y, None).stats if compare else None
    return new_model, new_amortiser, opt_state, amortiser_state, HybridMetrics(metrics, loss, accept, cold), \
        found.activities


def hybrid_step(
    model: PCModel,
    amortiser: Amortiser,
    opt_state: PyTree,
    amortiser_state: PyTree,
    x: BatchX,
    y: BatchY,
    *,
    optimiser: optax.GradientTransformation,
    amortiser_optimiser: optax.GradientTransformation,
    solver: AbstractInferenceSolver | AbstractInferenceMethod,
    allow_diverged: bool = False,
    compare: bool = False,
) -> tuple[PCModel, Amortiser, PyTree, PyTree, HybridMetrics, Activities]:
    """One step of hybrid PC: the amortiser's guess ẑ = a(x), certified inference from ẑ
    to the equilibrium z*, the PC weight update at z* (as [`pc_step`][pcscale.pc_step]),
    and an amortiser update towards z* (its [`loss`][pcscale.Amortiser.loss]). The
    equilibrium is the generator's, whatever the guess: only the cost of reaching it
    changes.

    **Arguments:**

    - `model`, `opt_state`, `x`, `y`, `optimiser`, `solver`, `allow_diverged`: as for
      [`pc_step`][pcscale.pc_step].
    - `amortiser`: an [`Amortiser`][pcscale.Amortiser]; `amortiser_state`:
      `amortiser_optimiser.init(eqx.filter(amortiser, eqx.is_array))`.
    - `amortiser_optimiser`: any optax transformation (e.g. `optax.adam(1e-3)`).
    - `compare`: also solve from the feedforward state, to report the evaluations saved
      (`metrics.cold`); twice the inference cost, so for measurement only.

    **Returns:** `(model, amortiser, opt_state, amortiser_state, HybridMetrics,
    activities)`.
    """
    _check_optimiser(optimiser)
    _check_optimiser(amortiser_optimiser)
    if not isinstance(amortiser, Amortiser):
        raise TypeError(
            f"`amortiser` must be a pcscale.Amortiser, got {type(amortiser).__name__}; e.g. "
            "pcscale.Amortiser.from_model(model)."
        )
    method = inference_method(solver)
    x, y = as_float_array(x, "x"), as_float_array(y, "y")
    return _hybrid(model, amortiser, opt_state, amortiser_state, x, y, optimiser, amortiser_optimiser, method,
                   bool(allow_diverged), bool(compare))
