"""Arithmetic on pytrees of arrays (activities), shared by the inference loop and solvers."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, PyTree


def tree_dot(a: PyTree, b: PyTree) -> Array:
    """Σ over all leaves of ⟨a_leaf, b_leaf⟩."""
    leaves = [jnp.vdot(u, v) for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b))]
    return sum(leaves) if leaves else jnp.zeros(())


def tree_norm(tree: PyTree) -> Array:
    """Euclidean norm of all leaves of a pytree taken together."""
    leaves = jax.tree.leaves(tree)
    if not leaves:
        return jnp.zeros(())
    return jnp.sqrt(sum(jnp.sum(jnp.square(leaf)) for leaf in leaves))


def tree_axpy(alpha, x: PyTree, y: PyTree) -> PyTree:
    """alpha·x + y, leaf by leaf."""
    return jax.tree.map(lambda u, v: alpha * u + v, x, y)


def tree_scale(alpha, x: PyTree) -> PyTree:
    return jax.tree.map(lambda u: alpha * u, x)


def tree_where(condition, a: PyTree, b: PyTree) -> PyTree:
    return jax.tree.map(lambda u, v: jnp.where(condition, u, v), a, b)


def tree_cast(tree: PyTree, dtype) -> PyTree:
    """`tree` with every floating array cast to `dtype` (integer arrays, e.g. token ids,
    and non-array leaves are kept)."""
    return jax.tree.map(lambda a: a.astype(dtype) if eqx.is_inexact_array(a) else a, tree)
