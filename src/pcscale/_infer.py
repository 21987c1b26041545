"""infer(model, x, y, *, solver) -> InferenceSolution: minimise the energy over the
free activities, entirely inside one jitted `lax.while_loop`."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import optax.tree_utils as otu
from jax.sharding import NamedSharding
from jaxtyping import Array

from ._custom_types import Activities, BatchX, BatchY, EnergyModel
from ._error_coordinates import (
    ErrorEnergy,
    error_path,
    error_residual as _error_residual,
    output_curvature,
    straight_path,
)
from ._model import PCModel
from ._monitor import progress_stride, read_clock, report_progress, solve_token, start_clock
from ._precise import precise_jit
from ._precision import warn_if_uncertifiable
from ._sharding import follow_batch, pin
from ._solution import RESULTS, InferenceSolution, InferenceStats
from ._solver import AbstractInferenceSolver, ErrorCoordinates, GradientDescent, MixedPrecision
from ._solver._base import with_traced_numbers
from ._solver.mixed_precision import solve_mixed
from ._validation import as_float_array, validated

_RUNNING, _CONVERGED, _DIVERGED, _STALLED, _OUT_OF_TIME = 0, 1, 2, 3, 4


class SummedEnergy:
    """Σ_i F_i as a function of the activities. Calling it returns the value and its
    gradient (the stack of per-sample gradients ∇_{z_i} F_i); `value` is the energy
    alone (for minimisers that differentiate it themselves), and `output_curvature(ŷ)`
    the Hessian of the output loss ℓ(y, ŷ) in the batched predictions ŷ (B, d_y, d_y,
    outputs flattened; for Gauss–Newton preconditioners). Solvers receive the model
    separately, as an explicit argument of `init` and `step`."""

    def __init__(self, model: EnergyModel, x: Array, y: Array):
        def total(z: Activities) -> Array:
            return jnp.sum(jax.vmap(model.energy_one)(z, x, y))

        self.value = total
        self._value_and_grad = jax.value_and_grad(total)
        def curvature(prediction: Array) -> Array:
            if not isinstance(model, PCModel):
                raise TypeError("the output curvature (Gauss–Newton) is defined for a PCModel only.")
            return output_curvature(model, prediction, y)

        self.output_curvature = curvature

    def __call__(self, z: Activities) -> tuple[Array, Activities]:
        return self._value_and_grad(z)

    def trial_path(self, model: EnergyModel, z: Activities, direction: Activities):
        """The curve a line search tries along `direction`: `error_path` for a PCModel,
        the straight line for any other energy."""
        return error_path(model, z, direction) if isinstance(model, PCModel) else straight_path(z, direction)

    # The free variables are the states themselves (ErrorEnergy's are the errors).
    residual_passes = 0

    def free(self, z: Activities) -> Activities:
        return z

    def states(self, z: Activities) -> Activities:
        return z

    def state_gradient(self, z: Activities, grad: Activities) -> Activities:
        return grad


# A descent solver that ends unconverged above (1 + BACKWARDS_MARGIN) × its initial
# energy, with a larger residual than at its start, has diverged.
BACKWARDS_MARGIN = 1e-3

def summed_energy_and_grad(model: EnergyModel, x: Array, y: Array) -> SummedEnergy:
    """value_and_grad of Σ_i F_i in the activities; its gradient is the stack of
    per-sample gradients ∇_{z_i} F_i."""
    return SummedEnergy(model, x, y)


def solve_activities(
    model: EnergyModel,
    x: Array,
    y: Array,
    solver: AbstractInferenceSolver,
    z0: Activities | None = None,
    sharding: NamedSharding | None = None,
    relative_to_start: bool = False,
) -> InferenceSolution:
    """The inference loop, for already-validated inputs (callable inside jit). With a
    batch `sharding` (static; from `batch_sharding(x)`), the activities and their
    gradients are pinned to it at every step, so that they stay split over the devices
    and only the scalar reductions (energy, residual norm, inner products) cross them.
    With `relative_to_start` the tolerance is relative to the residual at `z0` (for
    models without a feedforward state)."""
    return _solve(model, x, y, solver, z0, sharding, relative_to_start)


class _Progress(eqx.Module):
    """Stall bookkeeping: the best residual and energy at the last step that counted as
    progress, and that step."""

    residual: Array
    energy: Array
    step: Array


def _progressed(progress: _Progress, step, residual, energy, margin) -> _Progress:
    # Progress is a residual (1 − margin) below its best, or an energy below its best by
    # more than its rounding error: at the dtype's floor both only jitter.
    rounding = 64 * jnp.finfo(energy.dtype).eps * jnp.abs(progress.energy)
    better = (residual < (1 - margin) * progress.residual) | (energy < progress.energy - rounding)
    return _Progress(
        jnp.where(better, jnp.minimum(residual, progress.residual), progress.residual),
        jnp.where(better, jnp.minimum(energy, progress.energy), progress.energy),
        jnp.where(better, step, progress.step),
    )


def _solve(model, x, y, solver, z0, sharding, relative_to_start=False) -> InferenceSolution:
    if isinstance(solver, MixedPrecision):
        return solve_mixed(model, x, y, solver, z0, sharding, _solve)
    batch = x.shape[0]
    # The loop's stopping rules are `solver`'s; its steps are `stepper`'s, taken in the
    # states or, for ErrorCoordinates, in the errors (`fn` is then the energy of the
    # errors, and every residual is mapped back to the states: two passes each).
    in_errors = isinstance(solver, ErrorCoordinates)
    stepper = solver.solver if in_errors else solver
    fn = ErrorEnergy(model, x, y) if in_errors else summed_energy_and_grad(model, x, y)
    z = pin(jax.vmap(model.activities_one)(x) if z0 is None else tuple(z0), sharding)
    z = pin(fn.free(z), sharding)
    residual_passes = fn.residual_passes

    def residual_of(z, grad):
        return otu.tree_norm(fn.state_gradient(z, grad))

    energy0, grad0 = fn(z)
    residual0 = residual_of(z, grad0)
    # From a warm start `z0` the tolerance (and the reported initial energy and residual)
    # stay relative to the feedforward state, at one more gradient evaluation, so that a
    # warm and a cold solve certify the same thing; divergence and stalls are judged
    # against the start. `relative_to_start` skips this where the reference is unused
    # (MixedPrecision's polish, whose tolerance is absolute).
    if z0 is None or relative_to_start:
        energy_ff, residual_ff, ff_evals = energy0, residual0, 0
    else:
        states_ff = pin(jax.vmap(model.activities_one)(x), sharding)
        energy_ff, grad_ff = summed_energy_and_grad(model, x, y)(states_ff)
        residual_ff, ff_evals = otu.tree_norm(grad_ff), 1
    tolerance = solver.atol + solver.rtol * residual_ff
    threshold = solver.divergence_factor * jnp.maximum(energy0, jnp.finfo(energy0.dtype).tiny)
    status0 = jnp.where(residual0 <= tolerance, _CONVERGED, _RUNNING)
    zero = jnp.array(0, dtype=jnp.int32)
    window = solver.window
    margin = type(stepper).stall_margin
    clock0 = start_clock() if solver.max_time is not None else None
    token = solve_token(energy0) if solver.progress else None
    stride = progress_stride(model, z, type(stepper).step_cost) if solver.progress else None
    progress0 = _Progress(residual0, energy0, zero)
    # Solver states may hold non-array parts (e.g. Optimistix's linear operators): only
    # the arrays travel through the loop.
    state0, static = eqx.partition(stepper.init(model, fn, z, energy0, grad0, tolerance), eqx.is_array)
    carry = (
        zero, z, energy0, grad0, residual0, state0, (zero + 1, zero, zero + residual_passes), status0, progress0, clock0
    )

    def verify(z, energy, grad, residual):
        """Re-evaluate a recurrence's claim of convergence from the energy itself."""
        if stepper.exact_values:
            return energy, grad, residual, zero

        def evaluate():
            energy, grad = fn(z)
            return energy, grad, residual_of(z, grad), zero + 1

        return jax.lax.cond(residual <= tolerance, evaluate, lambda: (energy, grad, residual, zero))

    def cond(carry):
        step, *_, status, _, _ = carry
        return (status == _RUNNING) & (step < solver.max_steps)

    def body(carry):
        step, z, energy, grad, _, state, (grads, hvps, vjps), _, progress, clock = carry
        state = eqx.combine(state, static)
        z, energy, grad, state, used = stepper.step(model, fn, z, energy, grad, state)
        z, grad = pin(z, sharding), pin(grad, sharding)
        stuck = stepper.stalled(state)
        state, _ = eqx.partition(state, eqx.is_array)
        energy, grad, residual, checks = verify(z, energy, grad, residual_of(z, grad))
        step = step + 1
        progress = _progressed(progress, step, residual, energy, margin)
        stuck = stuck | ((window > 0) & (step - progress.step >= window))
        status = jnp.where(residual <= tolerance, _CONVERGED, jnp.where(stuck, _STALLED, _RUNNING))
        if solver.progress:
            relative = residual / jnp.where(residual_ff > 0, residual_ff, 1.0)
            assert stride is not None  # set whenever `solver.progress` is
            report_progress(token, step, relative, energy / batch, stride=stride)
        if solver.max_time is not None:
            clock = read_clock(clock, step, max_time=solver.max_time)
            status = jnp.where((status == _RUNNING) & (clock.elapsed > solver.max_time), _OUT_OF_TIME, status)
        diverged = ~jnp.isfinite(energy) | ~jnp.isfinite(residual) | (energy > threshold)
        status = jnp.where(diverged, _DIVERGED, status)
        counts = (grads + used.gradients + checks, hvps + used.hvps, vjps + used.vjps + residual_passes * (1 + checks))
        return step, z, energy, grad, residual, state, counts, status, progress, clock

    carry = jax.lax.while_loop(cond, body, carry)
    steps, z, energy, _, residual, _, (grads, hvps, vjps), status, _, _ = carry
    if not stepper.exact_values:
        # A run that did not converge reports the true energy and residual at its final
        # activities, not the recurrence's.
        def final():
            energy, grad = fn(z)
            residual = residual_of(z, grad)
            diverged = ~jnp.isfinite(energy) | ~jnp.isfinite(residual) | (energy > threshold)
            met = jnp.where(residual <= tolerance, _CONVERGED, status)
            return energy, residual, jnp.where(diverged, _DIVERGED, met), zero + 1

        keep = lambda: (energy, residual, status, zero)  # noqa: E731
        energy, residual, status, checks = jax.lax.cond(status == _CONVERGED, keep, final)
        grads, vjps = grads + checks, vjps + residual_passes * checks
    # A descent solver (`descends`) that ends unconverged (budget, stall or time) both
    # measurably above its initial energy and with a larger residual than at its start
    # has gone backwards: that is divergence (typically a bounded oscillation, e.g.
    # momentum with too large a step on a saturating network), not slowness. Tested at
    # the end only, as momentum methods may rise on the way down.
    if stepper.descends:
        margin = BACKWARDS_MARGIN * jnp.abs(energy0) + 64 * jnp.finfo(energy0.dtype).eps * jnp.abs(energy0)
        backwards = (status != _CONVERGED) & (energy > energy0 + margin) & (residual > residual0)
        status = jnp.where(backwards, _DIVERGED, status)
    stats = InferenceStats.assemble(
        energy=energy / batch, initial_energy=energy_ff / batch, residual=residual, initial_residual=residual_ff,
        steps=steps, grad_evals=grads + ff_evals, hvp_evals=hvps, vjp_evals=vjps, result=result_of(status),
    )
    return InferenceSolution(activities=fn.states(z), stats=stats)


