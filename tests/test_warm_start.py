"""Warm starts of PC training steps: `pc_step(z0=...)`, `return_activities` and
`train(warm_start=True)`. A warm start must certify the same thing as a cold one: the
tolerance is relative to the residual at the feedforward state of the current weights."""

import warnings

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import data, hand_energy, hand_forward, mup_multipliers, tree_allclose, weights_of

import pcscale as pc

D, N, C, L, B = 10, 32, 3, 4, 16
RTOL = 1e-8


def _model():
    return pc.nn.residual_mlp(D, N, C, L, parameterisation=pc.MuPC(), activation="tanh", dtype=jnp.float64,
                              key=jax.random.PRNGKey(0))


def _trained(optimiser, steps=3):
    """The model after a few Adam steps (away from initialisation), with its state."""
    model = _model()
    x, y = data(jax.random.PRNGKey(1), B, D, C)
    state = optimiser.init(eqx.filter(model, eqx.is_array))
    for _ in range(steps):
        model, state, _ = pc.bp_step(model, state, x, y, optimiser=optimiser)
    return model, state, x, y


def _hand_residual(model, z, x, y):
    """‖∇_z Σ_i F_i‖ from plain `jax.grad` of the hand-written energy (batch mean × B)."""
    a = mup_multipliers(D, N, L)
    summed = lambda z: B * hand_energy(z, weights_of(model), a, x, y, skips=True)
    return float(jnp.sqrt(sum(jnp.sum(g**2) for g in jax.grad(summed)(tuple(z)))))


def _feedforward(model, x):
    return tuple(hand_forward(weights_of(model), mup_multipliers(D, N, L), x, skips=True)[0])


@pytest.mark.parametrize("solver", [pc.NewtonKrylov(rtol=RTOL), pc.GradientDescent(step_size=0.3, rtol=RTOL,
                                                                                  max_steps=20_000)],
                         ids=["newton_krylov", "gradient_descent"])
def test_a_warm_second_step_certifies_the_feedforward_tolerance_at_fewer_evaluations(solver):
    optimiser = pc.make_optimiser(_model(), pc.Adam(1e-2))
    model, state, x, y = _trained(optimiser)
    first, state1, _, z = pc.pc_step(model, state, x, y, optimiser=optimiser, solver=solver,
                                     return_activities=True)
    _, _, cold, _ = pc.pc_step(first, state1, x, y, optimiser=optimiser, solver=solver, return_activities=True)
    _, _, warm, z_warm = pc.pc_step(first, state1, x, y, optimiser=optimiser, solver=solver, z0=z,
                                    return_activities=True)
    # The tolerance is relative to the feedforward residual at the NEW weights, not at z0.
    residual_ff = _hand_residual(first, _feedforward(first, x), x, y)
    assert _hand_residual(first, z_warm, x, y) <= RTOL * residual_ff
    assert warm.inference.result == pc.RESULTS.converged
    np.testing.assert_allclose(warm.inference.initial_residual, residual_ff, rtol=1e-10)
    np.testing.assert_allclose(warm.inference.relative_residual, warm.inference.residual / residual_ff,
                               rtol=1e-10)
    # The initial energy is the feedforward one (λ·𝓛), so the loss is still 𝓛(θ).
    np.testing.assert_allclose(warm.loss, cold.loss, rtol=1e-12)
    np.testing.assert_allclose(warm.energy, cold.energy, rtol=1e-9)
    assert int(warm.inference.evaluations) < int(cold.inference.evaluations)


def test_starting_from_the_feedforward_state_is_the_cold_step():
    optimiser = pc.make_optimiser(_model(), pc.Adam(1e-2))
    model, state, x, y = _trained(optimiser)
    solver = pc.GradientDescent(step_size=0.3, rtol=RTOL, max_steps=20_000)
    cold_model, cold_state, cold = pc.pc_step(model, state, x, y, optimiser=optimiser, solver=solver)
    warm_model, warm_state, warm = pc.pc_step(model, state, x, y, optimiser=optimiser, solver=solver,
                                              z0=model.init_activities(x))
    # Equal up to rounding, not bitwise: XLA compiles the feedforward pass of
    # `init_activities` and the one inside the step as different programs, which may
    # differ in the last bit (measured: 4e-16 in float64).
    assert tree_allclose(eqx.filter(warm_model, eqx.is_array), eqx.filter(cold_model, eqx.is_array),
                         rtol=1e-12, atol=1e-15)
    assert tree_allclose(warm_state, cold_state, rtol=1e-12, atol=1e-15)
    for name in ("energy", "loss", "grad_norm"):
        np.testing.assert_allclose(getattr(warm, name), getattr(cold, name), rtol=1e-12)
    for name in ("initial_residual", "initial_energy"):
        np.testing.assert_allclose(getattr(warm.inference, name), getattr(cold.inference, name), rtol=1e-12)
    np.testing.assert_allclose(warm.inference.residual, cold.inference.residual, rtol=1e-4)  # ~1e-10: rounding
    assert warm.inference.result == cold.inference.result == pc.RESULTS.converged
    assert int(warm.inference.steps) == int(cold.inference.steps)
    # The only difference in cost: the residual at the feedforward state is evaluated once more.
    assert int(warm.inference.grad_evals) == int(cold.inference.grad_evals) + 1


