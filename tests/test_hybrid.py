"""Hybrid (amortised) PC: the amortiser starts at the feedforward state, its loss is the
hand-written distance to the equilibrium, the equilibrium does not depend on the guess,
and a trained amortiser reaches the same certified tolerance in fewer evaluations on
held-out inputs."""

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


def _model(activation="tanh", depth=4, width=16, key=0):
    return pc.nn.residual_mlp(6, width, 3, depth, parameterisation=pc.MuPC(), activation=activation,
                              dtype=jnp.float64, key=jax.random.key(key))


def test_the_amortiser_starts_at_the_feedforward_state_and_its_loss_is_the_distance_to_the_target():
    model = _model()
    x, _ = data(jax.random.key(1), 5, 6, 3)
    amortiser = pc.Amortiser.from_model(model)
    guess = amortiser(x)
    np.testing.assert_array_equal(_flat(guess), _flat(model.init_activities(x)))
    keys = jax.random.split(jax.random.key(2), len(guess))
    target = tuple(g + jax.random.normal(k, g.shape, g.dtype) for g, k in zip(guess, keys, strict=True))
    expected = sum(0.5 * jnp.sum((t - g) ** 2) for t, g in zip(target, guess, strict=True)) / x.shape[0]
    assert float(amortiser.loss(x, target)) == pytest.approx(float(expected), rel=1e-13)


def test_the_equilibrium_is_the_generators_whatever_the_guess():
    model = _model()
    x, y = data(jax.random.key(3), 5, 6, 3)
    amortiser = pc.Amortiser.from_model(_model(key=7))  # another network's guesses: far off
    optimiser, amortiser_optimiser = optax.sgd(0.0), optax.adam(1e-3)
    state = optimiser.init(eqx.filter(model, eqx.is_array))
    a_state = amortiser_optimiser.init(eqx.filter(amortiser, eqx.is_array))
    solver = pc.NewtonKrylov(rtol=1e-10)
    *_, metrics, z = pc.hybrid_step(model, amortiser, state, a_state, x, y, optimiser=optimiser,
                                    amortiser_optimiser=amortiser_optimiser, solver=solver, compare=True)
    reference = pc.infer(model, x, y, solver=solver)
    assert metrics.pc.inference.result == pc.RESULTS.converged and metrics.cold.result == pc.RESULTS.converged
    np.testing.assert_allclose(_flat(z), _flat(reference.activities), rtol=1e-8, atol=1e-10)
    # Certified relative to the feedforward residual, like a cold solve.
    assert float(metrics.pc.inference.initial_residual) == pytest.approx(float(reference.stats.initial_residual))


def test_a_trained_amortiser_saves_evaluations_on_held_out_inputs():
    """A linear generator with targets a fixed linear function of the inputs: the
    equilibrium is then a function of x that the amortiser can learn."""
    model = _model(activation="linear", depth=3)
    teacher = jax.random.normal(jax.random.key(4), (3, 6), jnp.float64)

    def batch(key, size):
        x = jax.random.normal(key, (size, 6), jnp.float64)
        return x, x @ teacher.T

    amortiser = pc.Amortiser.from_model(model)
    optimiser, amortiser_optimiser = optax.sgd(0.0), optax.adam(3e-3)
    state = optimiser.init(eqx.filter(model, eqx.is_array))
    a_state = amortiser_optimiser.init(eqx.filter(amortiser, eqx.is_array))
    solver = pc.GradientDescent(step_size=0.2, rtol=1e-8, max_steps=20_000)
    for key in jax.random.split(jax.random.key(5), 300):
        x, y = batch(key, 32)
        model, amortiser, state, a_state, metrics, _ = pc.hybrid_step(
            model, amortiser, state, a_state, x, y, optimiser=optimiser, amortiser_optimiser=amortiser_optimiser,
            solver=solver)
    x, y = batch(jax.random.key(6), 32)  # held out
    cold = pc.infer(model, x, y, solver=solver)
    warm = pc.infer(model, x, y, solver=solver, z0=amortiser(x))
    assert cold.result == pc.RESULTS.converged and warm.result == pc.RESULTS.converged
    assert int(warm.stats.evaluations) < int(cold.stats.evaluations)
    np.testing.assert_allclose(_flat(warm.activities), _flat(cold.activities), rtol=1e-6, atol=1e-7)


def test_hybrid_step_refuses_a_wrong_amortiser(unchecked):
    model = _model()
    x, y = data(jax.random.key(8), 2, 6, 3)
    optimiser = optax.sgd(0.1)
    state = optimiser.init(eqx.filter(model, eqx.is_array))
    with pytest.raises(TypeError, match="Amortiser"):
        pc.hybrid_step(model, model, state, state, x, y, optimiser=optimiser, amortiser_optimiser=optimiser,
                       solver=pc.NewtonKrylov())
    shallow = pc.Amortiser.from_model(_model(depth=3))
    a_state = optimiser.init(eqx.filter(shallow, eqx.is_array))
    with pytest.raises(ValueError, match="tuple of 3 activity arrays"):
        pc.hybrid_step(model, shallow, state, a_state, x, y, optimiser=optimiser, amortiser_optimiser=optimiser,
                       solver=pc.NewtonKrylov())
