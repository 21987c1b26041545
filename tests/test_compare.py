import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import cross_entropy, data, hand_energy, hand_forward, mse, mup_multipliers, weights_of

import pcscale as pc


def _model_like(model, values):
    """A gradient-shaped PCModel whose layer weights are `values`."""
    import equinox as eqx

    return eqx.tree_at(lambda m: [layer.module.weight for layer in m.layers], model, list(values))


def test_cosines_and_ratios_match_hand_values():
    model = pc.nn.mlp(2, 2, 2, 2, dtype=jnp.float64, key=jax.random.PRNGKey(0))
    a = _model_like(model, [jnp.array([[1.0, 0.0], [0.0, 0.0]]), jnp.array([[3.0, 0.0], [0.0, 4.0]])])
    b = _model_like(model, [jnp.array([[0.0, 2.0], [0.0, 0.0]]), jnp.array([[3.0, 0.0], [0.0, 4.0]])])
    alignment = pc.compare_gradients(a, b)
    np.testing.assert_allclose(alignment.layer_cosines, [0.0, 1.0], atol=1e-15)
    np.testing.assert_allclose(alignment.layer_norm_ratios, [0.5, 1.0])
    # Overall: dot = 25, |a| = √26, |b| = √29.
    np.testing.assert_allclose(alignment.cosine, 25 / np.sqrt(26 * 29))
    np.testing.assert_allclose(alignment.norm_ratio, np.sqrt(26 / 29))
    assert bool(alignment.defined) and bool(alignment.layer_defined.all())


def test_gradients_of_models_of_different_depths_are_refused_not_truncated():
    shallow = pc.nn.mlp(2, 3, 2, 3, key=jax.random.PRNGKey(0))
    deep = pc.nn.mlp(2, 3, 2, 4, key=jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="`pc_grads` has 3 layers and `bp_grads` 4"):
        pc.compare_gradients(shallow, deep)


def test_zero_gradient_gives_nan_and_a_flag_not_zero():
    model = pc.nn.mlp(2, 2, 2, 2, dtype=jnp.float64, key=jax.random.PRNGKey(0))
    a = _model_like(model, [jnp.zeros((2, 2)), jnp.ones((2, 2))])
    alignment = pc.compare_gradients(a, a)
    assert np.isnan(alignment.layer_cosines[0]) and not bool(alignment.layer_defined[0])
    assert float(alignment.layer_cosines[1]) == pytest.approx(1.0)
    zero = _model_like(model, [jnp.zeros((2, 2)), jnp.zeros((2, 2))])
    overall = pc.compare_gradients(zero, a)
    assert np.isnan(overall.cosine) and not bool(overall.defined)


def test_bp_gradients_match_jax_grad_of_a_hand_written_loss():
    D, N, C, L = 5, 8, 3, 4
    model = pc.nn.residual_mlp(D, N, C, L, parameterisation=pc.MuPC(), output_energy=pc.CrossEntropy(),
                               dtype=jnp.float64, key=jax.random.PRNGKey(0))
    x, y = data(jax.random.PRNGKey(1), 6, D, C, one_hot=True)
    a = mup_multipliers(D, N, L)

    def loss(weights):
        return jnp.mean(cross_entropy(hand_forward(weights, a, x, skips=True)[1], y))

    expected = jax.grad(loss)(weights_of(model))
    value, grads = pc.bp_gradients(model, x, y)
    np.testing.assert_allclose(value, loss(weights_of(model)), rtol=1e-12)
    for g, e in zip(weights_of(grads), expected):
        np.testing.assert_allclose(g, e, rtol=1e-10, atol=1e-14)


