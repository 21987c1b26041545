"""Truncated Newton: inner conjugate gradients on Hessian-vector products, globalised
by a backtracking line search."""

from __future__ import annotations

from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float

from .._tree import tree_axpy, tree_dot, tree_norm, tree_scale, tree_where
from ._preconditioner import AbstractPreconditioner
from ._base import AbstractInferenceSolver, check_preconditioner, check_tolerances, cost, to_float


class _NewtonState(eqx.Module):
    tolerance: Float[Array, ""]
    initial_residual: Float[Array, ""]
    stalled: Bool[Array, ""]


# The inner CG gives up when its residual has not fallen below (1 − _INNER_MARGIN) times
# its best value for _INNER_WINDOW iterations: at the dtype's rounding floor the
# recurrence stops reducing it, and without this test each Newton step would spend its
# whole inner budget there. Healthy CG on κ ≈ 10⁴ gains far more than 1% in 50 steps.
_INNER_WINDOW = 50
_INNER_MARGIN = 1e-2


def _steihaug(hvp, grad, tolerance, max_steps, precondition):
    """Approximately solve H·d = −g by preconditioned CG from d = 0, stopping at
    ‖H·d + g‖ ≤ tolerance, at `max_steps`, when the residual stops falling (see
    _INNER_WINDOW), or at the first direction of non-positive curvature (Steihaug). If
    that happens at once, d = −M⁻¹g. Returns d and the number of products used."""
    r = tree_scale(-1.0, grad)
    y = precondition(r)
    zeros = jax.tree.map(jnp.zeros_like, grad)
    ry = tree_dot(r, y)

    def cond(carry):
        _, r, _, _, step, stop = carry
        return ~stop & (step < max_steps) & (tree_norm(r) > tolerance)

    def body(carry):
        (d, r, p, ry, step, _), (best, last) = carry[:6], carry[6]
        product = hvp(p)
        curvature = tree_dot(p, product)
        negative = ~(curvature > 0) | ~jnp.isfinite(curvature)
        alpha = ry / jnp.where(negative, 1.0, curvature)
        new_d = tree_axpy(alpha, p, d)
        new_r = tree_axpy(-alpha, product, r)
        new_y = precondition(new_r)
        new_ry = tree_dot(new_r, new_y)
        new_p = tree_axpy(new_ry / jnp.where(ry > 0, ry, 1.0), p, new_y)
        keep = lambda old, new: tree_where(negative, old, new)  # noqa: E731
        norm = tree_norm(new_r)
        better = norm < (1 - _INNER_MARGIN) * best
        best, last = jnp.where(better, norm, best), jnp.where(better, step + 1, last)
        stop = negative | (step + 1 - last >= _INNER_WINDOW)
        return keep(d, new_d), keep(r, new_r), keep(p, new_p), jnp.where(negative, ry, new_ry), step + 1, stop, (best, last)

    start = jnp.array(0, jnp.int32)
    carry = (zeros, r, y, ry, start, jnp.array(False), (tree_norm(r), start))
    d, _, _, _, steps, _, _ = jax.lax.while_loop(lambda c: cond(c[:6]), body, carry)
    empty = tree_dot(d, d) == 0
    return tree_where(empty, y, d), steps


