"""The one linear conjugate-gradient routine of the inference solvers: preconditioned CG
on pytrees with a Euclidean stopping test, an optional stall test and an optional exit
at negative curvature (Steihaug's truncated CG, for Newton's inner solve).

The theory's exact linear solve (pcscale.theory.LinearCG) uses Lineax's CG. This one is
written here because the inner solve of a Newton step must stop at the first direction
of non-positive curvature and keep the last good iterate (Lineax's CG turns the step
into NaN there), and must give up when the residual stops falling at the dtype's
rounding floor.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

import equinox as eqx
import jax
import jax.numpy as jnp
import optax.tree_utils as otu
from jaxtyping import Array, Float, Int, PyTree


class KrylovSolution(eqx.Module):
    """What `conjugate_gradient` returns: the approximate solution, the iterations taken
    (one product with the operator each) and the norm of the recursive residual at the
    end."""

    solution: PyTree
    steps: Int[Array, ""]
    residual: Float[Array, ""]


def _identity(r: PyTree) -> PyTree:
    return r


def conjugate_gradient(
    matvec: Callable[[PyTree], PyTree],
    b: PyTree,
    *,
    tolerance,
    max_steps,
    precondition: Callable[[PyTree], PyTree] | None = None,
    negative_curvature_exit: bool = False,
    stall_window: int | None = None,
    stall_margin: float = 0.0,
) -> KrylovSolution:
    """Approximately solve A·x = b for symmetric A given as `matvec`, by (preconditioned)
    conjugate gradients from x = 0.

    The iteration stops when ‖r‖ ≤ `tolerance` (Euclidean norm over the whole pytree,
    r the recursive residual b − A·x), after `max_steps` iterations, or at a direction
    p of non-positive (or non-finite) curvature pᵀA·p, keeping the last iterate: for a
    positive-definite A that happens only at exact convergence.

    - `precondition`: r ↦ M⁻¹·r for a positive-definite M (default: none).
    - `negative_curvature_exit`: Steihaug's rule for a Newton step, where A may be
      indefinite: if the iteration stops before taking any step (at once, by negative
      curvature or by the tolerance), the solution is the first search direction M⁻¹·b
      instead of 0.
    - `stall_window`, `stall_margin`: also stop when the residual norm has not fallen
      below (1 − `stall_margin`) times its best value for `stall_window` iterations
      (at the rounding floor of the dtype the recurrence stops reducing it). Default
      None: no stall test.
    """
    if precondition is None:
        precondition = _identity
    r = b
    y = precondition(r)
    ry = otu.tree_vdot(r, y)
    zero = jnp.array(0, jnp.int32)

    def cond(carry):
        _, r, _, _, step, stop, _ = carry
        return ~stop & (step < max_steps) & (otu.tree_norm(r) > tolerance)

    def body(carry):
        x, r, p, ry, step, _, (best, last) = carry
        product = matvec(p)
        curvature = cast(Array, otu.tree_vdot(p, product))  # typed ArrayLike: a real scalar array
        negative = ~(curvature > 0) | ~jnp.isfinite(curvature)
        alpha = ry / jnp.where(negative, 1.0, curvature)
        new_x = otu.tree_add_scale(x, alpha, p)
        new_r = otu.tree_add_scale(r, -alpha, product)
        new_y = precondition(new_r)
        new_ry = otu.tree_vdot(new_r, new_y)
        new_p = otu.tree_add_scale(new_y, new_ry / jnp.where(ry > 0, ry, 1.0), p)
        stop = negative
        if stall_window is not None:
            norm = otu.tree_norm(new_r)
            better = norm < (1 - stall_margin) * best
            best, last = jnp.where(better, norm, best), jnp.where(better, step + 1, last)
            stop = stop | (step + 1 - last >= stall_window)

        def keep(old, new):
            return otu.tree_where(negative, old, new)

        new_ry = jnp.where(negative, ry, new_ry)
        return keep(x, new_x), keep(r, new_r), keep(p, new_p), new_ry, step + 1, stop, (best, last)

    carry = (otu.tree_zeros_like(b), r, y, ry, zero, jnp.array(False), (otu.tree_norm(r), zero))
    x, r, _, _, steps, _, _ = jax.lax.while_loop(cond, body, carry)
    if negative_curvature_exit:
        x = otu.tree_where(otu.tree_vdot(x, x) == 0, y, x)
    return KrylovSolution(x, steps, otu.tree_norm(r))
