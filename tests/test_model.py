import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import cross_entropy, data, hand_energy, hand_forward, mse, mup_multipliers, weights_of

import pcscale as pc

D, N, C, L = 12, 32, 5, 5


def _build(builder, parameterisation, loss=pc.MSE(), precision=1.0, activation="tanh", seed=0):
    return builder(D, N, C, L, parameterisation=parameterisation, activation=activation,
                   output_energy=loss, output_precision=precision, dtype=jnp.float64,
                   key=jax.random.PRNGKey(seed))


def test_sp_mlp_is_a_plain_mlp():
    model = _build(pc.nn.mlp, pc.SP(gamma0=2.0))
    x, _ = data(jax.random.PRNGKey(1), 7, D, C)
    W = weights_of(model)
    # Plain MLP written out: pre-activations h_l, tanh on the way in, 1/γ0 on the readout.
    h = x @ W[0].T
    for W_l in W[1:-1]:
        h = jnp.tanh(h) @ W_l.T
    expected = 0.5 * jnp.tanh(h) @ W[-1].T
    np.testing.assert_allclose(model(x), expected, rtol=1e-12)
    # SP weights are U(−1/√fan_in, 1/√fan_in).
    assert float(jnp.abs(W[0]).max()) <= 1 / np.sqrt(D)
    assert float(jnp.abs(W[1]).max()) <= 1 / np.sqrt(N)


@pytest.mark.parametrize("alpha", [0.5, 1.0])
def test_residual_mupc_forward_matches_hand_multipliers(alpha):
    model = _build(pc.nn.residual_mlp, pc.DepthMuP(alpha=alpha))
    x, _ = data(jax.random.PRNGKey(1), 7, D, C)
    a = mup_multipliers(D, N, L, alpha=alpha)
    _, expected = hand_forward(weights_of(model), a, x, skips=True)
    np.testing.assert_allclose(model(x), expected, rtol=1e-12)


@pytest.mark.parametrize("builder, skips", [(pc.nn.mlp, False), (pc.nn.residual_mlp, True)])
@pytest.mark.parametrize("loss, hand_loss, one_hot", [(pc.MSE(), mse, False), (pc.CrossEntropy(), cross_entropy, True)])
@pytest.mark.parametrize("precision", [1.0, 0.3])
def test_feedforward_state_has_zero_errors_and_energy_equals_loss(builder, skips, loss, hand_loss, one_hot, precision):
    model = _build(builder, pc.MuPC(), loss, precision)
    x, y = data(jax.random.PRNGKey(2), 9, D, C, one_hot=one_hot)
    z = model.init_activities(x)
    for error in model.errors(z, x):
        assert float(jnp.max(jnp.abs(error))) == 0.0
    _, out = hand_forward(weights_of(model), mup_multipliers(D, N, L, skips=skips), x, skips=skips)
    bp_loss = jnp.mean(hand_loss(out, y))
    np.testing.assert_allclose(model.loss(x, y), bp_loss, rtol=1e-12)
    np.testing.assert_allclose(model.energy(z, x, y), precision * bp_loss, rtol=1e-12)


def test_energy_matches_hand_written_energy_away_from_equilibrium():
    model = _build(pc.nn.residual_mlp, pc.MuPC(), pc.CrossEntropy(), 0.7)
    x, y = data(jax.random.PRNGKey(3), 6, D, C, one_hot=True)
    keys = jax.random.split(jax.random.PRNGKey(4), L - 1)
    z = tuple(z_l + 0.3 * jax.random.normal(k, z_l.shape) for z_l, k in zip(model.init_activities(x), keys))
    expected = hand_energy(z, weights_of(model), mup_multipliers(D, N, L), x, y, skips=True,
                           loss=cross_entropy, precision=0.7)
    np.testing.assert_allclose(model.energy(z, x, y), expected, rtol=1e-12)
    np.testing.assert_allclose(jnp.sum(model.layer_energies(z, x, y)), expected, rtol=1e-12)