def test_pc_gradients_match_jax_grad_of_a_hand_written_energy():
    D, N, C, L = 5, 8, 3, 4
    model = pc.nn.residual_mlp(D, N, C, L, parameterisation=pc.MuPC(), dtype=jnp.float64, key=jax.random.PRNGKey(0))
    x, y = data(jax.random.PRNGKey(1), 6, D, C)
    z = tuple(z_l + 0.1 for z_l in model.init_activities(x))
    a = mup_multipliers(D, N, L)
    expected = jax.grad(lambda w: hand_energy(z, w, a, x, y, skips=True))(weights_of(model))
    _, grads = pc.pc_gradients(model, z, x, y)
    for g, e in zip(weights_of(grads), expected):
        np.testing.assert_allclose(g, e, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("builder", [pc.nn.mlp, pc.nn.residual_mlp])
@pytest.mark.parametrize("loss, one_hot", [(pc.MSE(), False), (pc.CrossEntropy(), True)])
def test_small_output_precision_gives_bp_gradients(builder, loss, one_hot):
    """λ → 0: the equilibrium errors are λ times the BP deltas to first order."""
    D, C = 10, 4
    model = builder(D, 32, C, 5, parameterisation=pc.MuPC(), output_energy=loss, output_precision=1e-4,
                    dtype=jnp.float64, key=jax.random.PRNGKey(0))
    x, y = data(jax.random.PRNGKey(1), 16, D, C, one_hot=one_hot)
    solver = pc.GradientDescent(step_size=0.3, rtol=1e-8, max_steps=20_000)
    comparison = pc.compare_at_equilibrium(model, x, y, solver=solver)
    assert comparison.inference.result == pc.RESULTS.converged
    assert float(comparison.alignment.cosine) > 0.999
    assert float(jnp.min(comparison.alignment.layer_cosines)) > 0.999
    # …and the PC gradient is λ times the BP gradient.
    np.testing.assert_allclose(comparison.alignment.norm_ratio, 1e-4, rtol=1e-2)


# A trend over a sweep of sizes, compiling a model per size: -m slow. The default run
# still runs every experiment end to end and pins cells' numbers (tests/test_pinned.py).
@pytest.mark.slow
def test_linear_residual_mupc_aligns_as_width_grows():
    """Theory (docs/background.md §4.7): ∇F* = ∇𝓛·(1 + O(L/N)); at L = 4 the cosine rises with N."""
    D, C, depth = 16, 4, 4
    x, y = data(jax.random.PRNGKey(1), 8, D, C)
    cosines = []
    for width in (8, 32, 128, 1024):
        model = pc.nn.residual_mlp(D, width, C, depth, parameterisation=pc.MuPC(), activation="linear",
                                   dtype=jnp.float64, key=jax.random.PRNGKey(2))
        solver = pc.GradientDescent(step_size=0.3, rtol=1e-9, max_steps=50_000)
        comparison = pc.compare_at_equilibrium(model, x, y, solver=solver)
        assert comparison.inference.result == pc.RESULTS.converged
        cosines.append(float(comparison.alignment.cosine))
        # λ = 1: S ⪰ I, so the equilibrated energy never exceeds the loss.
        assert float(comparison.energy_loss_ratio) <= 1.0
    assert all(a < b for a, b in zip(cosines, cosines[1:])), cosines
    assert cosines[-1] > 0.99, cosines


def test_equilibrium_energy_is_the_loss_rescaled_by_s_for_scalar_outputs():
    """d_y = 1, linear, λ = 1: F* = 𝓛/s with s = 1 + Σ_ℓ ‖G_ℓ‖² (docs/background.md §4.2)."""
    D, N, depth = 6, 10, 4
    model = pc.nn.residual_mlp(D, N, 1, depth, parameterisation=pc.MuPC(), activation="linear",
                               dtype=jnp.float64, key=jax.random.PRNGKey(3))
    x, y = data(jax.random.PRNGKey(4), 5, D, 1)
    a = mup_multipliers(D, N, depth)
    W = weights_of(model)
    A = [a[0] * W[0]] + [jnp.eye(N) + a[l] * W[l] for l in range(1, depth - 1)] + [a[-1] * W[-1]]
    G, s = A[-1], 1.0
    for l in range(depth - 2, -1, -1):  # G_H = A_L, then G_ℓ = G_{ℓ+1} A_{ℓ+1}
        s = s + float(jnp.sum(G**2))
        if l > 0:
            G = G @ A[l]
    comparison = pc.compare_at_equilibrium(model, x, y, solver=pc.GradientDescent(step_size=0.3, rtol=1e-11, max_steps=50_000))
    np.testing.assert_allclose(comparison.energy, comparison.loss / s, rtol=1e-9)
    forward = x @ A[0].T
    for A_l in A[1:]:
        forward = forward @ A_l.T
    np.testing.assert_allclose(comparison.loss, jnp.mean(mse(forward, y)), rtol=1e-12)
