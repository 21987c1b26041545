import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import data, hand_energy, hand_forward, mse, mup_multipliers, weights_of

import pcscale as pc

D, N, C, L = 6, 16, 3, 4


def _model(parameterisation=None, **kwargs):
    return pc.nn.residual_mlp(D, N, C, L, parameterisation=parameterisation or pc.MuPC(gamma0=2.0),
                              dtype=jnp.float64, key=jax.random.PRNGKey(0), **kwargs)


def _params(model):
    return eqx.filter(model, eqx.is_array)


def test_sgd_applies_the_mupc_rate_to_every_layer():
    model = _model()
    eta = 0.01
    optimiser = pc.make_optimiser(model, pc.SGD(eta))
    grads = jax.tree.map(jnp.ones_like, _params(model))
    updates, _ = optimiser.update(grads, optimiser.init(_params(model)), _params(model))
    rate = eta * 2.0**2 * N  # η·γ0²·N for all layers (docs/background.md §3.1)
    for layer in updates.layers:
        np.testing.assert_allclose(layer.module.weight, -rate, rtol=1e-12)


def test_adam_first_step_has_the_reference_rate_and_scaled_eps():
    model = _model()
    eta = 1e-3
    optimiser = pc.make_optimiser(model, pc.Adam(eta))
    key = jax.random.PRNGKey(1)
    grads = jax.tree.map(lambda w: jax.random.normal(key, w.shape, w.dtype), _params(model))
    updates, _ = optimiser.update(grads, optimiser.init(_params(model)), _params(model))
    # The first Adam step is −lr·g/(|g| + ε) ≈ −lr·sign(g), lr = η/√(N·L) with skips.
    rate = eta / np.sqrt(N * L)
    for update, grad in zip(weights_of(updates), weights_of(grads)):
        np.testing.assert_allclose(update, -rate * jnp.sign(grad), rtol=1e-4)


def test_per_role_adam_gives_input_and_output_the_base_rate():
    model = _model(pc.MuPC(adam_rule=pc.AdamRule.PER_ROLE))
    optimiser = pc.make_optimiser(model, pc.Adam(1e-3))
    grads = jax.tree.map(jnp.ones_like, _params(model))
    updates, _ = optimiser.update(grads, optimiser.init(_params(model)), _params(model))
    rates = [float(-u.mean()) for u in weights_of(updates)]
    np.testing.assert_allclose(rates, [1e-3, 1e-3 / np.sqrt(N * L), 1e-3 / np.sqrt(N * L), 1e-3], rtol=1e-6)


def test_from_optax_scales_any_optimiser():
    model = _model()
    optimiser = pc.make_optimiser(model, pc.FromOptax(optax.sgd, 0.01, adaptive=False))
    grads = jax.tree.map(jnp.ones_like, _params(model))
    updates, _ = optimiser.update(grads, optimiser.init(_params(model)), _params(model))
    np.testing.assert_allclose(weights_of(updates)[0], -0.01 * 4.0 * N, rtol=1e-12)


def test_pc_step_updates_with_the_energy_gradient_at_equilibrium():
    model = _model(pc.MuPC())
    x, y = data(jax.random.PRNGKey(2), 8, D, C)
    eta = 0.05
    optimiser = pc.make_optimiser(model, pc.SGD(eta))
    solver = pc.GradientDescent(step_size=0.3, rtol=1e-8, max_steps=20_000)
    new, _, metrics = pc.pc_step(model, optimiser.init(_params(model)), x, y, optimiser=optimiser, solver=solver)
    z = pc.infer(model, x, y, solver=solver).activities
    a = mup_multipliers(D, N, L)
    grads = jax.grad(lambda w: hand_energy(z, w, a, x, y, skips=True))(weights_of(model))
    for w_new, w_old, g in zip(weights_of(new), weights_of(model), grads):
        np.testing.assert_allclose(w_new, w_old - eta * N * g, rtol=1e-9, atol=1e-12)
    assert bool(metrics.updated) and metrics.inference.result == pc.RESULTS.converged
    np.testing.assert_allclose(metrics.loss, jnp.mean(mse(model(x), y)), rtol=1e-10)


