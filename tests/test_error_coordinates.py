"""Inference in error coordinates (error-based PC): the same equilibria as in the states,
the first gradient step from the feedforward state is backpropagation, and the residual
in the errors, all against hand-written energies and jax.grad."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import data

import pcscale as pc


def _flat(tree):
    return jnp.concatenate([jnp.ravel(leaf) for leaf in jax.tree.leaves(tree)])


def _network(build=pc.nn.residual_mlp, energy=pc.MSE(), depth=6, key=0):
    return build(10, 24, 4, depth, parameterisation=pc.MuPC(), activation="tanh", output_energy=energy,
                 dtype=jnp.float64, key=jax.random.key(key))


def _hand_rollout(model, x, errors):
    """States z_l = f_l(z_{l−1}) + ε_l and the prediction, written out from the layers."""
    states, z = [], x
    for layer, e in zip(model.layers[:-1], errors, strict=True):
        z = jax.vmap(layer)(z) + e
        states.append(z)
    return tuple(states), jax.vmap(model.layers[-1])(z)


def _hand_loss(prediction, y, cross_entropy):
    if cross_entropy:
        return -jnp.sum(y * jax.nn.log_softmax(prediction, axis=-1), axis=-1)
    return 0.5 * jnp.sum((y - prediction) ** 2, axis=-1)


def _hand_energy(model, x, y, z, cross_entropy=False):
    """Batch-mean F written out from the layers."""
    inputs = (x,) + tuple(z)
    hidden = sum(0.5 * jnp.sum((z_l - jax.vmap(layer)(prev)) ** 2)
                 for layer, prev, z_l in zip(model.layers[:-1], inputs[:-1], z, strict=True))
    output = model.output_precision * jnp.sum(_hand_loss(jax.vmap(model.layers[-1])(inputs[-1]), y, cross_entropy))
    return (hidden + output) / x.shape[0]


@pytest.mark.parametrize("energy", [pc.MSE(), pc.CrossEntropy()], ids=["mse", "ce"])
def test_the_certified_equilibrium_in_the_errors_is_the_one_in_the_states(energy):
    cross_entropy = isinstance(energy, pc.CrossEntropy)
    model = _network(energy=energy)
    x, y = data(jax.random.key(1), 5, 10, 4, one_hot=True)
    reference = pc.infer(model, x, y, solver=pc.NewtonKrylov(rtol=1e-11))
    # From the feedforward state and from a random start, by Newton and by gradient descent.
    keys = jax.random.split(jax.random.key(2), model.num_hidden)
    start = tuple(a + 0.5 * jax.random.normal(k, a.shape, a.dtype)
                  for a, k in zip(model.init_activities(x), keys, strict=True))
    runs = [
        pc.infer(model, x, y, solver=pc.ErrorCoordinates(pc.NewtonKrylov(), rtol=1e-11)),
        pc.infer(model, x, y, solver=pc.ErrorCoordinates(pc.NewtonKrylov(), rtol=1e-11), z0=start),
        pc.infer(model, x, y, solver=pc.ErrorCoordinates(pc.GradientDescent(step_size=0.3), rtol=1e-11)),
    ]
    gradient = eqx.filter_grad(lambda m, z: _hand_energy(m, x, y, z, cross_entropy))
    expected = _flat(gradient(model, reference.activities))
    initial = float(jnp.linalg.norm(_flat(jax.grad(lambda z: _hand_energy(model, x, y, z, cross_entropy))(
        model.init_activities(x)))))
    for run in runs:
        assert run.result == pc.RESULTS.converged
        # The certificate holds for the hand-written energy of the returned states.
        residual = jnp.linalg.norm(_flat(jax.grad(lambda z: _hand_energy(model, x, y, z, cross_entropy))(
            run.activities)))
        assert float(residual) <= 1e-11 * initial * 1.0001
        np.testing.assert_allclose(_flat(run.activities), _flat(reference.activities), rtol=1e-8, atol=1e-10)
        got = _flat(gradient(model, run.activities))
        assert float(jnp.linalg.norm(got - expected) / jnp.linalg.norm(expected)) <= 1e-8


def test_one_gradient_step_on_the_errors_from_the_feedforward_state_is_backpropagation():
    """From ε = 0 one step of size β gives ε_l = −β·λ·∂ℓ_i/∂z_l (the backpropagated error,
    exactly), and at that state the PC weight gradient is β·λ times the BP gradient for
    the first layer (exactly: its input is clamped), to first order in β for the other
    hidden layers, and λ times it to first order for the readout:
    ∂F/∂θ_l = −(1/B)Σ_i ε_lᵀ∂f_l/∂θ_l = β·λ·∂𝓛/∂θ_l + O(β²), while the readout's term
    λ·∂ℓ/∂θ_L is evaluated at z_H = feedforward + O(β)."""
    precision = 2.0
    network = _network(depth=4)
    model = pc.PCModel(network.layers, network.output_energy, output_precision=precision)
    x, y = data(jax.random.key(3), 5, 10, 4)
    zero = tuple(jnp.zeros_like(a) for a in model.init_activities(x))
    backprop_errors = jax.grad(lambda e: precision * jnp.sum(_hand_loss(_hand_rollout(model, x, e)[1], y, False)))(zero)
    loss = lambda m: jnp.mean(_hand_loss(_hand_rollout(m, x, zero)[1], y, False))  # noqa: E731
    bp = eqx.filter_grad(loss)(model)

    def errors_after_one_step(beta):
        solver = pc.ErrorCoordinates(pc.GradientDescent(step_size=beta), rtol=0.0, max_steps=1)
        solution = pc.infer(model, x, y, solver=solver)
        assert int(solution.steps) == 1
        return solution.activities, model.errors(solution.activities, x)

    misfits = []
    for beta in (1e-3, 5e-4):
        z, errors = errors_after_one_step(beta)
        np.testing.assert_allclose(_flat(errors), -beta * _flat(backprop_errors), rtol=1e-10, atol=1e-14)
        pc_grad = eqx.filter_grad(lambda m: _hand_energy(m, x, y, z))(model)
        hidden = [(_flat(g) / (beta * precision), _flat(b)) for g, b in zip(pc_grad.layers[:-1], bp.layers[:-1],
                                                                                strict=True)]
        readout = (_flat(pc_grad.layers[-1]) / precision, _flat(bp.layers[-1]))
        misfits.append([float(jnp.linalg.norm(g - b) / jnp.linalg.norm(b)) for g, b in hidden + [readout]])
    misfits = np.array(misfits)
    # The first layer's input x is clamped, so its gradient is exactly β·λ times BP's.
    assert np.all(misfits[:, 0] < 1e-9)
    # Every other layer is first order: small, and halving β halves the misfit.
    assert np.all(misfits[0, 1:] < 0.05)
    np.testing.assert_allclose(misfits[1, 1:] / misfits[0, 1:], 0.5, atol=0.05)


def test_the_residual_in_the_errors_is_the_gradient_of_the_hand_written_energy_of_the_errors():
    model = _network(depth=5)
    x, y = data(jax.random.key(4), 3, 10, 4)
    keys = jax.random.split(jax.random.key(5), model.num_hidden)
    z = tuple(a + 0.3 * jax.random.normal(k, a.shape, a.dtype)
              for a, k in zip(model.init_activities(x), keys, strict=True))
    inputs = (x,) + z
    errors = tuple(z_l - jax.vmap(layer)(prev) for layer, prev, z_l in zip(model.layers[:-1], inputs[:-1], z,
                                                                            strict=True))

    def summed_energy_of_errors(e):
        states, _ = _hand_rollout(model, x, e)
        return x.shape[0] * _hand_energy(model, x, y, states)

    expected = jnp.linalg.norm(_flat(jax.grad(summed_energy_of_errors)(errors)))
    assert float(pc.error_residual(model, z, x, y)) == pytest.approx(float(expected), rel=1e-12)


def test_gradient_descent_on_the_errors_needs_far_fewer_steps_than_on_the_states():
    """The conditioning claim of error-based PC, on a deep residual network."""
    model = _network(depth=16)
    x, y = data(jax.random.key(6), 4, 10, 4)
    states = pc.infer(model, x, y, solver=pc.GradientDescent(step_size=0.3, rtol=1e-6, max_steps=50_000))
    errors = pc.infer(model, x, y, solver=pc.ErrorCoordinates(pc.GradientDescent(step_size=0.3), rtol=1e-6))
    assert states.result == pc.RESULTS.converged and errors.result == pc.RESULTS.converged
    assert int(errors.steps) * 10 < int(states.steps)


def test_error_coordinates_refuses_what_it_cannot_run(unchecked):
    with pytest.raises(ValueError, match="preconditioner"):
        pc.ErrorCoordinates(pc.NewtonKrylov(preconditioner=pc.GaussNewtonPreconditioner()))
    with pytest.raises(TypeError, match="ErrorCoordinates and MixedPrecision"):
        pc.ErrorCoordinates(pc.MixedPrecision())
    with pytest.raises(TypeError, match="ErrorCoordinates and MixedPrecision"):
        pc.ErrorCoordinates(pc.ErrorCoordinates())
    with pytest.raises(TypeError, match="solver"):
        pc.ErrorCoordinates("gd")


def test_without_hidden_layers_the_residual_in_the_errors_is_zero():
    model = pc.nn.mlp(4, 8, 2, 1, dtype=jnp.float64, key=jax.random.key(7))
    x, y = data(jax.random.key(8), 3, 4, 2)
    assert float(pc.error_residual(model, (), x, y)) == 0.0


def test_newton_on_the_errors_counts_no_forward_pass_for_its_straight_trials():
    """In the errors the line search moves on a straight line, so its trials cost no
    forward pass beyond their gradient: the linear passes are the two per residual map
    (at the start, per step and per final check) and none for the trials."""
    model = _network(depth=4)
    x, y = data(jax.random.key(9), 4, 10, 4)
    solution = pc.infer(model, x, y, solver=pc.ErrorCoordinates(pc.NewtonKrylov(), rtol=1e-8))
    assert solution.result == pc.RESULTS.converged
    # No preconditioner: no passes of its own, and the straight path sets up with none.
    assert int(solution.vjp_evals) == 2 * (1 + int(solution.steps))
