"""Lanczos with full reorthogonalisation, for the extreme eigenvalues of a symmetric
operator given only by its matrix-vector product.

Written here because neither Lineax nor Optimistix offers an eigenvalue solver, and
`jax.scipy.sparse.linalg` has none either; the whole iteration runs in one
`lax.fori_loop`.
"""

from __future__ import annotations

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int, PRNGKeyArray


class RitzEstimates(eqx.Module):
    """Extreme Ritz values of a Lanczos run and their residual bounds
    ‖A·u − θ·u‖ ≤ |β_k·s_k| (exact for the computed Ritz pair; an eigenvalue of A lies
    within that distance of θ)."""

    largest: Float[Array, ""]
    smallest: Float[Array, ""]
    largest_bound: Float[Array, ""]
    smallest_bound: Float[Array, ""]
    iterations: Int[Array, ""]


def _orthogonalise(basis: Array, w: Array) -> Array:
    # Classical Gram–Schmidt applied twice ("twice is enough") against every stored
    # vector; rows of `basis` not yet filled are zero and contribute nothing.
    w = w - basis.T @ (basis @ w)
    return w - basis.T @ (basis @ w)


def lanczos(
    matvec: Callable[[Array], Array], size: int, iterations: int, dtype, *, key: PRNGKeyArray
) -> RitzEstimates:
    """`iterations` (≤ `size`) Lanczos steps on a symmetric `size`-dimensional operator.

    If the Krylov space is exhausted (an invariant subspace is found: β ≈ 0, e.g. when
    the operator repeats the same block for every sample), the iteration restarts from
    a random vector orthogonal to all previous ones and records β = 0, so the
    tridiagonal matrix stays block-diagonal and its eigenvalues stay exact Ritz values.
    """
    steps = min(int(iterations), int(size))
    start_key, key = jax.random.split(key)
    v0 = jax.random.normal(start_key, (size,), dtype)
    basis = jnp.zeros((steps + 1, size), dtype).at[0].set(v0 / jnp.linalg.norm(v0))
    alphas = jnp.zeros((steps,), dtype)
    betas = jnp.zeros((steps,), dtype)
    tolerance = jnp.sqrt(jnp.finfo(dtype).eps)

    def body(j, carry):
        basis, alphas, betas, scale, key = carry
        v = basis[j]
        w = matvec(v)
        alpha = jnp.dot(w, v)
        w = _orthogonalise(basis, w)
        beta = jnp.linalg.norm(w)
        scale = jnp.maximum(scale, jnp.maximum(jnp.abs(alpha), beta))
        breakdown = beta <= tolerance * scale
        key, sub = jax.random.split(key)

        def restart():
            fresh = _orthogonalise(basis, jax.random.normal(sub, (size,), dtype))
            norm = jnp.linalg.norm(fresh)
            return fresh / jnp.where(norm > 0, norm, 1.0)

        # The fresh vector (two more full reorthogonalisations) only on a breakdown.
        nxt = jax.lax.cond(breakdown, restart, lambda: w / jnp.where(breakdown, 1.0, beta))
        beta = jnp.where(breakdown, 0.0, beta)
        return basis.at[j + 1].set(nxt), alphas.at[j].set(alpha), betas.at[j].set(beta), scale, key

    init = (basis, alphas, betas, jnp.zeros((), dtype), key)
    _, alphas, betas, _, _ = jax.lax.fori_loop(0, steps, body, init)
    tridiagonal = jnp.diag(alphas) + jnp.diag(betas[:-1], 1) + jnp.diag(betas[:-1], -1)
    values, vectors = jnp.linalg.eigh(tridiagonal)
    bounds = jnp.abs(betas[-1] * vectors[-1, :])
    return RitzEstimates(
        largest=values[-1],
        smallest=values[0],
        largest_bound=bounds[-1],
        smallest_bound=bounds[0],
        iterations=jnp.asarray(steps),
    )
