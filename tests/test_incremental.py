"""Incremental PC: with a zero learning rate it is gradient-descent inference step for
step; on a realisable linear regression its weights reach the BP fixed point; the drift
diagnostic is the cosine with the equilibrium gradient."""

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


def _model(activation="tanh", depth=4, key=0):
    return pc.nn.residual_mlp(6, 16, 3, depth, parameterisation=pc.MuPC(), activation=activation,
                              dtype=jnp.float64, key=jax.random.key(key))


def test_with_a_zero_learning_rate_it_is_gradient_descent_inference_step_for_step():
    model = _model()
    x, y = data(jax.random.key(1), 5, 6, 3)
    optimiser = optax.sgd(0.0)
    state = optimiser.init(eqx.filter(model, eqx.is_array))
    beta, steps = 0.2, 7
    new_model, _, metrics, z = pc.ipc_step(model, state, x, y, optimiser=optimiser, step_size=beta, iterations=steps)
    expected = pc.infer(model, x, y, solver=pc.GradientDescent(step_size=beta, rtol=0.0, max_steps=steps))
    np.testing.assert_allclose(_flat(z), _flat(expected.activities), rtol=1e-12, atol=1e-14)
    np.testing.assert_array_equal(_flat(eqx.filter(new_model, eqx.is_array)), _flat(eqx.filter(model, eqx.is_array)))
    # The recorded energies are those of the gradient-descent iterates, written out here.
    iterate = model.init_activities(x)
    for t in range(steps):
        assert float(metrics.energy[t]) == pytest.approx(float(model.energy(iterate, x, y)), rel=1e-12)
        grad = jax.grad(lambda u: jnp.sum(model.sample_energies(u, x, y)))(iterate)
        assert float(metrics.residual[t]) == pytest.approx(float(jnp.linalg.norm(_flat(grad))), rel=1e-12)
        iterate = tuple(a - beta * g for a, g in zip(iterate, grad, strict=True))


def test_one_iteration_applies_the_weight_gradient_at_the_starting_activities():
    model = _model()
    x, y = data(jax.random.key(2), 5, 6, 3)
    optimiser = optax.sgd(0.05)
    state = optimiser.init(eqx.filter(model, eqx.is_array))
    z0 = model.init_activities(x)
    new_model, *_ = pc.ipc_step(model, state, x, y, optimiser=optimiser, step_size=0.1, iterations=1)
    # The hand-written batch-mean energy's weight gradient at the feedforward state.

    def energy(m):
        inputs = (x,) + tuple(z0)
        hidden = sum(0.5 * jnp.sum((z - jax.vmap(layer)(prev)) ** 2)
                     for layer, prev, z in zip(m.layers[:-1], inputs[:-1], z0, strict=True))
        out = jax.vmap(m.layers[-1])(inputs[-1])
        return (hidden + 0.5 * jnp.sum((y - out) ** 2)) / x.shape[0]

    grads = eqx.filter_grad(energy)(model)
    expected = _flat(eqx.filter(model, eqx.is_array)) - 0.05 * _flat(grads)
    np.testing.assert_allclose(_flat(eqx.filter(new_model, eqx.is_array)), expected, rtol=1e-12, atol=1e-15)


def test_on_a_realisable_linear_regression_the_weights_reach_the_bp_fixed_point():
    model = _model(activation="linear", depth=3)
    x, _ = data(jax.random.key(3), 4, 6, 3)
    target = jax.random.normal(jax.random.key(4), (3, 6), jnp.float64) / 3
    y = x @ target.T  # realisable: zero loss is reachable

    def bp_grad_norm(m):
        loss = lambda m: 0.5 * jnp.mean(jnp.sum((y - m(x)) ** 2, axis=-1))  # noqa: E731
        return float(jnp.linalg.norm(_flat(eqx.filter_grad(loss)(m))))

    optimiser = optax.sgd(0.5)
    state = optimiser.init(eqx.filter(model, eqx.is_array))
    start, start_loss = bp_grad_norm(model), float(model.loss(x, y))
    z = None
    for _ in range(40):
        model, state, metrics, z = pc.ipc_step(model, state, x, y, optimiser=optimiser, step_size=0.3,
                                               iterations=50, z0=z)
        assert not bool(metrics.diverged)
    # The loss falls by five orders of magnitude towards its zero minimum, and ∇𝓛 with it.
    assert float(model.loss(x, y)) <= 1e-5 * start_loss
    assert bp_grad_norm(model) <= 1e-3 * start


def test_the_drift_is_the_cosine_with_the_equilibrium_gradient():
    model = _model()
    x, y = data(jax.random.key(5), 5, 6, 3)
    optimiser = optax.sgd(0.0)
    state = optimiser.init(eqx.filter(model, eqx.is_array))
    reference = pc.NewtonKrylov(rtol=1e-10)
    _, _, metrics, _ = pc.ipc_step(model, state, x, y, optimiser=optimiser, step_size=0.2, iterations=3,
                                   reference=reference)
    star = pc.infer(model, x, y, solver=reference).activities
    _, at_star = pc.pc_gradients(model, star, x, y)
    iterate = model.init_activities(x)
    for t in range(3):
        _, here = pc.pc_gradients(model, iterate, x, y)
        u, v = _flat(eqx.filter(here, eqx.is_array)), _flat(eqx.filter(at_star, eqx.is_array))
        assert float(metrics.drift[t]) == pytest.approx(float(u @ v / jnp.linalg.norm(u) / jnp.linalg.norm(v)),
                                                        rel=1e-8)
        grad = jax.grad(lambda u: jnp.sum(model.sample_energies(u, x, y)))(iterate)
        iterate = tuple(a - 0.2 * g for a, g in zip(iterate, grad, strict=True))


def test_ipc_step_refuses_bad_settings(unchecked):
    model = _model()
    x, y = data(jax.random.key(6), 2, 6, 3)
    optimiser = optax.sgd(0.1)
    state = optimiser.init(eqx.filter(model, eqx.is_array))
    with pytest.raises(ValueError, match="step_size"):
        pc.ipc_step(model, state, x, y, optimiser=optimiser, step_size=0.0, iterations=2)
    with pytest.raises(ValueError, match="iterations"):
        pc.ipc_step(model, state, x, y, optimiser=optimiser, step_size=0.1, iterations=0)
    with pytest.raises(TypeError, match="optimiser"):
        pc.ipc_step(model, state, x, y, optimiser="sgd", step_size=0.1, iterations=2)


def test_a_diverging_run_is_reported_and_keeps_its_last_finite_state():
    model = _model()
    x, y = data(jax.random.key(7), 3, 6, 3)
    optimiser = optax.sgd(0.0)
    state = optimiser.init(eqx.filter(model, eqx.is_array))
    _, _, metrics, z = pc.ipc_step(model, state, x, y, optimiser=optimiser, step_size=50.0, iterations=200)
    assert bool(metrics.diverged)
    assert all(bool(jnp.all(jnp.isfinite(a))) for a in z)
