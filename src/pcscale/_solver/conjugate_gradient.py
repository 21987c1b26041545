"""Conjugate gradients on the activities: exact for linear networks, and a
Newton-step nonlinear CG otherwise."""

from __future__ import annotations

from typing import ClassVar, cast

import equinox as eqx
import jax
import jax.numpy as jnp
import optax.tree_utils as otu
from jaxtyping import Array, Bool

from .._custom_types import Activities
from ._base import check_positive, cost, to_float
from ._preconditioner import AbstractKrylovSolver


class _CGState(eqx.Module):
    direction: Activities
    previous_grad: Activities  # the gradient the direction was built from
    previous_preconditioned: Activities  # M⁻¹ times it
    returned_grad: Activities  # the gradient this solver last returned
    restart: Bool[Array, ""]


class ConjugateGradient(AbstractKrylovSolver):
    r"""Conjugate gradients on the energy, one Hessian-vector product per step.

    For a linear network (identity activation, no biases, MSE output) the energy is
    quadratic in the activities, F(z) = ½zᵀHz − bᵀz + c, and this is the classical
    conjugate-gradient method for H·z = b: it needs O(√κ·log(1/rtol)) steps where plain
    gradient descent needs O(κ·log(1/rtol)), and κ grows like L² for μPC networks
    (docs/background.md §4.6).

    Each step takes the product H·p along the search direction p by forward-over-reverse
    autodiff (which also yields the true energy and gradient at the current point), steps
    to the minimum along p (α = −gᵀp / pᵀHp), and predicts the next gradient by
    g + α·H·p, exact for a quadratic. The prediction is re-anchored on the true gradient
    at every step, so rounding errors do not accumulate, and the loop of
    [`infer`][pcscale.infer] re-evaluates the gradient before it accepts convergence.

    On a nonlinear network the same iteration is a nonlinear (Polak–Ribière+) conjugate
    gradient method with a Newton step length; where the curvature along p is not
    positive it takes a gradient step of size `fallback_step_size` and restarts. It is
    not globalised by a line search: prefer [`NewtonKrylov`][pcscale.NewtonKrylov] for
    strongly nonlinear energies.

    **Arguments** (all keyword-only):

    - `rtol`, `atol`: stop when ‖∇_z Σ_i F_i‖ ≤ atol + rtol·(initial value). Default
      rtol = 1e-6.
    - `max_steps`: the step budget (one Hessian-vector product each). Default 10 000.
    - `divergence_factor`: as for [`GradientDescent`][pcscale.GradientDescent].
    - `fallback_step_size`: β of the gradient step taken where the curvature along the
      search direction is not positive. Default 0.1.
    - `preconditioner`: None (default) or an
      [`AbstractPreconditioner`][pcscale.AbstractPreconditioner], e.g.
      [`DepthPreconditioner()`][pcscale.DepthPreconditioner], which removes the
      depth-Laplacian part of the conditioning of residual networks (preconditioned CG:
      directions from M⁻¹∇F).
    """

    fallback_step_size: float = eqx.field(default=0.1, converter=to_float, kw_only=True)

    exact_values: ClassVar[bool] = False
    step_cost: ClassVar[int] = 3  # one Hessian-vector product

    def __check_init__(self):
        check_positive(self, "fallback_step_size", "fallback_step_size=0.1, stable for μPC networks")
        if getattr(type(self.preconditioner), "point_dependent", False):
            raise TypeError(
                f"`preconditioner` {type(self.preconditioner).__name__}() depends on the activities and "
                "ConjugateGradient keeps one preconditioner for the whole solve; use it with "
                "pcscale.NewtonKrylov, or pass pcscale.DepthPreconditioner() here."
            )

    def init(self, model, fn, z, energy, grad, tolerance):
        preconditioned = self.preconditioning(model)(grad)
        return _CGState(otu.tree_zeros_like(grad), grad, preconditioned, grad, jnp.array(True))

    def step(self, model, fn, z, energy, grad, state):
        # The loop replaces a predicted gradient by the true one when it checks a claim of
        # convergence that failed: the Krylov history is then stale, so restart.
        # `returned_grad` is a gradient carried by the loop: the same pytree as `grad`.
        leaf_pairs = zip(jax.tree.leaves(grad), jax.tree.leaves(state.returned_grad), strict=True)
        replaced = jnp.any(jnp.array([jnp.any(u != v) for u, v in leaf_pairs]))
        restart = state.restart | replaced
        preconditioned = self.preconditioning(model)(grad)
        # `otu.tree_vdot` is typed ArrayLike; it gives a real scalar array (the int 0 for an
        # empty tree, which compares and divides alike), hence the casts.
        previous_sq = cast(Array, otu.tree_vdot(state.previous_preconditioned, state.previous_grad))
        # Polak–Ribière+ (preconditioned): equals linear (P)CG on a quadratic.
        beta = otu.tree_vdot(preconditioned, otu.tree_sub(grad, state.previous_grad))
        beta = jnp.where(
            restart | (previous_sq <= 0), 0.0, jnp.maximum(beta, 0.0) / jnp.where(previous_sq > 0, previous_sq, 1.0)
        )
        steepest = otu.tree_scale(-1.0, preconditioned)
        direction = otu.tree_add_scale(steepest, beta, state.direction)
        descent = cast(Array, otu.tree_vdot(grad, direction)) < 0
        direction = otu.tree_where(descent, direction, steepest)

        (true_energy, true_grad), (_, product) = jax.jvp(fn, (z,), (direction,))
        curvature = cast(Array, otu.tree_vdot(direction, product))
        slope = cast(Array, otu.tree_vdot(true_grad, direction))
        positive = (curvature > 0) & jnp.isfinite(curvature)
        alpha = -slope / jnp.where(positive, curvature, 1.0)

        def conjugate():
            new_z = otu.tree_add_scale(z, alpha, direction)
            new_grad = otu.tree_add_scale(true_grad, alpha, product)
            new_energy = true_energy + alpha * slope + 0.5 * alpha**2 * curvature
            state_ = _CGState(direction, grad, preconditioned, new_grad, jnp.array(False))
            return new_z, new_energy, new_grad, state_, jnp.array(0, jnp.int32)

        def gradient_step():
            new_z = otu.tree_add_scale(z, -self.fallback_step_size, true_grad)
            new_energy, new_grad = fn(new_z)
            state_ = _CGState(direction, grad, preconditioned, new_grad, jnp.array(True))
            return new_z, new_energy, new_grad, state_, jnp.array(1, jnp.int32)

        new_z, new_energy, new_grad, new_state, gradients = jax.lax.cond(positive, conjugate, gradient_step)
        return new_z, new_energy, new_grad, new_state, cost(gradients=gradients, hvps=1)