def test_bad_starting_activities_are_refused_with_the_expected_shape(unchecked):
    model = _model()
    optimiser = pc.make_optimiser(model, pc.SGD(0.1))
    state = optimiser.init(eqx.filter(model, eqx.is_array))
    x, y = data(jax.random.PRNGKey(1), B, D, C)
    z = model.init_activities(x)
    step = lambda z0: pc.pc_step(model, state, x, y, optimiser=optimiser, solver=pc.GradientDescent(), z0=z0)
    with pytest.raises(ValueError, match=r"`z\[1\]` has shape \(16, 31\), expected \(16, 32\)"):
        step((z[0], z[1][:, :-1]) + tuple(z[2:]))
    with pytest.raises(ValueError, match=rf"tuple of {len(z)} activity arrays"):
        step(tuple(z[:-1]))
    with pytest.raises(TypeError, match="`z0` must be a tuple of batched activity arrays"):
        step(z[0])
    with pytest.raises(Exception, match=r"`z0\[0\]` contains NaN or inf"):
        step((z[0].at[0, 0].set(jnp.nan),) + tuple(z[1:]))


def test_warm_start_training_refuses_an_iterable_of_batches():
    model = _model()
    x, y = data(jax.random.PRNGKey(1), B, D, C)
    with pytest.raises(ValueError, match="`warm_start=True` needs a fixed batch"):
        pc.train(model, [(x, y), (x, y)], optimiser=pc.make_optimiser(model, pc.SGD(0.1)),
                 solver=pc.NewtonKrylov(), steps=2, warm_start=True, progress=False)


def test_warm_start_training_reaches_the_cold_weights_at_fewer_evaluations():
    model = _model()
    x, y = data(jax.random.PRNGKey(1), B, D, C)
    optimiser = pc.make_optimiser(model, pc.Adam(1e-2))
    solver = pc.NewtonKrylov(rtol=RTOL)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every step converged, no failure
        cold = pc.train(model, (x, y), optimiser=optimiser, solver=solver, steps=6, progress=False)
        warm = pc.train(model, (x, y), optimiser=optimiser, solver=solver, steps=6, progress=False,
                        warm_start=True)
    for w_warm, w_cold in zip(weights_of(warm.pc_model), weights_of(cold.pc_model)):
        np.testing.assert_allclose(w_warm, w_cold, rtol=1e-6, atol=1e-9)
    # The BP twin does not depend on inference at all.
    assert tree_allclose(eqx.filter(warm.bp_model, eqx.is_array), eqx.filter(cold.bp_model, eqx.is_array),
                         rtol=0, atol=0)
    assert bool(jnp.all(warm.history.pc.inference.relative_residual <= RTOL))
    np.testing.assert_allclose(warm.history.pc.loss, cold.history.pc.loss, rtol=1e-6)
    # Step 0 starts cold in both; every later warm step is cheaper.
    warm_evals = np.asarray(warm.history.pc.inference.evaluations)
    cold_evals = np.asarray(cold.history.pc.inference.evaluations)
    assert warm_evals[0] == cold_evals[0] and np.all(warm_evals[1:] < cold_evals[1:])


def test_an_exact_method_ignores_the_warm_start_and_forms_no_activities():
    linear = pc.nn.mlp(D, N, C, 3, parameterisation=pc.MuPC(), activation="linear", use_bias=False,
                       dtype=jnp.float64, key=jax.random.PRNGKey(0))
    x, y = data(jax.random.PRNGKey(1), B, D, C)
    optimiser = pc.make_optimiser(linear, pc.SGD(0.05))
    state = optimiser.init(eqx.filter(linear, eqx.is_array))
    exact = pc.theory.ClosedForm()
    cold_model, _, cold, none = pc.pc_step(linear, state, x, y, optimiser=optimiser, solver=exact,
                                           return_activities=True)
    start = tuple(jnp.ones_like(z) for z in linear.init_activities(x))
    warm_model, _, warm = pc.pc_step(linear, state, x, y, optimiser=optimiser, solver=exact, z0=start)
    assert none is None and float(warm.energy) == float(cold.energy)
    assert tree_allclose(eqx.filter(warm_model, eqx.is_array), eqx.filter(cold_model, eqx.is_array), rtol=0, atol=0)
