"""Conjugate gradients on pytrees, with a Euclidean relative-residual stopping test.

Written here rather than taken from Lineax because Lineax's CG scales its tolerance
element by element (‖r_i/(atol + rtol·|b_i|)‖ ≤ 1): with PC right-hand sides, which are
exactly zero on every layer but the top one at the feedforward state, that test can
never pass. `jax.scipy.sparse.linalg.cg` cannot report iterations or success. Here the
test is ‖r‖ ≤ atol + rtol·‖b‖ over the whole pytree, and the residual is recomputed
from the operator every `refresh` steps so that it does not drift from the true one.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jaxtyping import Array, PyTree

from ._tree import tree_axpy as _axpy, tree_dot as _dot


def conjugate_gradient(
    matvec: Callable[[PyTree], PyTree],
    b: PyTree,
    x0: PyTree,
    *,
    rtol,
    atol,
    max_steps,
    refresh: int = 20,
) -> tuple[PyTree, Array, Array, Array, Array]:
    """Solve A·x = b for symmetric positive-definite A given as `matvec`.

    **Returns:** `(x, steps, products, residual, converged)`: the iterations taken, the
    products with A used (the initial residual, one per step, the periodic refreshes
    and a final check), and ‖b − A·x‖ recomputed from the operator at the end, on
    which `converged` is judged.
    """
    r0 = jax.tree.map(jnp.subtract, b, matvec(x0))
    rr0 = _dot(r0, r0)
    threshold = atol + rtol * jnp.sqrt(_dot(b, b))

    def cond(carry):
        _, _, _, rr, step = carry
        return (jnp.sqrt(rr) > threshold) & (step < max_steps) & (rr > 0)

    def body(carry):
        x, r, p, rr, step = carry
        Ap = matvec(p)
        curvature = _dot(p, Ap)
        alpha = rr / jnp.where(curvature > 0, curvature, 1.0)
        x = _axpy(alpha, p, x)
        recursive = _axpy(-alpha, Ap, r)
        r = jax.lax.cond(
            (step + 1) % refresh == 0,
            lambda: jax.tree.map(jnp.subtract, b, matvec(x)),
            lambda: recursive,
        )
        rr_new = _dot(r, r)
        p = _axpy(rr_new / jnp.where(rr > 0, rr, 1.0), p, r)
        return x, r, p, rr_new, step + 1

    carry = (x0, r0, r0, rr0, jnp.array(0, jnp.int32))
    x, _, _, _, steps = jax.lax.while_loop(cond, body, carry)
    final = jax.tree.map(jnp.subtract, b, matvec(x))
    residual = jnp.sqrt(_dot(final, final))
    products = steps + steps // refresh + 2
    return x, steps, products, residual, residual <= threshold