@pytest.mark.parametrize("skips", [False, True])
def test_activity_gradient_is_the_error_expression(skips):
    builder = pc.nn.residual_mlp if skips else pc.nn.mlp
    precision = 0.5
    model = _build(builder, pc.MuPC(), pc.MSE(), precision)
    x, y = data(jax.random.PRNGKey(5), 4, D, C)
    keys = jax.random.split(jax.random.PRNGKey(6), L - 1)
    z = tuple(z_l + 0.2 * jax.random.normal(k, z_l.shape) for z_l, k in zip(model.init_activities(x), keys))
    W, a = weights_of(model), mup_multipliers(D, N, L, skips=skips)

    # Hand-derived: ∂F_i/∂z_l = ε_l − J_{l+1}ᵀ ε_{l+1}, ∂F_i/∂z_H = ε_H + λ·J_Lᵀ e_out,
    # with J_{l+1}ᵀ v = a·φ'(z_l)·(W_{l+1}ᵀ v) (+ v with a skip).
    inputs = [x] + list(z)
    eps = []
    for l in range(L - 1):
        prev = inputs[l]
        mu = a[0] * prev @ W[0].T if l == 0 else a[l] * jnp.tanh(prev) @ W[l].T + (prev if skips else 0)
        eps.append(z[l] - mu)
    e_out = a[-1] * jnp.tanh(z[-1]) @ W[-1].T - y

    def jt(l, v):  # J_{l+1}ᵀ v for the map from z_l (0-based l: map index l+1)
        back = a[l + 1] * (1 - jnp.tanh(z[l]) ** 2) * (v @ W[l + 1])
        return back + v if (skips and l + 1 < L - 1) else back

    expected = [eps[l] - jt(l, eps[l + 1]) for l in range(L - 2)]
    expected.append(eps[-1] + precision * jt(L - 2, e_out))

    # Per-sample gradient = gradient of Σ_i F_i, by autodiff of the library energy and
    # of the hand-written energy.
    batch = x.shape[0]
    library = jax.grad(lambda z: jnp.sum(model.sample_energies(z, x, y)))(z)
    hand = jax.grad(lambda z: batch * hand_energy(z, W, a, x, y, skips=skips, precision=precision))(z)
    for g_lib, g_hand, g_expr in zip(library, hand, expected):
        np.testing.assert_allclose(g_lib, g_expr, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(g_hand, g_expr, rtol=1e-10, atol=1e-12)


def test_vmapped_energy_equals_a_per_example_loop():
    model = _build(pc.nn.residual_mlp, pc.MuPC())
    x, y = data(jax.random.PRNGKey(7), 5, D, C)
    z = tuple(z_l + 0.1 for z_l in model.init_activities(x))
    batched = model.sample_energies(z, x, y)
    W, a = weights_of(model), mup_multipliers(D, N, L)
    looped = [
        hand_energy(tuple(z_l[i : i + 1] for z_l in z), W, a, x[i : i + 1], y[i : i + 1], skips=True)
        for i in range(5)
    ]
    np.testing.assert_allclose(batched, jnp.stack(looped), rtol=1e-12)
    np.testing.assert_allclose(model.energy(z, x, y), np.mean(looped), rtol=1e-12)


def test_cross_entropy_is_stable_for_huge_logits():
    energy = pc.CrossEntropy()
    logits = jnp.array([1000.0, 0.0, -1000.0])
    assert float(energy(logits, jnp.array([0.0, 1.0, 0.0]))) == pytest.approx(1000.0)
    assert float(energy(logits, jnp.array([0.0, 0.0, 1.0]))) == pytest.approx(2000.0)
    grad = jax.grad(lambda u: energy(u, jnp.array([0.0, 0.0, 1.0])))(logits)
    np.testing.assert_allclose(grad, energy.output_error(logits, jnp.array([0.0, 0.0, 1.0])), atol=1e-12)
    np.testing.assert_allclose(grad, [1.0, 0.0, -1.0], atol=1e-12)


def test_mse_output_error_is_its_gradient():
    energy = pc.MSE()
    prediction, target = jnp.array([0.5, -2.0, 3.0]), jnp.array([1.0, 1.0, -1.0])
    assert float(energy(prediction, target)) == pytest.approx(0.5 * (0.25 + 9.0 + 16.0))
    np.testing.assert_allclose(jax.grad(energy)(prediction, target), energy.output_error(prediction, target))
    np.testing.assert_allclose(energy.output_error(prediction, target), [-0.5, -3.0, 4.0])


def test_same_seed_same_numbers_and_independent_tensors():
    a = _build(pc.nn.residual_mlp, pc.MuPC(), seed=3)
    b = _build(pc.nn.residual_mlp, pc.MuPC(), seed=3)
    c = _build(pc.nn.residual_mlp, pc.MuPC(), seed=4)
    for wa, wb, wc in zip(weights_of(a), weights_of(b), weights_of(c)):
        assert np.array_equal(wa, wb) and not np.array_equal(wa, wc)
    hidden = weights_of(a)[1:-1]
    assert not np.allclose(hidden[0], hidden[1])


def test_custom_equinox_modules_get_the_same_machinery():
    import equinox as eqx

    keys = jax.random.split(jax.random.PRNGKey(0), 2)
    layers = (
        pc.PCLayer(eqx.nn.Linear(3, 4, key=keys[0])),
        pc.PCLayer(eqx.nn.Linear(4, 2, key=keys[1]), activation=jnp.tanh),
    )
    model = pc.PCModel(layers, pc.MSE())
    x = jnp.ones((2, 3))
    first = layers[0].module
    expected = jax.vmap(layers[1].module)(jnp.tanh(jax.vmap(first)(x)))
    np.testing.assert_allclose(model(x), expected, rtol=1e-6)
    z = model.init_activities(x)
    y = jnp.zeros((2, 2))
    np.testing.assert_allclose(model.energy(z, x, y), jnp.mean(mse(expected, y)), rtol=1e-6)


def test_biases_enter_the_forward_pass_and_get_vector_scales():
    model = pc.nn.mlp(D, N, C, 3, parameterisation=pc.MuPC(), use_bias=True, dtype=jnp.float64,
                      key=jax.random.PRNGKey(0))
    assert all(float(jnp.abs(layer.bias).max()) == 0.0 for layer in model.layers)
    import equinox as eqx

    shifted = eqx.tree_at(lambda m: m.layers[-1].bias, model, jnp.arange(C, dtype=jnp.float64))
    x, _ = data(jax.random.PRNGKey(1), 4, D, C)
    W = weights_of(model)
    a = mup_multipliers(D, N, 3, skips=False)
    _, out = hand_forward(W, a, x)
    # The bias sits outside the multiplier: f(z) = a·W·φ(z) + b.
    np.testing.assert_allclose(shifted(x), out + jnp.arange(C)[None], rtol=1e-12)
    scalings = model.parameter_scalings()
    assert scalings.layers[0].bias.init is pc.Init.ZEROS
    assert scalings.layers[0].module.weight.init is pc.Init.NORMAL


@pytest.mark.parametrize("parameterisation, ntk", [(pc.NTP(), True), (pc.MuP(), False), (pc.CompleteP(), False)])
def test_normal_presets_build_standard_normal_weights_and_their_forward(parameterisation, ntk):
    model = pc.nn.residual_mlp(D, 256, C, L, parameterisation=parameterisation, dtype=jnp.float64,
                               key=jax.random.PRNGKey(5))
    hidden = jnp.concatenate([w.ravel() for w in weights_of(model)[1:-1]])
    assert float(jnp.mean(hidden)) == pytest.approx(0.0, abs=0.01)
    assert float(jnp.std(hidden)) == pytest.approx(1.0, rel=0.01)
    x, _ = data(jax.random.PRNGKey(1), 3, D, C)
    if ntk:  # 1/√fan_in, 1/√(N·L) on branches, 1/√N readout
        a = [1 / np.sqrt(D)] + [1 / np.sqrt(256 * L)] * (L - 2) + [1 / np.sqrt(256)]
    else:
        a = mup_multipliers(D, 256, L, alpha=0.0 if isinstance(parameterisation, pc.MuP) else 1.0)
    _, expected = hand_forward(weights_of(model), a, x, skips=True)
    np.testing.assert_allclose(model(x), expected, rtol=1e-12)


def test_float32_models_compute_in_float32_whatever_the_input_dtype():
    model = pc.nn.mlp(D, N, C, L, key=jax.random.PRNGKey(0))
    x, y = data(jax.random.PRNGKey(1), 3, D, C, dtype=jnp.float64)
    assert model(x).dtype == jnp.float32
    assert model.loss(x, y).dtype == jnp.float32
    assert all(z_l.dtype == jnp.float32 for z_l in model.init_activities(x))


def test_float64_without_x64_is_an_error():
    jax.config.update("jax_enable_x64", False)
    try:
        with pytest.raises(ValueError, match="`dtype` is float64 but JAX's 64-bit mode is off"):
            pc.nn.mlp(D, N, C, L, dtype=jnp.float64, key=jax.random.PRNGKey(0))
    finally:
        jax.config.update("jax_enable_x64", True)


@pytest.mark.parametrize("parameterisation", __import__("helpers").all_parameterisations(), ids=repr)
@pytest.mark.parametrize("builder", [pc.nn.mlp, pc.nn.residual_mlp])
def test_every_preset_starts_at_zero_error_with_energy_equal_to_loss(parameterisation, builder):
    model = builder(D, N, C, L, parameterisation=parameterisation, output_precision=0.25,
                    dtype=jnp.float64, key=jax.random.PRNGKey(9))
    x, y = data(jax.random.PRNGKey(10), 4, D, C)
    z = model.init_activities(x)
    assert all(float(jnp.max(jnp.abs(e))) == 0.0 for e in model.errors(z, x))
    np.testing.assert_allclose(model.energy(z, x, y), 0.25 * jnp.mean(mse(model(x), y)), rtol=1e-12)
