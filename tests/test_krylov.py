"""Conjugate gradients on pytrees (pcscale._krylov), against numpy."""

import jax
import jax.numpy as jnp
import numpy as np

from pcscale._krylov import conjugate_gradient


def _spd(n, condition, seed):
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(n, n)))
    return q @ np.diag(np.geomspace(1.0, condition, n)) @ q.T


def test_solves_a_pytree_system_and_counts_its_products():
    A = jnp.asarray(_spd(30, 1e3, 0))
    b = jnp.asarray(np.random.default_rng(1).normal(size=30))
    calls = []

    def matvec(tree):
        # The operator on a pytree (a, b) of sizes 10 and 20; counts its executions.
        jax.debug.callback(lambda: calls.append(1))
        flat = jnp.concatenate(tree)
        out = A @ flat
        return out[:10], out[10:]

    split = (b[:10], b[10:])
    zero = (jnp.zeros(10), jnp.zeros(20))
    x, steps, products, residual, converged = jax.jit(
        lambda b, x0: conjugate_gradient(matvec, b, x0, rtol=1e-12, atol=0.0, max_steps=1000)
    )(split, zero)
    jax.effects_barrier()
    expected = np.linalg.solve(np.asarray(A), np.asarray(b))
    np.testing.assert_allclose(np.concatenate(x), expected, rtol=1e-9)
    assert bool(converged)
    np.testing.assert_allclose(residual, np.linalg.norm(np.asarray(b) - np.asarray(A) @ np.concatenate(x)), atol=1e-13)
    assert float(residual) <= 1e-12 * float(jnp.linalg.norm(b))
    assert int(products) == len(calls)
    assert int(steps) >= 30  # exact arithmetic would need at most 30; rounding adds a few


def test_reports_an_exhausted_budget():
    A = jnp.asarray(_spd(50, 1e4, 2))
    b = jnp.ones(50)
    x, steps, _, residual, converged = conjugate_gradient(
        lambda v: A @ v, b, jnp.zeros(50), rtol=1e-12, atol=0.0, max_steps=5)
    assert int(steps) == 5 and not bool(converged)
    np.testing.assert_allclose(residual, np.linalg.norm(np.asarray(b - A @ x)), rtol=1e-10)
