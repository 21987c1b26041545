"""Bidirectional and generative PC on linear-Gaussian models: inferred latents are the
closed-form posterior mean, equilibria are dense solves of the hand-written energy,
α_gen = 0 is discriminative PC, the training step applies the hand-written local
gradient, and ancestral samples have the model's covariance."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import data

import pcscale as pc


def _flat(tree):
    return jnp.concatenate([jnp.ravel(leaf) for leaf in jax.tree.leaves(tree)])


def _linear(d_in, width, d_out, depth, key):
    return pc.nn.mlp(d_in, width, d_out, depth, parameterisation=pc.MuPC(), activation="linear",
                     dtype=jnp.float64, key=jax.random.key(key))


def _matrix(layer, size):
    """The matrix of a linear layer, column by column."""
    return jax.vmap(layer, out_axes=1)(jnp.eye(size, dtype=jnp.float64))


def test_generative_latents_are_the_closed_form_posterior_mean():
    """x = G1·z1 + n1, z1 = G2·z2 + n2, n ~ N(0, I/α), z2 ~ N(0, I/π0): the posterior of
    (z1, z2) given x is Gaussian with precision Λ = [[α(G1ᵀG1 + I), −αG2], [−αG2ᵀ,
    αG2ᵀG2 + π0·I]] and mean Λ⁻¹[αG1ᵀx, 0]."""
    alpha, prior = 1.7, 0.6
    down = _linear(3, 5, 7, 2, key=0)  # top (3) → hidden (5) → data (7)
    model = pc.BidirectionalModel(up=None, down=down, disc_weight=0.0, gen_weight=alpha, prior_precision=prior)
    x = jax.random.normal(jax.random.key(1), (4, 7), jnp.float64)
    solution = pc.infer_bidirectional(model, x, solver=pc.NewtonKrylov(rtol=1e-12), top_shape=(3,))
    assert solution.stats.result == pc.RESULTS.converged
    g2, g1 = _matrix(down.layers[0], 3), _matrix(down.layers[1], 5)
    precision = jnp.block([[alpha * (g1.T @ g1 + jnp.eye(5)), -alpha * g2],
                           [-alpha * g2.T, alpha * g2.T @ g2 + prior * jnp.eye(3)]])
    rhs = jnp.concatenate([alpha * x @ g1, jnp.zeros((4, 3))], axis=1)
    mean = jnp.linalg.solve(precision, rhs.T).T
    np.testing.assert_allclose(solution.states[1], mean[:, :5], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(solution.top, mean[:, 5:], rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(solution.bottom, x)


@pytest.mark.parametrize("clamp", ["classify", "generate"])
def test_bidirectional_equilibria_are_dense_solves_of_the_hand_written_energy(clamp):
    up, down = _linear(6, 5, 3, 3, key=2), _linear(3, 5, 6, 3, key=3)
    model = pc.BidirectionalModel(up=up, down=down, disc_weight=1.3, gen_weight=0.4, prior_precision=0.2)
    x, y = data(jax.random.key(4), 3, 6, 3)

    def energy(states):  # one sample, written out
        z = states
        disc = sum(jnp.sum((z[k] - up.layers[k - 1](z[k - 1])) ** 2) for k in range(1, 4))
        gen = sum(jnp.sum((z[k - 1] - down.layers[3 - k](z[k])) ** 2) for k in range(1, 4))
        return 0.5 * 1.3 * disc + 0.5 * 0.4 * gen + 0.5 * 0.2 * jnp.sum(z[-1] ** 2)

    if clamp == "classify":
        solution = pc.infer_bidirectional(model, x, solver=pc.NewtonKrylov(rtol=1e-12))
    else:
        solution = pc.infer_bidirectional(model, None, y, solver=pc.NewtonKrylov(rtol=1e-12))
    assert solution.stats.result == pc.RESULTS.converged
    for i in range(3):
        if clamp == "classify":
            def free_energy(v, i=i):
                return energy((x[i], v[:5], v[5:10], v[10:]))
            size = 13
        else:
            def free_energy(v, i=i):
                return energy((v[:6], v[6:11], v[11:16], y[i]))
            size = 16
        v0 = jnp.zeros(size)
        v = v0 - jnp.linalg.solve(jax.hessian(free_energy)(v0), jax.grad(free_energy)(v0))
        states = [s[i] for s in solution.states]
        got = jnp.concatenate(states[1:] if clamp == "classify" else states[:-1])
        np.testing.assert_allclose(got, v, rtol=1e-9, atol=1e-11)


def test_without_the_generative_term_it_is_discriminative_pc():
    up = pc.nn.residual_mlp(6, 8, 3, 4, parameterisation=pc.MuPC(), activation="tanh", dtype=jnp.float64,
                            key=jax.random.key(5))
    model = pc.BidirectionalModel(up=up, down=None, disc_weight=1.0, gen_weight=0.0)
    x, y = data(jax.random.key(6), 4, 6, 3)
    solution = pc.infer_bidirectional(model, x, y, solver=pc.NewtonKrylov(rtol=1e-11))
    reference = pc.infer(up, x, y, solver=pc.NewtonKrylov(rtol=1e-11))
    np.testing.assert_allclose(_flat(solution.states[1:-1]), _flat(reference.activities), rtol=1e-8, atol=1e-10)


def test_the_training_step_applies_the_local_gradient_at_the_equilibrium():
    up, down = _linear(6, 5, 3, 3, key=7), _linear(3, 5, 6, 3, key=8)
    model = pc.BidirectionalModel(up=up, down=down, disc_weight=1.0, gen_weight=0.5)
    x, y = data(jax.random.key(9), 4, 6, 3)
    optimiser = optax.sgd(0.1)
    state = optimiser.init(eqx.filter(model, eqx.is_array))
    new, _, metrics, states = pc.bpc_step(model, state, x, y, optimiser=optimiser, solver=pc.NewtonKrylov(rtol=1e-12))
    assert bool(metrics.updated)

    def energy(m):  # batch mean, written out
        z = states
        disc = sum(jnp.sum((z[k] - jax.vmap(m.up.layers[k - 1])(z[k - 1])) ** 2) for k in range(1, 4))
        gen = sum(jnp.sum((z[k - 1] - jax.vmap(m.down.layers[3 - k])(z[k])) ** 2) for k in range(1, 4))
        return (0.5 * disc + 0.25 * gen) / x.shape[0]

    grads = eqx.filter_grad(energy)(model)
    expected = _flat(eqx.filter(model, eqx.is_array)) - 0.1 * _flat(eqx.filter(grads, eqx.is_array))
    np.testing.assert_allclose(_flat(eqx.filter(new, eqx.is_array)), expected, rtol=1e-12, atol=1e-14)


def test_ancestral_samples_have_the_generative_models_covariance():
    alpha, prior = 2.0, 0.5
    down = _linear(2, 4, 3, 2, key=10)
    model = pc.BidirectionalModel(up=None, down=down, disc_weight=0.0, gen_weight=alpha, prior_precision=prior)
    samples = pc.ancestral_sample(model, jax.random.key(11), 200_000, (2,))
    g2, g1 = _matrix(down.layers[0], 2), _matrix(down.layers[1], 4)
    expected = (g1 @ g2 @ g2.T @ g1.T) / prior + (g1 @ g1.T) / alpha + jnp.eye(3) / alpha
    covariance = jnp.cov(samples[0].T)
    # Monte-Carlo error of a covariance entry from n samples: ≈ √((Σ_ii Σ_jj + Σ_ij²)/n).
    scale = jnp.sqrt((jnp.outer(jnp.diag(expected), jnp.diag(expected)) + expected**2) / 200_000)
    assert bool(jnp.all(jnp.abs(covariance - expected) <= 5 * scale))
    assert bool(jnp.all(jnp.abs(jnp.mean(samples[0], axis=0)) <= 5 * jnp.sqrt(jnp.diag(expected) / 200_000)))


def test_refusals(unchecked):
    down = _linear(3, 5, 7, 2, key=0)
    with pytest.raises(ValueError, match="at least one"):
        pc.BidirectionalModel(up=None, down=None)
    with pytest.raises(ValueError, match="disc_weight"):
        pc.BidirectionalModel(up=None, down=down, disc_weight=1.0)
    model = pc.BidirectionalModel(up=None, down=down, disc_weight=0.0, prior_precision=1.0)
    x = jnp.ones((2, 7))
    with pytest.raises(ValueError, match="top_shape"):
        pc.infer_bidirectional(model, x, solver=pc.NewtonKrylov())
    with pytest.raises(ValueError, match="clamp at least one end"):
        pc.infer_bidirectional(model, solver=pc.NewtonKrylov())
    with pytest.raises(ValueError, match="plain solver"):
        pc.infer_bidirectional(model, x, solver=pc.NewtonKrylov(preconditioner=pc.DepthPreconditioner()),
                               top_shape=(3,))
