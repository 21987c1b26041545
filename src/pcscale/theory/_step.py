"""Closed-form inference (linear networks) as an inference method, and a PC training step
that uses it."""

from __future__ import annotations

from typing import ClassVar, cast

import equinox as eqx
import jax.numpy as jnp
import optax
from jaxtyping import Array, Bool, Float, PyTree

from .._custom_types import BatchX, BatchY
from .._equilibrium import AbstractInferenceMethod, Equilibrium
from .._linear import check_model, input_shape
from .._model import PCModel
from .._single_step import pc_step
from .._solution import RESULTS, InferenceStats
from .._step import PCStepMetrics
from ._closed_form import _rescaling_jit, closed_form_value_and_grad, linear_loss
from ._structure import warn_if_unresolved


class RescalingGaps(eqx.Module):
    """The closed form's diagnostics: ‖S‖₂ − 1/λ (`spectral_gap`) and tr(S − I/λ)/d_y
    (`trace_gap`) of the rescaling S (see [`Rescaling`][pcscale.theory.Rescaling])."""

    spectral_gap: Float[Array, ""]
    trace_gap: Float[Array, ""]


class ClosedForm(AbstractInferenceMethod):
    """Inference by the closed form of docs/background.md §4.2 for linear networks (φ =
    identity, no biases, MSE output): the PC weight gradient is ∇_θF* at the exact
    equilibrium, by autodiff through F* = (1/2B)·Σ_i r_iᵀS⁻¹r_i, with no inference loop.
    Pass it wherever a solver is taken for training (`pcscale.pc_step`, `pcscale.train`,
    `pcscale.experiments.train_lockstep`) or as `train(..., reference=ClosedForm())` to
    check an iterative solver against it.

    Its `stats` report an exact solve: zero residual and steps, `RESULTS.converged`; its
    diagnostics are the [`RescalingGaps`][pcscale.theory.RescalingGaps]. The loss and ∇𝓛
    of the BP side come from the end-to-end map when the batch exceeds d_y (B/d_y times
    cheaper at large width)."""

    exact: ClassVar[bool] = True

    def equilibrium(self, model, x, y, sharding=None, *, z0=None) -> Equilibrium:
        # Exact: a warm start `z0` has nothing to shorten and is ignored.
        check_model(model, "closed-form inference")  # structural: at trace time only
        energy, scaling, r, gradients = closed_form_value_and_grad(model, x, y)
        loss = 0.5 * jnp.mean(jnp.sum(r**2, axis=-1))
        zero, none = jnp.zeros((), energy.dtype), jnp.zeros((), jnp.int32)
        stats = InferenceStats.assemble(energy=energy, initial_energy=model.output_precision * loss, residual=zero,
                                        initial_residual=zero, steps=none, grad_evals=none, hvp_evals=none,
                                        result=RESULTS.converged)
        return Equilibrium(energy, loss, gradients, stats, None, RescalingGaps(scaling.spectral_gap, scaling.trace_gap))

    def loss_and_gradients(self, model, x, y):
        return eqx.filter_value_and_grad(linear_loss)(model, x, y)

    def prepare(self, model, x, y, *, stacklevel: int) -> None:
        check_model(model, "closed-form inference")
        # docs/background.md §7, pitfall 1: say so when float32 cannot resolve ‖S‖ − 1/λ.
        warn_if_unresolved(lambda: _rescaling_jit(model, input_shape(model, x)).spectral_gap, model,
                           "closed-form inference", stacklevel=stacklevel + 2)


class ClosedFormStepMetrics(eqx.Module):
    """Metrics of one closed-form PC step, at θ_t before the update.

    - `energy`: F*(θ_t); `loss`: the feedforward (BP) loss 𝓛(θ_t).
    - `grad_norm`: ‖∇_θF*‖.
    - `spectral_gap`, `trace_gap`: ‖S‖₂ − 1/λ and tr(S − I/λ)/d_y (see
      [`Rescaling`][pcscale.theory.Rescaling]).
    - `updated`: False when the gradient was not finite and the update was skipped.
    """

    energy: Float[Array, ""]
    loss: Float[Array, ""]
    grad_norm: Float[Array, ""]
    spectral_gap: Float[Array, ""]
    trace_gap: Float[Array, ""]
    updated: Bool[Array, ""]


def closed_form_step(
    model: PCModel, opt_state: PyTree, x: BatchX, y: BatchY, *, optimiser: optax.GradientTransformation
) -> tuple[PCModel, PyTree, ClosedFormStepMetrics]:
    """One jitted PC training step of a linear network with closed-form inference: the
    weight gradient is ∇_θF* by autodiff through docs/background.md §4.2 (including ∂S/∂θ),
    which equals the PC gradient at the exact activity equilibrium, then an optimiser
    update. It is `pcscale.pc_step(..., solver=ClosedForm())` with the rescaling gaps in
    its metrics. For a float32 model it warns when ‖S − I/λ‖ is below float32 resolution
    (reading one scalar back from the device); train in float64 to resolve small gaps.

    **Arguments:** as for [`pc_step`][pcscale.pc_step], without a solver; `model` must be
    linear (φ = identity, no biases, MSE output).

    **Returns:** `(model, opt_state, ClosedFormStepMetrics)`.
    """
    check_model(model, "closed_form_step")
    # Without `return_activities` the step returns three values, and ClosedForm's
    # diagnostics are always its RescalingGaps.
    new_model, opt_state, metrics = cast(
        tuple[PCModel, PyTree, PCStepMetrics],
        pc_step(model, opt_state, x, y, optimiser=optimiser, solver=ClosedForm()),
    )
    gaps = cast(RescalingGaps, metrics.diagnostics)
    warn_if_unresolved(lambda: gaps.spectral_gap, model, "closed_form_step")
    return new_model, opt_state, ClosedFormStepMetrics(metrics.energy, metrics.loss, metrics.grad_norm,
                                                      gaps.spectral_gap, gaps.trace_gap, metrics.updated)