def test_bp_step_updates_with_the_loss_gradient():
    model = _model(pc.MuPC())
    x, y = data(jax.random.PRNGKey(2), 8, D, C)
    optimiser = pc.make_optimiser(model, pc.SGD(0.05))
    new, _, metrics = pc.bp_step(model, optimiser.init(_params(model)), x, y, optimiser=optimiser)
    a = mup_multipliers(D, N, L)

    def loss(weights):
        return jnp.mean(mse(hand_forward(weights, a, x, skips=True)[1], y))

    grads = jax.grad(loss)(weights_of(model))
    for w_new, w_old, g in zip(weights_of(new), weights_of(model), grads):
        np.testing.assert_allclose(w_new, w_old - 0.05 * N * g, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(metrics.loss, loss(weights_of(model)), rtol=1e-12)


def _same_leaves(a, b) -> bool:
    leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
    return len(leaves_a) == len(leaves_b) and all(np.array_equal(u, v) for u, v in zip(leaves_a, leaves_b))


def test_bp_step_equals_a_hand_written_optax_step_exactly():
    # An accepted bp_step is a plain optax step, bit for bit: its checks and its guard
    # against non-finite updates change nothing in the weights or the optimiser state.
    model = _model(pc.MuPC())
    x, y = data(jax.random.PRNGKey(7), 8, D, C)
    optimiser = pc.make_optimiser(model, pc.Adam(1e-2))
    params, static = eqx.partition(model, eqx.is_array)

    def loss(params, x, y):  # the batch mean of ½‖y − ŷ‖² over the same network's forward pass
        network = eqx.combine(params, static)
        return jnp.mean(0.5 * jnp.sum((y - jax.vmap(network.forward_one)(x)) ** 2, axis=-1))

    @jax.jit  # x and y as arguments, as bp_step takes them (closed over, XLA folds them in)
    def plain_step(params, state, x, y):
        updates, state = optimiser.update(jax.grad(loss)(params, x, y), state, params)
        return optax.apply_updates(params, updates), state

    state = bp_state = optimiser.init(params)
    for _ in range(3):  # the second and third steps start from Adam states that are not zero
        params, state = plain_step(params, state, x, y)
        model, bp_state, metrics = pc.bp_step(model, bp_state, x, y, optimiser=optimiser)
        assert bool(metrics.updated)
        assert _same_leaves(_params(model), params) and _same_leaves(bp_state, state)


def test_bp_step_refuses_a_non_finite_gradient():
    # An infinite weight makes the loss and its gradient non-finite from finite inputs;
    # the step keeps the old weights and optimiser state, also inside the caller's jit.
    model = _model(pc.MuPC())
    model = eqx.tree_at(lambda m: m.layers[-1].module.weight, model,
                        replace_fn=lambda weight: weight.at[0, 0].set(jnp.inf))
    x, y = data(jax.random.PRNGKey(8), 8, D, C)
    optimiser = pc.make_optimiser(model, pc.Adam(1e-2))
    state = optimiser.init(_params(model))
    step = lambda m, s: pc.bp_step(m, s, x, y, optimiser=optimiser)  # noqa: E731
    for new, new_state, metrics in (step(model, state), jax.jit(step)(model, state)):
        assert not bool(metrics.updated) and not bool(jnp.isfinite(metrics.grad_norm))
        assert _same_leaves(_params(new), _params(model)) and _same_leaves(new_state, state)


def test_pc_step_refuses_to_update_from_a_diverged_state():
    model = _model(pc.MuPC())
    x, y = data(jax.random.PRNGKey(3), 8, D, C)
    optimiser = pc.make_optimiser(model, pc.Adam(1e-3))
    state = optimiser.init(_params(model))
    solver = pc.GradientDescent(step_size=3.0, max_steps=1000)
    new, new_state, metrics = pc.pc_step(model, state, x, y, optimiser=optimiser, solver=solver)
    assert metrics.inference.result == pc.RESULTS.diverged and not bool(metrics.updated)
    assert all(np.array_equal(u, v) for u, v in zip(jax.tree.leaves(_params(new)), jax.tree.leaves(_params(model))))
    assert all(np.array_equal(u, v) for u, v in zip(jax.tree.leaves(new_state), jax.tree.leaves(state)))
    forced, _, metrics = pc.pc_step(model, state, x, y, optimiser=optimiser, solver=solver, allow_diverged=True)
    assert bool(metrics.updated)
    assert not np.array_equal(weights_of(forced)[-1], weights_of(model)[-1])


def test_train_compares_both_modes_and_keeps_the_twin_on_its_own_trajectory():
    model = _model(pc.MuPC())
    x, y = data(jax.random.PRNGKey(4), 8, D, C)
    optimiser = pc.make_optimiser(model, pc.Adam(1e-2))
    solver = pc.GradientDescent(step_size=0.3, rtol=1e-6, max_steps=5000)
    steps = 4
    run = pc.train(model, (x, y), optimiser=optimiser, solver=solver, steps=steps, progress=False)
    assert run.history.lockstep.cosine.shape == (steps,)
    assert run.history.lockstep.layer_cosines.shape == (steps, L)
    # At t = 0 both twins have the same weights, so the two modes coincide (up to the
    # reduction order of two separately fused gradient computations on accelerators).
    np.testing.assert_allclose(run.history.lockstep.cosine[0], run.history.trajectory.cosine[0], rtol=1e-12)
    np.testing.assert_allclose(run.history.lockstep.layer_cosines[0], run.history.trajectory.layer_cosines[0], rtol=1e-12)
    # The BP twin follows plain BP steps from the same start.
    bp_model, state = model, optimiser.init(_params(model))
    losses = []
    for _ in range(steps):
        bp_model, state, metrics = pc.bp_step(bp_model, state, x, y, optimiser=optimiser)
        losses.append(float(metrics.loss))
    np.testing.assert_allclose(run.history.bp_loss, losses, rtol=1e-10)
    np.testing.assert_allclose(run.final_bp_loss, bp_model.loss(x, y), rtol=1e-10)
    # The PC model follows PC steps.
    pc_model, state = model, optimiser.init(_params(model))
    for _ in range(steps):
        pc_model, state, _ = pc.pc_step(pc_model, state, x, y, optimiser=optimiser, solver=solver)
    np.testing.assert_allclose(run.final_pc_loss, pc_model.loss(x, y), rtol=1e-10)
    # Metrics are measured before each update: the step-0 loss is the initial loss.
    np.testing.assert_allclose(run.history.pc.loss[0], model.loss(x, y), rtol=1e-10)


def test_train_accepts_an_iterable_of_batches_and_checks_its_length():
    model = _model(pc.MuPC())
    batches = [data(jax.random.PRNGKey(i), 4, D, C) for i in range(3)]
    optimiser = pc.make_optimiser(model, pc.SGD(0.01))
    solver = pc.GradientDescent(step_size=0.3, rtol=1e-4, max_steps=500)
    run = pc.train(model, batches, optimiser=optimiser, solver=solver, steps=3, progress=False)
    bp_model, state, losses = model, optimiser.init(_params(model)), []
    for x, y in batches:
        bp_model, state, metrics = pc.bp_step(bp_model, state, x, y, optimiser=optimiser)
        losses.append(float(metrics.loss))
    np.testing.assert_allclose(run.history.bp_loss, losses, rtol=1e-10)
    np.testing.assert_allclose(run.final_bp_loss, bp_model.loss(*batches[-1]), rtol=1e-10)
    with pytest.raises(ValueError, match="ran out of batches after 3 steps"):
        pc.train(model, batches, optimiser=optimiser, solver=solver, steps=5, progress=False)


def test_pc_step_jit_and_eager_agree():
    model = _model(pc.MuPC())
    x, y = data(jax.random.PRNGKey(6), 4, D, C)
    optimiser = pc.make_optimiser(model, pc.Adam(1e-2))
    state = optimiser.init(_params(model))
    solver = pc.GradientDescent(step_size=0.3, rtol=0.0, max_steps=4)
    jitted, _, jit_metrics = pc.pc_step(model, state, x, y, optimiser=optimiser, solver=solver)
    with jax.disable_jit():
        eager, _, eager_metrics = pc.pc_step(model, state, x, y, optimiser=optimiser, solver=solver)
    for u, v in zip(weights_of(jitted), weights_of(eager)):
        np.testing.assert_allclose(u, v, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(jit_metrics.energy, eager_metrics.energy, rtol=1e-10)


def test_training_reports_the_fraction_of_steps_at_a_certified_equilibrium():
    model = _model(activation="tanh")
    x, y = data(jax.random.PRNGKey(1), 8, D, C)
    optimiser = pc.make_optimiser(model, pc.SGD(0.01))
    short = pc.GradientDescent(step_size=0.1, rtol=1e-8, max_steps=3)  # cannot reach it
    with pytest.warns(UserWarning, match="did not meet its tolerance in 4 of 4"):
        run = pc.train(model, (x, y), optimiser=optimiser, solver=short, steps=4, progress=False)
    assert run.converged_fraction == 0.0
    assert np.all(np.asarray(run.history.pc.inference.relative_residual) > 1e-8)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        run = pc.train(model, (x, y), optimiser=optimiser, solver=pc.NewtonKrylov(rtol=1e-8), steps=4, progress=False)
    assert run.converged_fraction == 1.0
    assert np.all(np.asarray(run.history.pc.inference.relative_residual) <= 1e-8)
