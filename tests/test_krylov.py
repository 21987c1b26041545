"""The solvers' one linear conjugate-gradient routine (pcscale._solver._krylov), against
numpy: plain, preconditioned, at a budget, and with Newton's negative-curvature exit."""

import jax
import jax.numpy as jnp
import numpy as np

from pcscale._solver._krylov import conjugate_gradient


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

    tolerance = 1e-12 * float(jnp.linalg.norm(b))
    solve = jax.jit(lambda b: conjugate_gradient(matvec, b, tolerance=tolerance, max_steps=1000))
    found = solve((b[:10], b[10:]))
    jax.effects_barrier()
    x = np.concatenate(found.solution)
    np.testing.assert_allclose(x, np.linalg.solve(np.asarray(A), np.asarray(b)), rtol=1e-9)
    assert float(found.residual) <= tolerance  # the recursive residual, which stopped it
    assert np.linalg.norm(np.asarray(b) - np.asarray(A) @ x) < 1e-10 * float(jnp.linalg.norm(b))
    assert int(found.steps) == len(calls)  # one product per iteration
    assert int(found.steps) >= 30  # exact arithmetic would need at most 30; rounding adds a few


def test_a_preconditioner_cuts_the_iterations():
    scaling = np.diag(np.geomspace(1.0, 1e3, 40))  # badly scaled: Jacobi undoes most of it
    A = jnp.asarray(scaling @ _spd(40, 10.0, 2) @ scaling)
    b = jnp.asarray(np.random.default_rng(3).normal(size=40))
    inverse_diagonal = jnp.asarray(1 / np.diag(np.asarray(A)))
    plain = conjugate_gradient(lambda v: A @ v, b, tolerance=1e-8, max_steps=2000)
    jacobi = conjugate_gradient(lambda v: A @ v, b, tolerance=1e-8, max_steps=2000,
                                precondition=lambda r: inverse_diagonal * r)
    expected = np.linalg.solve(np.asarray(A), np.asarray(b))
    np.testing.assert_allclose(jacobi.solution, expected, rtol=1e-5)
    assert int(jacobi.steps) < int(plain.steps) // 2


def test_reports_an_exhausted_budget():
    A = jnp.asarray(_spd(50, 1e4, 2))
    b = jnp.ones(50)
    found = conjugate_gradient(lambda v: A @ v, b, tolerance=1e-12, max_steps=5)
    assert int(found.steps) == 5 and float(found.residual) > 1e-12
    np.testing.assert_allclose(found.residual, np.linalg.norm(np.asarray(b - A @ found.solution)), rtol=1e-8)


def test_negative_curvature_ends_at_the_last_good_iterate_or_the_first_direction():
    # Indefinite: the first direction b sees positive curvature, a later one negative.
    A = jnp.diag(jnp.array([2.0, 1.0, -1.0]))
    b = jnp.array([1.0, 1.0, 1.0])
    found = conjugate_gradient(lambda v: A @ v, b, tolerance=1e-12, max_steps=10,
                               negative_curvature_exit=True)
    # Step 1 along b (bᵀAb = 2, α = 3/2); the next direction (1.5, 3, 6) has curvature
    # −22.5, which ends the solve at the last good iterate (the failed step is counted).
    np.testing.assert_allclose(found.solution, 1.5 * b, rtol=1e-15)
    assert int(found.steps) == 2
    # Negative curvature at once: Steihaug's fallback is the (preconditioned) direction M⁻¹b.
    at_once = conjugate_gradient(lambda v: -v, b, tolerance=1e-12, max_steps=10, negative_curvature_exit=True,
                                 precondition=lambda r: 0.5 * r)
    np.testing.assert_array_equal(at_once.solution, 0.5 * b)
    assert int(at_once.steps) == 1