class NewtonKrylov(AbstractInferenceSolver):
    r"""Truncated (inexact) Newton with conjugate-gradient inner solves.

    Each step linearises the activity gradient at the current point (`jax.linearize`,
    forward-over-reverse, so a Hessian-vector product costs about two gradients and no
    Hessian is ever formed), solves H·d = −∇F approximately by conjugate gradients, and
    takes the step z + t·d with a backtracking line search (t = 1, ½, ¼ …).

    - The inner solve stops at relative residual η_k = min(`forcing`,
      √(‖g_k‖/‖g_0‖)) (an Eisenstat–Walker-type forcing term: loose far from the
      equilibrium, tight near it, for a superlinear outer rate), and never asks for more
      than a tenth of the loop's own tolerance.
    - Negative curvature (possible for nonlinear networks away from equilibrium) ends the
      inner solve at the last good iterate (Steihaug); at the very first inner step the
      direction falls back to −M⁻¹∇F (−∇F without a preconditioner).
    - A trial is accepted when it satisfies the Armijo condition
      F(z + t·d) ≤ F(z) + c·t·∇Fᵀd, or, only once the decrease that condition asks for is
      below the energy's rounding error (64·eps·|F|), when the gradient norm decreased and
      the energy did not grow beyond rounding.

    On a linear network each Newton step restarts the inner CG from scratch, so it needs
    a few outer steps and somewhat more products than
    [`ConjugateGradient`][pcscale.ConjugateGradient] (measured: 459 against 376 at depth
    16), which is the better choice there. `jax.linearize` recomputes the gradient at z,
    so each step counts one gradient besides its line-search trials.

    **Arguments:**

    - `rtol`, `atol`: stop when ‖∇_z Σ_i F_i‖ ≤ atol + rtol·(initial value). Default
      rtol = 1e-6.
    - `max_steps`: the budget of Newton steps. Default 100.
    - `max_inner_steps`: CG iterations per Newton step. Default 1 000.
    - `forcing`: the largest inner relative tolerance η. Default 0.1.
    - `armijo`: the sufficient-decrease constant c. Default 1e-4.
    - `max_backtracks`: line-search trials before the step is abandoned and the run
      ends with `RESULTS.stalled`. Default 30.
    - `stall_window`, `max_time`, `progress`: as for every solver
      ([`AbstractInferenceSolver`][pcscale.AbstractInferenceSolver]); the default
      stall window is 3 Newton steps, each needing a 10% lower residual or a lower
      energy. The inner CG likewise gives up when its residual has not fallen by 1% in
      50 iterations, so a solve at the rounding floor ends `stalled` after a few cheap
      steps instead of spending `max_steps` × `max_inner_steps` products.
    - `divergence_factor`: as for [`GradientDescent`][pcscale.GradientDescent].
    - `preconditioner`: None (default) or an
      [`AbstractPreconditioner`][pcscale.AbstractPreconditioner] for the inner CG, e.g.
      [`DepthPreconditioner()`][pcscale.DepthPreconditioner] for residual networks.
    """

    rtol: float = eqx.field(default=1e-6, converter=to_float)
    atol: float = eqx.field(default=0.0, converter=to_float)
    max_steps: int = 100
    divergence_factor: float = eqx.field(default=1e4, converter=to_float)
    max_inner_steps: int = 1_000
    forcing: float = eqx.field(default=0.1, converter=to_float)
    armijo: float = eqx.field(default=1e-4, converter=to_float)
    max_backtracks: int = 30
    preconditioner: AbstractPreconditioner | None = None

    # Newton steps are expensive and converge fast: three steps that neither cut the
    # residual by 10% nor lower the energy beyond rounding mean it can go no further.
    default_stall_window: ClassVar[int] = 3
    stall_margin: ClassVar[float] = 0.1
    step_cost: ClassVar[int] = 100  # an inner Krylov solve: tens to hundreds of products

    def __check_init__(self):
        check_tolerances(self)
        for name in ("max_inner_steps", "max_backtracks"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"`{name}` must be a positive int, got {value!r}; e.g. {name}=100.")
        if not (isinstance(self.forcing, float) and 0 < self.forcing < 1):
            raise ValueError(f"`forcing` must be a float in (0, 1), got {self.forcing!r}; e.g. 0.1.")
        check_preconditioner(self)
        if not (isinstance(self.armijo, float) and 0 < self.armijo < 0.5):
            raise ValueError(f"`armijo` must be a float in (0, 0.5), got {self.armijo!r}; e.g. 1e-4.")

    def init(self, fn, z, energy, grad, tolerance):
        return _NewtonState(tolerance=tolerance, initial_residual=tree_norm(grad), stalled=jnp.array(False))

    def step(self, fn, z, energy, grad, state):
        gradient = lambda u: fn(u)[1]  # noqa: E731
        _, hvp = jax.linearize(gradient, z)
        norm = tree_norm(grad)
        ratio = norm / jnp.where(state.initial_residual > 0, state.initial_residual, 1.0)
        eta = jnp.minimum(self.forcing, jnp.sqrt(ratio))
        inner_tolerance = jnp.maximum(eta * norm, 0.1 * state.tolerance)
        if self.preconditioner is None:
            precondition = lambda r: r  # noqa: E731
        else:
            precondition = lambda r: self.preconditioner.apply(fn.model, r)  # noqa: E731
        direction, products = _steihaug(hvp, grad, inner_tolerance, self.max_inner_steps, precondition)
        slope = tree_dot(grad, direction)
        rounding = 64 * jnp.finfo(energy.dtype).eps * jnp.abs(energy)

        def cond(carry):
            *_, accepted, tries = carry
            return ~accepted & (tries < self.max_backtracks)

        def body(carry):
            t, _, _, _, _, tries = carry
            trial = tree_axpy(t, direction, z)
            trial_energy, trial_grad = fn(trial)
            trial_norm = tree_norm(trial_grad)
            finite = jnp.isfinite(trial_energy) & jnp.isfinite(trial_norm)
            armijo = trial_energy <= energy + self.armijo * t * slope
            # Once the decrease Armijo asks for is below the energy's rounding error, the
            # energy cannot judge the step: accept it if the gradient norm fell and the
            # energy did not rise beyond rounding.
            below_rounding = self.armijo * t * jnp.abs(slope) <= rounding
            flat = below_rounding & (trial_norm < norm) & (trial_energy <= energy + rounding)
            accepted = finite & (armijo | flat)
            return 0.5 * t, trial, trial_energy, trial_grad, accepted, tries + 1

        one = jnp.ones((), energy.dtype)
        carry = (one, z, energy, grad, jnp.array(False), jnp.array(0, jnp.int32))
        _, trial, trial_energy, trial_grad, accepted, tries = jax.lax.while_loop(cond, body, carry)
        new_z = tree_where(accepted, trial, z)
        new_energy = jnp.where(accepted, trial_energy, energy)
        new_grad = tree_where(accepted, trial_grad, grad)
        state = _NewtonState(state.tolerance, state.initial_residual, ~accepted)
        return new_z, new_energy, new_grad, state, cost(gradients=1 + tries, hvps=products)

    def stalled(self, state):
        return state.stalled
