"""Mixed precision: iterate in the model's dtype, certify in float64."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp

from .._precision import cast_floating, floor_from_activities
from ._base import AbstractInferenceSolver
from ._preconditioner import AbstractKrylovSolver
from .newton_krylov import NewtonKrylov


class MixedPrecision(AbstractInferenceSolver, max_steps=50):
    r"""Float32 iterations, float64 residual checks and a float64 polish, so that a
    float32 model can be certified to tolerances below float32's rounding floor.

    A float32 solve cannot push the residual ‖∇_z Σ_i F_i‖ much below eps·‖z‖ (the
    *rounding floor*, [`residual_floor`][pcscale.residual_floor]; about 1e-4 relative
    at N = 256, H = 31). This solver runs in two phases:

    1. the cheap phase: `solver` in the model's dtype, from the feedforward state (or
       `z0`), to its own tolerance or to the dtype's floor (whichever is larger), where
       it stops;
    2. the polish: the model, batch and activities are cast to float64 and `polish`
       (default Newton–Krylov, which converges quadratically from a good start) runs
       to the requested tolerance, with every residual evaluated in float64.

    The returned activities are float64 (rounding them back to float32 would put the
    residual back at the float32 floor); the weight gradient computed from them is
    then evaluated in float64 too and returned in the model's dtype. Steps and
    evaluations of both phases are added up; the result is the polish's, unless the
    first phase diverged. A float64 model runs `solver` alone, to the requested
    tolerance.

    Needs JAX's 64-bit mode (`jax.config.update("jax_enable_x64", True)`, before arrays
    are built; the model itself stays float32). See docs/inference.md for measured
    costs.

    **Arguments:**

    - `solver`: the first phase; default `NewtonKrylov(rtol=1e-4)`.
    - `polish`: the float64 phase; default `NewtonKrylov` with `max_steps` Newton steps
      and the first phase's preconditioner. Its own tolerances are replaced by this
      solver's.
    - `rtol`, `atol` (keyword-only): the certified tolerance, relative to the
      feedforward residual (also from a warm start `z0`). Default rtol = 1e-6.
    - `max_steps` (keyword-only): the polish's step budget. Default 50.
    - `divergence_factor` (keyword-only): as for
      [`GradientDescent`][pcscale.GradientDescent].
    """

    solver: AbstractInferenceSolver = eqx.field(default_factory=lambda: NewtonKrylov(rtol=1e-4))
    polish: AbstractInferenceSolver | None = None

    def __check_init__(self):
        for name in ("solver", "polish"):
            value = getattr(self, name)
            if value is None and name == "polish":
                continue
            if not isinstance(value, AbstractInferenceSolver) or isinstance(value, MixedPrecision):
                raise TypeError(
                    f"`{name}` must be a pcscale inference solver other than MixedPrecision, got "
                    f"{type(value).__name__}; e.g. MixedPrecision(solver=pcscale.NewtonKrylov(rtol=1e-4))."
                )

    def init(self, model, fn, z, energy, grad, tolerance):  # pragma: no cover - dispatched by infer
        raise NotImplementedError("MixedPrecision runs two inference loops; infer dispatches it.")

    def step(self, model, fn, z, energy, grad, state):  # pragma: no cover - dispatched by infer
        raise NotImplementedError("MixedPrecision runs two inference loops; infer dispatches it.")

    def polisher(self) -> AbstractInferenceSolver:
        """The float64 phase, with this solver's budget and flags."""
        if self.polish is not None:
            polish = self.polish
        else:
            first = self.solver
            preconditioner = first.preconditioner if isinstance(first, AbstractKrylovSolver) else None
            polish = NewtonKrylov(preconditioner=preconditioner, progress=self.progress)
            # Set after construction: inside jit the budget is a traced number.
            polish = eqx.tree_at(lambda s: s.max_steps, polish, self.max_steps)
        return polish


def _with_tolerance(solver, rtol, atol):
    return eqx.tree_at(lambda s: (s.rtol, s.atol), solver, (rtol, atol))


def solve_mixed(model, x, y, solver: MixedPrecision, z0, sharding, solve):
    """Run both phases of `solver` with the inference loop `solve` (from _infer)."""
    from .._solution import RESULTS, InferenceSolution, InferenceStats

    if not jax.config.read("jax_enable_x64"):
        raise ValueError(
            "pcscale.MixedPrecision certifies in float64, which JAX's 64-bit mode must allow: "
            "call jax.config.update('jax_enable_x64', True) at start-up, before building arrays "
            "(models built with dtype=float32 stay float32), or use a plain solver with a "
            "tolerance above the float32 floor (pcscale.residual_floor)."
        )
    dtype = jnp.dtype(model.dtype)
    if dtype == jnp.float64:
        return solve(model, x, y, _with_tolerance(solver.solver, solver.rtol, solver.atol), z0, sharding)
    first = solve(model, x, y, _floored(solver, model, x, z0), z0, sharding)
    stats = first.stats
    target = solver.atol + solver.rtol * stats.initial_residual.astype(jnp.float64)
    wide = jnp.float64
    polish = _with_tolerance(solver.polisher(), jnp.zeros((), wide), target)
    polish = eqx.tree_at(lambda s: s.divergence_factor, polish, solver.divergence_factor)
    # The polish's tolerance is absolute (`target`, from the first phase's feedforward
    # residual), so it needs no feedforward reference of its own.
    second = solve(cast_floating(model, wide), cast_floating(x, wide), cast_floating(y, wide), polish,
                   cast_floating(first.activities, wide), sharding, relative_to_start=True)
    final = second.stats
    # Both phases' costs add up; the result is the polish's unless the first phase diverged.
    merged = InferenceStats.assemble(
        energy=final.energy, initial_energy=stats.initial_energy.astype(wide), residual=final.residual,
        initial_residual=stats.initial_residual.astype(wide), steps=stats.steps + final.steps,
        grad_evals=stats.grad_evals + final.grad_evals, hvp_evals=stats.hvp_evals + final.hvp_evals,
        vjp_evals=stats.vjp_evals + final.vjp_evals,
        result=RESULTS.where(stats.result == RESULTS.diverged, RESULTS.diverged, final.result),
    )
    return InferenceSolution(activities=second.activities, stats=merged)


def _floored(solver: MixedPrecision, model, x, z0):
    """The first phase with its tolerance raised to the dtype's rounding floor, so that
    it hands over to the polish instead of stalling there."""
    first = solver.solver
    z = jax.vmap(model.activities_one)(x) if z0 is None else z0
    # Twice the floor: the first phase hands over as soon as it is near it, instead of
    # spending its stall window there.
    floor = 2 * floor_from_activities(z, model.dtype)
    atol = jnp.maximum(jnp.asarray(first.atol, floor.dtype), floor)
    return eqx.tree_at(lambda s: s.atol, first, atol)
