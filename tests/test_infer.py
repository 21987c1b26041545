import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import SOLVER_IDS, all_solvers, data, hand_energy, mup_multipliers, tree_allclose, weights_of

import pcscale as pc

D, C = 6, 3


def _linear(width, depth, *, precision=1.0, parameterisation=None, skips=False, seed=0):
    builder = pc.nn.residual_mlp if skips else pc.nn.mlp
    return builder(D, width, C, depth, parameterisation=parameterisation or pc.MuPC(), activation="linear",
                   output_precision=precision, dtype=jnp.float64, key=jax.random.PRNGKey(seed))


@pytest.mark.parametrize("name", SOLVER_IDS)
def test_one_hidden_layer_reaches_the_linear_solution(name):
    lam = 0.7
    model = _linear(8, 2, precision=lam, parameterisation=pc.SP())
    solver = all_solvers(model)[name]
    x, y = data(jax.random.PRNGKey(1), 5, D, C)
    A1, A2 = weights_of(model)  # SP: multipliers 1
    # Minimiser of ½‖z − A1x‖² + λ/2‖y − A2 z‖²: (I + λA2ᵀA2) z = A1 x + λA2ᵀ y.
    lhs = jnp.eye(8) + lam * A2.T @ A2
    rhs = x @ A1.T + lam * y @ A2
    expected = jnp.linalg.solve(lhs, rhs.T).T
    solution = pc.infer(model, x, y, solver=solver)
    assert solution.result == pc.RESULTS.converged
    np.testing.assert_allclose(solution.activities[0], expected, rtol=1e-7, atol=1e-8)


@pytest.mark.parametrize("skips", [False, True])
def test_two_hidden_layers_reach_the_two_by_two_block_solution(skips):
    lam, N = 1.3, 6
    model = _linear(N, 3, precision=lam, skips=skips)
    x, y = data(jax.random.PRNGKey(2), 4, D, C)
    W1, W2, W3 = weights_of(model)
    a1, a2, a3 = mup_multipliers(D, N, 3, skips=skips)
    A1, A3 = a1 * W1, a3 * W3
    A2 = (jnp.eye(N) if skips else 0) + a2 * W2
    I = jnp.eye(N)
    # [[I + A2ᵀA2, −A2ᵀ], [−A2, I + λA3ᵀA3]] [z1; z2] = [A1x; λA3ᵀy]
    H = jnp.block([[I + A2.T @ A2, -A2.T], [-A2, I + lam * A3.T @ A3]])
    b = jnp.concatenate([x @ A1.T, lam * y @ A3], axis=1)
    expected = jnp.linalg.solve(H, b.T).T
    solution = pc.infer(model, x, y, solver=pc.GradientDescent(step_size=0.3, rtol=1e-11, max_steps=50_000))
    assert solution.result == pc.RESULTS.converged
    np.testing.assert_allclose(jnp.concatenate(solution.activities, axis=1), expected, rtol=1e-8, atol=1e-9)
    # The reported energy is the energy at the returned activities.
    energy = hand_energy(solution.activities, weights_of(model), [a1, a2, a3], x, y,
                         phi=lambda u: u, skips=skips, precision=lam)
    np.testing.assert_allclose(solution.energy, energy, rtol=1e-12)


def test_stops_on_the_relative_residual():
    model = _linear(16, 4, skips=True)
    x, y = data(jax.random.PRNGKey(3), 8, D, C)
    rtol = 1e-4
    solution = pc.infer(model, x, y, solver=pc.GradientDescent(step_size=0.3, rtol=rtol, max_steps=10_000))
    assert solution.result == pc.RESULTS.converged
    W, a = weights_of(model), mup_multipliers(D, 16, 4)
    grad = jax.grad(lambda z: 8 * hand_energy(z, W, a, x, y, phi=lambda u: u, skips=True))
    residual = jnp.sqrt(sum(jnp.sum(g**2) for g in grad(solution.activities)))
    initial = jnp.sqrt(sum(jnp.sum(g**2) for g in grad(model.init_activities(x))))
    np.testing.assert_allclose(solution.residual, residual, rtol=1e-10)
    np.testing.assert_allclose(solution.initial_residual, initial, rtol=1e-10)
    assert float(residual / initial) <= rtol
    # One fewer step would not have met the tolerance.
    previous = pc.infer(model, x, y, solver=pc.GradientDescent(step_size=0.3, rtol=0.0, max_steps=int(solution.steps) - 1))
    assert float(previous.relative_residual) > rtol
    assert int(solution.grad_evals) == int(solution.steps) + 1


