"""A PC training step with closed-form inference (linear networks)."""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
import optax
from jaxtyping import Array, Bool, Float, PyTree

from .._custom_types import BatchX, BatchY
from .._model import PCModel
from .._train import _check_optimiser, _guarded_update
from .._validation import as_float_array, validated
from ._closed_form import closed_form_value_and_grad
from ._structure import check_model, warn_if_unresolved


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


@eqx.filter_jit
def _closed_form_step(model, opt_state, x, y, optimiser):
    x, y = validated(model, x, y)
    energy, scaling, r, grads = closed_form_value_and_grad(model, x, y)
    loss = 0.5 * jnp.mean(jnp.sum(r**2, axis=-1))
    model, opt_state, grad_norm, accept = _guarded_update(model, opt_state, grads, optimiser, True)
    metrics = ClosedFormStepMetrics(energy, loss, grad_norm, scaling.spectral_gap, scaling.trace_gap, accept)
    return model, opt_state, metrics


def closed_form_step(
    model: PCModel, opt_state: PyTree, x: BatchX, y: BatchY, *, optimiser: optax.GradientTransformation
) -> tuple[PCModel, PyTree, ClosedFormStepMetrics]:
    """One jitted PC training step of a linear network with closed-form inference: the
    weight gradient is ∇_θF* by autodiff through docs/background.md §4.2 (including ∂S/∂θ),
    which equals the PC gradient at the exact activity equilibrium, then an optimiser
    update. No inference loop runs, so there is no residual to report. For a float32
    model it warns when ‖S − I/λ‖ is below float32 resolution (reading one scalar back
    from the device); train in float64 to resolve small gaps.

    **Arguments:** as for [`pc_step`][pcscale.pc_step], without a solver; `model` must be
    linear (φ = identity, no biases, MSE output).

    **Returns:** `(model, opt_state, ClosedFormStepMetrics)`.
    """
    check_model(model, "closed_form_step")
    _check_optimiser(optimiser)
    x, y = as_float_array(x, "x"), as_float_array(y, "y")
    new_model, opt_state, metrics = _closed_form_step(model, opt_state, x, y, optimiser)
    warn_if_unresolved(lambda: metrics.spectral_gap, model, "closed_form_step")
    return new_model, opt_state, metrics
