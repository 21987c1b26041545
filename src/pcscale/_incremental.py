"""Incremental PC (iPC): activities and weights updated together at every inference step,
as a schedule of the one step kernel's pieces (the activity gradient, the weight
gradient, the guarded optimiser update)."""

from __future__ import annotations

import numbers

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
import optax.tree_utils as otu
from jaxtyping import Array, Bool, Float, PyTree

from ._compare import compare_gradients
from ._custom_types import Activities, BatchX, BatchY
from ._equilibrium import AbstractInferenceMethod, inference_method
from ._gradients import energy_gradients
from ._infer import summed_energy_and_grad
from ._model import PCModel
from ._precise import precise_jit
from ._single_step import _check_optimiser, _warm_start
from ._solver import AbstractInferenceSolver
from ._step import guarded_update
from ._validation import as_float_array, check_opt_state, is_finite_real, validated


class IncrementalMetrics(eqx.Module):
    """Per-iteration metrics of an [`ipc_step`][pcscale.ipc_step] (T iterations), each at
    the activities and weights before that iteration's update.

    - `energy`: the batch-mean energy F(z_t; θ_t).
    - `residual`: ‖∇_z Σ_i F_i‖ at (z_t, θ_t): how far from an activity equilibrium the
      weights are being updated.
    - `grad_norm`: ‖∇_θ F(z_t; θ_t)‖, the applied weight gradient's norm.
    - `updated`: whether that iteration's weight update was applied (a non-finite one
      is refused; the activities still move).
    - `drift`: with a `reference`, the cosine of the applied weight gradient with the
      gradient at the reference's equilibrium for θ_t (1 when iPC updates as equilibrium
      PC would); None without one.
    - `loss`: the feedforward (BP) loss 𝓛(θ) before the first iteration.
    - `diverged`: whether the energy or its activity gradient became non-finite; from
      that iteration on nothing is updated (no update is taken from a non-finite point;
      the last update, taken from a finite one, may itself have overshot), so a
      too-large `step_size` or learning rate is reported, not propagated.
    """

    energy: Float[Array, " T"]
    residual: Float[Array, " T"]
    grad_norm: Float[Array, " T"]
    updated: Bool[Array, " T"]
    drift: Float[Array, " T"] | None
    loss: Float[Array, ""]
    diverged: Bool[Array, ""]


@precise_jit
def _ipc(model, opt_state, x, y, z0, optimiser, step_size, iterations: int, reference):
    check_opt_state(model, optimiser, opt_state)  # at trace time only
    x, y = validated(model, x, y, z0)
    start = None if z0 is None else _warm_start(model, z0, "z0")
    z = jax.vmap(model.activities_one)(x) if start is None else start
    loss = jnp.mean(jax.vmap(lambda xi, yi: model.output_energy(model.forward_one(xi), yi))(x, y))

    # Only arrays travel through the scan (a model may hold functions, e.g. activations).
    params, static = eqx.partition(model, eqx.is_array)

    def iteration(carry, _):
        params, opt_state, z = carry
        model = eqx.combine(params, static)
        energy_sum, z_grad = summed_energy_and_grad(model, x, y)(z)
        energy, grads = energy_gradients(model, z, x, y)
        drift = None
        if reference is not None:
            drift = compare_gradients(grads, reference.equilibrium(model, x, y, None).gradients).cosine
        residual = otu.tree_norm(z_grad)
        finite = jnp.isfinite(energy_sum) & jnp.isfinite(residual)
        new_model, opt_state, grad_norm, accept = guarded_update(model, opt_state, grads, optimiser, finite)
        new_z = otu.tree_where(finite, otu.tree_add_scale(z, -step_size, z_grad), z)
        return (eqx.filter(new_model, eqx.is_array), opt_state, new_z), (energy, residual, grad_norm, accept, drift)

    (params, opt_state, z), (energy, residual, grad_norm, updated, drift) = jax.lax.scan(
        iteration, (params, opt_state, tuple(z)), None, length=iterations)
    model = eqx.combine(params, static)
    diverged = ~jnp.all(jnp.isfinite(energy) & jnp.isfinite(residual))
    return model, opt_state, IncrementalMetrics(energy, residual, grad_norm, updated, drift, loss, diverged), z


def ipc_step(
    model: PCModel,
    opt_state: PyTree,
    x: BatchX,
    y: BatchY,
    *,
    optimiser: optax.GradientTransformation,
    step_size: float,
    iterations: int,
    z0: Activities | None = None,
    reference: AbstractInferenceSolver | AbstractInferenceMethod | None = None,
) -> tuple[PCModel, PyTree, IncrementalMetrics, Activities]:
    """T iterations of incremental PC on one batch, in one jitted scan: at every iteration
    t, from the same point (z_t, θ_t),

    z_{t+1} = z_t − β·∇_z Σ_i F_i(z_t; θ_t),   θ_{t+1} = optimiser(θ_t, ∇_θ F(z_t; θ_t)),

    with F the batch-mean energy for the weights (as [`pc_gradients`][pcscale.pc_gradients])
    and β per sample for the activities (as [`GradientDescent`][pcscale.GradientDescent]).
    There is no separate inference phase and no equilibrium to certify: the metrics say
    how far from one each update was taken (`residual`) and, with a `reference` solver,
    how its direction compares with equilibrium PC's (`drift`). With a zero learning rate
    it is gradient-descent inference step for step.

    **Arguments:**

    - `model`, `opt_state`, `x`, `y`, `optimiser`: as for [`pc_step`][pcscale.pc_step].
    - `step_size`: β > 0, the activities' step per sample.
    - `iterations`: T ≥ 1.
    - `z0`: the starting activities (e.g. the previous call's, on a fixed batch); default
      the feedforward state.
    - `reference`: None, or a solver (or inference method) whose equilibrium at θ_t gives
      the `drift` of every iteration (a full solve per iteration: a diagnostic, not for
      production runs).

    **Returns:** `(model, opt_state, IncrementalMetrics, activities)`, the activities
    z_T to carry into the next call.
    """
    _check_optimiser(optimiser)
    if isinstance(step_size, bool) or not (is_finite_real(step_size) and step_size > 0):
        raise ValueError(f"`step_size` must be a positive finite float, got {step_size!r}; e.g. step_size=0.1.")
    if isinstance(iterations, bool) or not isinstance(iterations, numbers.Integral) or iterations < 1:
        raise ValueError(f"`iterations` must be a positive int, got {iterations!r}; e.g. iterations=20.")
    if z0 is not None:
        z0 = tuple(as_float_array(z_l, f"z0[{i}]") for i, z_l in enumerate(z0))
    method = None if reference is None else inference_method(reference)
    x, y = as_float_array(x, "x"), as_float_array(y, "y")
    return _ipc(model, opt_state, x, y, z0, optimiser, float(step_size), int(iterations), method)
