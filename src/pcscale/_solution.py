"""InferenceSolution and the RESULTS enumeration."""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Bool, Float, Int

from ._custom_types import Activities


class RESULTS(eqx.Enumeration):
    """How an inference run ended. Compare with `solution.result == RESULTS.converged`."""

    converged = "The residual tolerance was met."
    max_steps = "The step budget ran out before the tolerance was met."
    stalled = (
        "The solver could make no further progress: neither the residual nor the energy "
        "improved over its stall window, or its line search found no acceptable step. "
        "Usually the residual has reached the rounding floor of the dtype "
        "(pcscale.residual_floor); use a float64 model, pcscale.MixedPrecision, or a "
        "looser tolerance (docs/inference.md)."
    )
    diverged = (
        "The energy became non-finite or grew past the divergence threshold, or the solve "
        "ended above its initial energy with a larger residual; reduce the step size "
        "(β < 2/λ_max of the activity Hessian) or use a more stable solver."
    )
    max_time = "The wall-clock budget (`max_time`) ran out before the tolerance was met."


class InferenceStats(eqx.Module):
    """Scalar diagnostics of one inference run (no activities, cheap to keep per step).

    - `energy`: batch-mean energy F at the **final** activities.
    - `initial_energy`: F at the feedforward activities, λ·𝓛 (also from a warm start
      `z0`: the reference the tolerance is relative to).
    - `residual`: ‖∇_z Σ_i F_i‖ at the final activities: the norm of all per-sample
      activity gradients stacked together.
    - `initial_residual`: the same at the feedforward activities (also from a warm
      start, so that `rtol` certifies the same thing from any start).
    - `relative_residual`: `residual / initial_residual` (0 when both are 0).
    - `steps`: number of activity updates taken.
    - `grad_evals`: number of energy-gradient evaluations used, counting the one at the
      start and line-search trials.
    - `hvp_evals`: number of activity-Hessian-vector products used (second-order and
      Krylov solvers; each costs about two gradients).
    - `vjp_evals`: number of linear passes through the network that are neither (the
      Gauss–Newton preconditioner's products with the linearised error-to-state map
      and its transpose, and the d_y backward passes that form the output Jacobian;
      each costs about half a gradient). `evaluations` is the sum of the three counts.
    - `result`: a [`RESULTS`][pcscale.RESULTS] member.
    """

    energy: Float[Array, ""]
    initial_energy: Float[Array, ""]
    residual: Float[Array, ""]
    initial_residual: Float[Array, ""]
    relative_residual: Float[Array, ""]
    steps: Int[Array, ""]
    grad_evals: Int[Array, ""]
    hvp_evals: Int[Array, ""]
    result: RESULTS
    vjp_evals: Int[Array, ""]

    @classmethod
    def assemble(
        cls, *, energy, initial_energy, residual, initial_residual, steps, grad_evals, hvp_evals, result,
        vjp_evals: ArrayLike = 0,
    ) -> InferenceStats:
        """The stats of a solve from its totals, with `relative_residual` derived here:
        the one place every solve (the inference loop, the mixed-precision merge, the
        theory's exact methods) builds them."""
        positive = initial_residual > 0
        relative = jnp.where(positive, residual / jnp.where(positive, initial_residual, 1.0), 0.0)
        return cls(
            energy=energy,
            initial_energy=initial_energy,
            residual=residual,
            initial_residual=initial_residual,
            relative_residual=relative,
            steps=steps,
            grad_evals=grad_evals,
            hvp_evals=hvp_evals,
            result=result,
            vjp_evals=jnp.asarray(vjp_evals, jnp.int32),
        )

    @property
    def evaluations(self) -> Int[Array, "*batch"]:  # stats of vmapped solves are batched
        return self.grad_evals + self.hvp_evals + self.vjp_evals

    @property
    def converged(self) -> Bool[Array, "*batch"]:
        return self.result == RESULTS.converged

    @property
    def diverged(self) -> Bool[Array, ""]:
        return self.result == RESULTS.diverged


class InferenceSolution(eqx.Module):
    """What [`infer`][pcscale.infer] returns: the final activities and their
    [`InferenceStats`][pcscale.InferenceStats] (whose fields are also readable here,
    e.g. `solution.energy`, `solution.result`)."""

    activities: Activities
    stats: InferenceStats

    energy = property(lambda self: self.stats.energy)
    initial_energy = property(lambda self: self.stats.initial_energy)
    residual = property(lambda self: self.stats.residual)
    initial_residual = property(lambda self: self.stats.initial_residual)
    relative_residual = property(lambda self: self.stats.relative_residual)
    steps = property(lambda self: self.stats.steps)
    grad_evals = property(lambda self: self.stats.grad_evals)
    hvp_evals = property(lambda self: self.stats.hvp_evals)
    vjp_evals = property(lambda self: self.stats.vjp_evals)
    evaluations = property(lambda self: self.stats.evaluations)
    result = property(lambda self: self.stats.result)
    converged = property(lambda self: self.stats.converged)
    diverged = property(lambda self: self.stats.diverged)