def test_budget_exhausted_is_reported():
    model = _linear(16, 4, skips=True)
    x, y = data(jax.random.PRNGKey(3), 8, D, C)
    solution = pc.infer(model, x, y, solver=pc.GradientDescent(step_size=0.1, rtol=1e-12, max_steps=7))
    assert solution.result == pc.RESULTS.max_steps
    assert int(solution.steps) == 7 and int(solution.grad_evals) == 8
    assert 0 < float(solution.relative_residual) < 1


@pytest.mark.parametrize("step_size", [3.0, 50.0])
def test_divergence_is_reported_not_silent(step_size):
    model = _linear(16, 4, skips=True)
    x, y = data(jax.random.PRNGKey(4), 8, D, C)
    solution = pc.infer(model, x, y, solver=pc.GradientDescent(step_size=step_size, max_steps=10_000))
    assert solution.result == pc.RESULTS.diverged
    assert int(solution.steps) < 10_000


def test_per_sample_step_does_not_depend_on_the_batch():
    model = pc.nn.residual_mlp(D, 16, C, 4, parameterisation=pc.MuPC(), dtype=jnp.float64, key=jax.random.PRNGKey(0))
    x, y = data(jax.random.PRNGKey(5), 8, D, C)
    solver = pc.GradientDescent(step_size=0.3, rtol=0.0, max_steps=40)
    whole = pc.infer(model, x, y, solver=solver)
    alone = pc.infer(model, x[3:4], y[3:4], solver=solver)
    for z_batch, z_one in zip(whole.activities, alone.activities):
        np.testing.assert_allclose(z_batch[3:4], z_one, rtol=1e-12)


def test_optax_sgd_is_gradient_descent():
    model = pc.nn.residual_mlp(D, 16, C, 4, parameterisation=pc.MuPC(), dtype=jnp.float64, key=jax.random.PRNGKey(0))
    x, y = data(jax.random.PRNGKey(5), 8, D, C)
    gd = pc.infer(model, x, y, solver=pc.GradientDescent(step_size=0.25, rtol=0.0, max_steps=30))
    sgd = pc.infer(model, x, y, solver=pc.OptaxSolver(optax.sgd(0.25), rtol=0.0, max_steps=30))
    for u, v in zip(gd.activities, sgd.activities):
        np.testing.assert_allclose(u, v, rtol=1e-12)


def test_k_steps_reach_only_the_top_k_layers():
    """After k GD steps from z_ff only z_H … z_{H−k+1} moved, so only W_l, l > H − k,
    and the readout get PC weight gradients (docs/background.md §2.4)."""
    depth = 6
    model = pc.nn.mlp(D, 8, C, depth, parameterisation=pc.MuPC(), dtype=jnp.float64, key=jax.random.PRNGKey(0))
    x, y = data(jax.random.PRNGKey(6), 4, D, C)
    for k in range(0, depth):
        solution = pc.infer(model, x, y, solver=pc.GradientDescent(step_size=0.1, rtol=0.0, max_steps=k))
        _, grads = pc.pc_gradients(model, solution.activities, x, y)
        norms = [float(jnp.linalg.norm(layer.module.weight)) for layer in grads.layers]
        hidden = depth - 1
        for l in range(1, depth + 1):  # weight layer index l = 1 … L
            moved = l == depth or l > hidden - k
            # "Zero" up to rounding: XLA may fuse the feedforward pass and the energy
            # differently, leaving errors of ~1e-19 where exact arithmetic gives 0.
            assert (norms[l - 1] > 1e-12 * max(norms)) == moved, (k, l, norms)


