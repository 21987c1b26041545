"""Activity Hessian: dense, matrix-free products and Lanczos spectra, for linear and
nonlinear networks."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import data, hand_energy, weights_of
from jax.flatten_util import ravel_pytree

import pcscale as pc
from pcscale import theory

D = 5


def block_tridiagonal(model):
    """H_z from the table of docs/background.md §4.3, assembled by hand."""
    A = []
    for layer in model.layers:
        M = layer.multiplier * layer.module.weight
        A.append(M + np.eye(M.shape[0]) if layer.skip else M)
    A = [np.asarray(M) for M in A]
    H, N = len(A) - 1, A[0].shape[0]
    out = np.zeros((H * N, H * N))
    for l in range(H):  # activity l + 1
        block = slice(l * N, (l + 1) * N)
        nxt = A[l + 1]
        out[block, block] = np.eye(N) + (model.output_precision if l == H - 1 else 1.0) * nxt.T @ nxt
        if l < H - 1:
            below = slice((l + 1) * N, (l + 2) * N)
            out[block, below] = -nxt.T
            out[below, block] = -nxt
    return out


def linear_model(width, depth, *, skips, precision=1.0, output_dim=3, seed=0):
    builder = pc.nn.residual_mlp if skips else pc.nn.mlp
    return builder(D, width, output_dim, depth, parameterisation=pc.MuPC(), activation="linear",
                   output_precision=precision, dtype=jnp.float64, key=jax.random.PRNGKey(seed))


@pytest.mark.parametrize("skips", [False, True])
def test_dense_hessian_is_the_block_tridiagonal_matrix(skips):
    model = linear_model(5, 5, skips=skips, precision=0.6)
    np.testing.assert_allclose(theory.activity_hessian(model), block_tridiagonal(model), rtol=1e-12, atol=1e-14)
    # Independent of the sample, the activities and the target.
    x, y = data(jax.random.PRNGKey(1), 1, D, 3)
    z = tuple(jax.random.normal(jax.random.PRNGKey(2), (1, 5)) for _ in range(4))
    np.testing.assert_allclose(theory.activity_hessian(model, x, y, z), block_tridiagonal(model), atol=1e-13)


def test_batch_mean_hessian_is_the_per_sample_hessian_over_b():
    model = linear_model(4, 4, skips=True)
    x, y = data(jax.random.PRNGKey(3), 3, D, 3)
    z = model.init_activities(x)
    flat, unravel = ravel_pytree(z)
    full = jax.hessian(lambda v: model.energy(unravel(v), x, y))(flat)
    # Coordinates of sample 0: element [0] of each layer's (B, N) array.
    index = np.concatenate([l * 3 * 4 + np.arange(4) for l in range(3)])
    np.testing.assert_allclose(full[np.ix_(index, index)], block_tridiagonal(model) / 3, rtol=1e-12, atol=1e-14)


def test_hessian_vector_product_matches_the_dense_matrix():
    model = linear_model(6, 4, skips=True, precision=0.8)
    x, y = data(jax.random.PRNGKey(4), 3, D, 3)
    v = tuple(jax.random.normal(k, (3, 6)) for k in jax.random.split(jax.random.PRNGKey(5), 3))
    product = theory.hessian_vector_product(model, x, y, v)
    H = block_tridiagonal(model)
    for i in range(3):
        vi = np.concatenate([np.asarray(v_l[i]) for v_l in v])
        np.testing.assert_allclose(np.concatenate([np.asarray(p[i]) for p in product]), H @ vi, rtol=1e-11,
                                   atol=1e-13)


@pytest.mark.parametrize("skips", [False, True])
def test_lanczos_matches_eigvalsh_on_a_linear_network(skips):
    model = linear_model(6, 5, skips=skips)
    x, y = data(jax.random.PRNGKey(6), 2, D, 3)
    eigenvalues = np.linalg.eigvalsh(block_tridiagonal(model))
    spectrum = theory.hessian_spectrum(model, x, y, iterations=200, key=jax.random.PRNGKey(0))
    np.testing.assert_allclose(spectrum.max_eigenvalue, eigenvalues[-1], rtol=1e-6)
    np.testing.assert_allclose(spectrum.min_eigenvalue, eigenvalues[0], rtol=1e-6)
    np.testing.assert_allclose(spectrum.condition_number, eigenvalues[-1] / eigenvalues[0], rtol=1e-6)
    assert float(spectrum.min_bound) < 1e-6 * eigenvalues[0]


def test_lanczos_on_a_nonlinear_network_at_given_activities():
    model = pc.nn.residual_mlp(D, 5, 3, 4, parameterisation=pc.MuPC(), activation="tanh", dtype=jnp.float64,
                               key=jax.random.PRNGKey(7))
    x, y = data(jax.random.PRNGKey(8), 3, D, 3)
    z = pc.infer(model, x, y, solver=pc.GradientDescent(step_size=0.2, max_steps=3)).activities
    multipliers = [layer.multiplier for layer in model.layers]
    eigenvalues = []
    for i in range(3):
        zi = tuple(z_l[i:i + 1] for z_l in z)
        flat, unravel = ravel_pytree(zi)
        # Independent: jax.hessian of the hand-written energy of one sample.
        dense = jax.hessian(lambda v: hand_energy(unravel(v), weights_of(model), multipliers, x[i:i + 1],
                                                   y[i:i + 1], skips=True))(flat)
        np.testing.assert_allclose(theory.activity_hessian(model, x[i:i + 1], y[i:i + 1], zi), dense, atol=1e-12)
        eigenvalues.append(np.linalg.eigvalsh(np.asarray(dense)))
    spectrum = theory.hessian_spectrum(model, x, y, z, iterations=200, key=jax.random.PRNGKey(1))
    np.testing.assert_allclose(spectrum.max_eigenvalue, max(e[-1] for e in eigenvalues), rtol=1e-6)
    np.testing.assert_allclose(spectrum.min_eigenvalue, min(e[0] for e in eigenvalues), rtol=1e-6)


def test_few_lanczos_steps_bracket_the_extremes_within_their_bounds():
    model = linear_model(16, 9, skips=True)
    x, y = data(jax.random.PRNGKey(9), 1, D, 3)
    eigenvalues = np.linalg.eigvalsh(block_tridiagonal(model))
    spectrum = theory.hessian_spectrum(model, x, y, iterations=25, key=jax.random.PRNGKey(2))
    # Ritz values lie inside the spectrum, and an eigenvalue lies within each bound.
    assert eigenvalues[0] - 1e-12 <= float(spectrum.min_eigenvalue) <= float(spectrum.max_eigenvalue)
    assert float(spectrum.max_eigenvalue) <= eigenvalues[-1] + 1e-12
    assert eigenvalues[-1] - float(spectrum.max_eigenvalue) <= float(spectrum.max_bound) + 1e-12
    assert int(spectrum.iterations) == 25


def test_lanczos_converges_with_fewer_iterations_than_coordinates():
    # λ_max converges within a few dozen steps; λ_min, at the bottom of a clustered
    # (Laplacian-like) spectrum, needs about two thirds of the dimension here.
    model = linear_model(64, 5, skips=True)  # 4 × 64 = 256 activity coordinates
    x, y = data(jax.random.PRNGKey(10), 1, D, 3)
    eigenvalues = np.linalg.eigvalsh(block_tridiagonal(model))
    spectrum = theory.hessian_spectrum(model, x, y, iterations=180, key=jax.random.PRNGKey(4))
    assert int(spectrum.iterations) == 180
    assert abs(float(spectrum.min_eigenvalue) - eigenvalues[0]) <= float(spectrum.min_bound)
    np.testing.assert_allclose(spectrum.max_eigenvalue, eigenvalues[-1], rtol=1e-6)
    np.testing.assert_allclose(spectrum.min_eigenvalue, eigenvalues[0], rtol=1e-6)


# A trend over a sweep of sizes, compiling a model per size: -m slow. The default run
# still runs every experiment end to end and pins cells' numbers (tests/test_pinned.py).
@pytest.mark.slow
def test_condition_number_grows_like_depth_squared():
    # docs/background.md §4.6: κ ∝ L² for μPC skip networks (discrete-Laplacian structure).
    kappas = []
    for depth in (8, 16, 32):
        model = linear_model(12, depth, skips=True, output_dim=3)
        x, y = data(jax.random.PRNGKey(11), 1, D, 3)
        size = 12 * (depth - 1)
        spectrum = theory.hessian_spectrum(model, x, y, iterations=size, key=jax.random.PRNGKey(5))
        e = np.linalg.eigvalsh(block_tridiagonal(model))
        np.testing.assert_allclose(spectrum.condition_number, e[-1] / e[0], rtol=1e-6)
        kappas.append(float(spectrum.condition_number))
    slope = np.polyfit(np.log([8, 16, 32]), np.log(kappas), 1)[0]
    assert 1.6 < slope < 2.4


def test_indefinite_hessian_has_no_condition_number():
    # Far from equilibrium a tanh network's Hessian can be indefinite: κ is then NaN.
    model = pc.nn.mlp(D, 6, 3, 3, parameterisation=pc.SP(gamma0=0.05), activation="tanh", dtype=jnp.float64,
                      key=jax.random.PRNGKey(12))
    x, y = data(jax.random.PRNGKey(13), 1, D, 3)
    y = 50.0 * y
    z = tuple(3.0 * jax.random.normal(k, (1, 6)) for k in jax.random.split(jax.random.PRNGKey(14), 2))
    dense = np.linalg.eigvalsh(np.asarray(theory.activity_hessian(model, x, y, z)))
    assert dense[0] < 0
    spectrum = theory.hessian_spectrum(model, x, y, z, iterations=12, key=jax.random.PRNGKey(6))
    np.testing.assert_allclose(spectrum.min_eigenvalue, dense[0], rtol=1e-8)
    assert np.isnan(float(spectrum.condition_number))


class _TanhModule(eqx.Module):
    weight: jax.Array

    def __call__(self, z):
        return jnp.tanh(self.weight @ z)


def test_nonlinear_modules_are_not_taken_for_linear():
    keys = jax.random.split(jax.random.PRNGKey(15), 3)
    first = pc.PCLayer(pc.nn.Linear(jax.random.normal(keys[0], (4, 4))))
    model = pc.PCModel((first,) + tuple(pc.PCLayer(_TanhModule(jax.random.normal(k, (4, 4)))) for k in keys[1:]),
                       pc.MSE())
    x, y = data(jax.random.PRNGKey(16), 2, 4, 4)
    with pytest.raises(ValueError, match="depends on the sample"):
        theory.activity_hessian(model)
    with pytest.raises(ValueError, match="takes one sample, got a batch of 2"):
        theory.activity_hessian(model, x, y)


def test_hessian_bad_input(unchecked):
    tanh = pc.nn.mlp(D, 4, 2, 3, activation="tanh", dtype=jnp.float64, key=jax.random.PRNGKey(0))
    x, y = data(jax.random.PRNGKey(1), 2, D, 2)
    with pytest.raises(ValueError, match="depends on the sample.*x\\[i:i\\+1\\]"):
        theory.activity_hessian(tanh)
    with pytest.raises(ValueError, match="takes one sample, got a batch of 2"):
        theory.activity_hessian(tanh, x, y)
    with pytest.raises(ValueError, match="`y` is missing"):
        theory.activity_hessian(tanh, x[:1])
    with pytest.raises(ValueError, match="`iterations` must be a positive int"):
        theory.hessian_spectrum(tanh, x, y, iterations=0, key=jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="`v` must be shaped like the activities"):
        theory.hessian_vector_product(tanh, x, y, (jnp.ones((2, 3)),))
    wide = pc.nn.mlp(D, 2048, 2, 6, activation="linear", key=jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="dense 10240 × 10240.*matrix-free"):
        theory.activity_hessian(wide)
    with pytest.raises(TypeError, match="`key` must be a JAX PRNG key"):
        theory.hessian_spectrum(tanh, x, y, key=0)
    with pytest.raises(ValueError, match="`y` or `z` was given without `x`"):
        theory.activity_hessian(tanh, None, y)
    with pytest.raises(ValueError, match="`dtype` must be a floating dtype, got 'foo'"):
        theory.activity_hessian(tanh, x[:1], y[:1], dtype="foo")
    single = pc.nn.mlp(D, 4, 2, 1, activation="linear", dtype=jnp.float64, key=jax.random.PRNGKey(0))
    for call in (lambda: theory.activity_hessian(single),
                 lambda: theory.hessian_spectrum(single, x, y, key=jax.random.PRNGKey(0)),
                 lambda: theory.hessian_vector_product(single, x, y, ())):
        with pytest.raises(ValueError, match="depth 1, so it has no free activities"):
            call()