def result_of(status) -> RESULTS:
    """The RESULTS member of the loop's integer status."""
    result = RESULTS.max_steps
    for code, member in (
        (_OUT_OF_TIME, RESULTS.max_time),
        (_STALLED, RESULTS.stalled),
        (_DIVERGED, RESULTS.diverged),
        (_CONVERGED, RESULTS.converged),
    ):
        result = RESULTS.where(status == code, member, result)
    return result


@precise_jit
def _infer_jit(model, x, y, solver, z0, sharding):
    x, y = validated(model, x, y, z0)
    return solve_activities(model, x, y, solver, z0, sharding)


def infer(
    model: PCModel,
    x: BatchX,
    y: BatchY,
    *,
    solver: AbstractInferenceSolver | None = None,
    z0: Activities | None = None,
) -> InferenceSolution:
    """Minimise the energy F over the free activities z_1 … z_H, weights fixed.

    The whole loop is one jitted `lax.while_loop`. It starts from the feedforward
    activities (or `z0`), and stops when the residual ‖∇_z Σ_i F_i‖ meets the solver's
    tolerance, when its step budget runs out, when the solver can make no further
    progress (`stalled`), or when the energy diverges; the
    [`InferenceSolution`][pcscale.InferenceSolution] says which, in `result`. The
    reported energy is at the final activities.

    With `x` split over several devices ([`shard_batch`][pcscale.shard_batch]) the solve
    runs on all of them, each holding its share of the activities; the residual and the
    stopping test are global (docs/scaling.md).

    **Arguments:**

    - `model`: a [`PCModel`][pcscale.PCModel].
    - `x`: inputs, batch on axis 0.
    - `y`: targets, batch on axis 0, each of the model's output shape (one-hot for
      cross-entropy).
    - `solver`: an inference solver; default `GradientDescent()` (β = 0.1 per sample,
      rtol = 1e-5, at most 10 000 steps).
    - `z0`: starting activities (a warm start); default the feedforward state. The
      tolerance stays relative to the residual at the feedforward state (evaluated once
      more, counted in `grad_evals`), and so do `initial_energy`, `initial_residual` and
      `relative_residual`: a warm and a cold solve certify the same thing. Divergence
      is judged against the energy and residual at `z0`.

    **Returns:** an [`InferenceSolution`][pcscale.InferenceSolution].
    """
    if solver is None:
        solver = GradientDescent()
    if not isinstance(solver, AbstractInferenceSolver):
        raise TypeError(
            f"`solver` must be a pcscale inference solver, got {type(solver).__name__}; e.g. "
            "pcscale.GradientDescent(step_size=0.1)."
        )
    if not isinstance(model, PCModel):
        raise TypeError(f"`model` must be a PCModel, got {type(model).__name__}.")
    x, y = as_float_array(x, "x"), as_float_array(y, "y")
    y, z0, sharding = follow_batch(x, y, z0)
    warn_if_uncertifiable(model, x, y, solver)  # the tolerance is relative to the feedforward state
    return _infer_jit(model, x, y, with_traced_numbers(solver), z0, sharding)


@precise_jit
def _error_residual_jit(model, z, x, y):
    return _error_residual(model, z, x, y)


def error_residual(model: PCModel, z: Activities, x: BatchX, y: BatchY) -> Array:
    """The residual in error coordinates, ‖∇_ε Σ_i F_i‖, at the activities `z`.

    With z_l = f_l(z_{l−1}) + ε_l the energy is a function E(ε) of the errors too
    ([`ErrorCoordinates`][pcscale.ErrorCoordinates]), and ∇_ε E = A⁻ᵀ·∇_z F with
    A = ∂ε/∂z. Both vanish at the same points; every solver certifies the state-space
    residual ‖∇_z Σ_i F_i‖ (`InferenceStats.residual`), and this gives the other one,
    e.g. to compare with error-based PC's own reports.

    **Arguments:** a [`PCModel`][pcscale.PCModel], activities `z` (a tuple, batch on
    axis 0 of each), inputs `x` and targets `y`.
    """
    if not isinstance(model, PCModel):
        raise TypeError(f"`model` must be a PCModel, got {type(model).__name__}.")
    x, y = validated(model, as_float_array(x, "x"), as_float_array(y, "y"), z)
    return _error_residual_jit(model, tuple(z), x, y)
