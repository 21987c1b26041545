"""The PC variants on the convolutional ResNet and the transformer builders: each one's
defining identity, checked on the architecture (error coordinates reach the same
equilibrium, iPC at rate zero is gradient-descent inference, the amortiser starts at the
feedforward state, precisions weight the hidden terms, MCPC at vanishing temperature
settles at the equilibrium)."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import pcscale as pc


def _flat(tree):
    return jnp.concatenate([jnp.ravel(leaf) for leaf in jax.tree.leaves(tree)])


def _resnet():
    model = pc.nn.resnet(2, 3, 4, image_size=8, n_res=3, activation="tanh", parameterisation=pc.MuPC(),
                         dtype=jnp.float64, key=jax.random.key(0))
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.standard_normal((2, 2, 8, 8)))
    y = jnp.asarray(np.eye(4)[rng.integers(0, 4, 2)])
    return model, x, y


def _transformer():
    model = pc.nn.transformer(7, 8, 2, 2, max_len=5, parameterisation=pc.CompleteP(), dtype=jnp.float64,
                              key=jax.random.key(2))
    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.integers(0, 7, (2, 5)), jnp.int32)
    y = jnp.asarray(np.eye(7)[rng.integers(0, 7, (2, 5))])
    return model, x, y


BUILDERS = [pytest.param(_resnet, id="resnet"), pytest.param(_transformer, id="transformer")]


@pytest.mark.parametrize("build", BUILDERS)
def test_error_coordinates_reach_the_same_equilibrium(build):
    model, x, y = build()
    reference = pc.infer(model, x, y, solver=pc.NewtonKrylov(rtol=1e-10))
    errors = pc.infer(model, x, y, solver=pc.ErrorCoordinates(pc.NewtonKrylov(), rtol=1e-10))
    assert reference.result == pc.RESULTS.converged and errors.result == pc.RESULTS.converged
    np.testing.assert_allclose(_flat(errors.activities), _flat(reference.activities), rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("build", BUILDERS)
def test_ipc_at_rate_zero_is_gradient_descent_inference(build):
    model, x, y = build()
    optimiser = optax.sgd(0.0)
    state = optimiser.init(eqx.filter(model, eqx.is_array))
    *_, z = pc.ipc_step(model, state, x, y, optimiser=optimiser, step_size=0.1, iterations=4)
    expected = pc.infer(model, x, y, solver=pc.GradientDescent(step_size=0.1, rtol=0.0, max_steps=4))
    np.testing.assert_allclose(_flat(z), _flat(expected.activities), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("build", BUILDERS)
def test_the_amortiser_starts_at_the_feedforward_state(build):
    model, x, _ = build()
    np.testing.assert_array_equal(_flat(pc.Amortiser.from_model(model)(x)), _flat(model.init_activities(x)))


@pytest.mark.parametrize("build", BUILDERS)
def test_a_hidden_precision_weights_every_hidden_term(build):
    model, x, y = build()
    keys = jax.random.split(jax.random.key(4), model.num_hidden)
    z = tuple(a + 0.1 * jax.random.normal(k, a.shape, a.dtype)
              for a, k in zip(model.init_activities(x), keys, strict=True))
    weighted = pc.with_precisions(model, hidden=2.5, output=3.0)
    # Written out: the hidden errors from the layers, the output term from the readout.
    inputs = (x,) + z
    hidden = sum(0.5 * jnp.sum((z_l - jax.vmap(layer)(prev)) ** 2)
                 for layer, prev, z_l in zip(model.layers[:-1], inputs[:-1], z, strict=True))
    logits = jax.vmap(model.layers[-1])(inputs[-1])
    output = -jnp.sum(y * jax.nn.log_softmax(logits, axis=-1))
    expected = (2.5 * hidden + 3.0 * output) / x.shape[0]
    assert float(weighted.energy(z, x, y)) == pytest.approx(float(expected), rel=1e-12)


@pytest.mark.parametrize("build", BUILDERS)
def test_mcpc_at_vanishing_temperature_settles_at_the_equilibrium(build):
    model, x, y = build()
    chain = pc.mcpc_sample(model, x, y, key=jax.random.key(5), step_size=0.1, burn_in=3000, samples=1,
                           temperature=1e-24)
    reference = pc.infer(model, x, y, solver=pc.NewtonKrylov(rtol=1e-12))
    last = tuple(s[-1] for s in chain.samples)
    np.testing.assert_allclose(_flat(last), _flat(reference.activities), rtol=1e-6, atol=1e-8)