def test_jit_and_eager_agree():
    model = pc.nn.residual_mlp(D, 16, C, 4, parameterisation=pc.MuPC(), dtype=jnp.float64, key=jax.random.PRNGKey(0))
    x, y = data(jax.random.PRNGKey(7), 4, D, C)
    solver = pc.GradientDescent(step_size=0.3, rtol=0.2, max_steps=25)
    jitted = pc.infer(model, x, y, solver=solver)
    with jax.disable_jit():
        eager = pc.infer(model, x, y, solver=solver)
    assert int(jitted.steps) == int(eager.steps) > 1
    for u, v in zip(jitted.activities, eager.activities):
        np.testing.assert_allclose(u, v, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(jitted.energy, eager.energy, rtol=1e-10)


def test_same_seed_gives_identical_numbers():
    def run():
        model = pc.nn.residual_mlp(D, 16, C, 4, parameterisation=pc.MuPC(), key=jax.random.PRNGKey(11))
        x, y = data(jax.random.PRNGKey(12), 4, D, C, dtype=jnp.float32)
        return pc.infer(model, x, y, solver=pc.GradientDescent(step_size=0.3, rtol=1e-4))

    a, b = run(), run()
    assert tree_allclose(a.activities, b.activities, rtol=0, atol=0)
    assert float(a.energy) == float(b.energy) and int(a.steps) == int(b.steps)


def test_warm_start_from_the_equilibrium_converges_at_once():
    model = _linear(8, 3)
    x, y = data(jax.random.PRNGKey(8), 4, D, C)
    solver = pc.GradientDescent(step_size=0.3, rtol=1e-9, max_steps=20_000)
    first = pc.infer(model, x, y, solver=solver)
    again = pc.infer(model, x, y, solver=pc.GradientDescent(step_size=0.3, atol=1.01 * float(first.residual)), z0=first.activities)
    assert again.result == pc.RESULTS.converged and int(again.steps) == 0


def test_float32_stays_float32():
    model = pc.nn.residual_mlp(D, 16, C, 4, parameterisation=pc.MuPC(), key=jax.random.PRNGKey(0))
    x, y = data(jax.random.PRNGKey(7), 4, D, C, dtype=jnp.float32)
    solution = pc.infer(model, x, y, solver=pc.GradientDescent(step_size=0.3, max_steps=10))
    assert all(z.dtype == jnp.float32 for z in solution.activities)
    assert solution.energy.dtype == jnp.float32


def test_inference_and_gradients_use_full_float32_matmuls():
    """TF32 (the GPU default) stalls inference near a relative residual of 1e-2 (measured
    on an H100); every matrix product of inference and of both gradients must be traced
    at HIGHEST precision. (On CPUs the setting changes no number, so check the program.)"""
    import re

    model = pc.nn.residual_mlp(D, 8, C, 4, parameterisation=pc.MuPC(), key=jax.random.PRNGKey(0))
    x, y = data(jax.random.PRNGKey(1), 2, D, C, dtype=jnp.float32)
    programs = [
        jax.make_jaxpr(lambda m: pc.infer(m, x, y, solver=pc.GradientDescent(max_steps=3)).energy)(model),
        jax.make_jaxpr(lambda m: pc.bp_gradients(m, x, y)[0])(model),
        jax.make_jaxpr(lambda m: pc.pc_gradients(m, m.init_activities(x), x, y)[0])(model),
    ]
    for program in programs:
        text = str(program)
        products = text.count("dot_general[")
        assert products > 0
        assert len(re.findall(r"precision=\(Precision.HIGHEST, Precision.HIGHEST\)", text)) == products
