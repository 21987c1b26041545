"""Closed-form equilibrium of linear networks: F*, S, exact activities, gradients."""

import functools
import itertools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import data, hand_energy, hand_forward, weights_of

import pcscale as pc
from pcscale import theory

D = 5


def linear_model(width, depth, output_dim, *, skips, parameterisation, precision=1.0, seed=0, dtype=jnp.float64):
    builder = pc.nn.residual_mlp if skips else pc.nn.mlp
    return builder(D, width, output_dim, depth, parameterisation=parameterisation, activation="linear",
                   output_precision=precision, dtype=dtype, key=jax.random.PRNGKey(seed))


def linear_maps(model):
    """A_l = a_l·W_l (+ I on skip layers), from the stored weights and multipliers."""
    maps = []
    for layer in model.layers:
        A = layer.multiplier * layer.module.weight
        maps.append(A + jnp.eye(A.shape[0]) if layer.skip else A)
    return maps


def hand_rescaling(model):
    """S by forming every product A_L⋯A_{ℓ+1} separately (the O(L²N³) way)."""
    A = linear_maps(model)
    d_y = A[-1].shape[0]
    S = np.eye(d_y) / model.output_precision
    for l in range(1, len(A)):  # G_l = A_L ⋯ A_{l+1}, hidden activity l = 1 … H
        G = A[-1]
        for k in range(len(A) - 2, l - 1, -1):
            G = G @ A[k]
        S = S + np.asarray(G @ G.T)
    return S


def hand_loss(model, x, y):
    A = linear_maps(model)
    out = x
    for M in A:
        out = out @ M.T
    return 0.5 * np.mean(np.sum((np.asarray(y) - np.asarray(out)) ** 2, axis=-1)), np.asarray(y - out)


def _grid():
    """Every combination of skips × parameterisation × γ0 × λ × d_y (72 cases). The default
    run takes a covering subset: each skips × parameterisation × d_y combination once, with
    every (γ0, λ) pair appearing twice; the rest are marked slow."""
    cases = []
    gammas, precisions = [0.5, 1.0, 2.0], [0.5, 1.0]
    for index, (skips, parameterisation, output_dim) in enumerate(
        itertools.product([False, True], [pc.SP(), pc.MuPC(), pc.CompleteP()], [1, 3])
    ):
        default = (gammas[index % 3], precisions[(index // 3) % 2])
        for gamma0, precision in itertools.product(gammas, precisions):
            marks = () if (gamma0, precision) == default else (pytest.mark.slow,)
            cases.append(pytest.param(skips, parameterisation, gamma0, precision, output_dim, marks=marks))
    return cases


GRID = _grid()


def _with_gamma0(parameterisation, gamma0):
    return eqx.tree_at(lambda p: p.gamma0, parameterisation, gamma0)


@functools.partial(jax.jit, static_argnames="skips")
def hand_gradient_descent(weights, multipliers, x, y, precision, *, skips):
    """Numerical inference written independently of the library: per-sample gradient
    descent (β = 0.1) on the hand-written energy, from the feedforward state, until the
    residual falls below 1e-13 of its initial value."""
    identity = lambda u: u  # noqa: E731
    total = lambda z: x.shape[0] * hand_energy(z, weights, multipliers, x, y, phi=identity,  # noqa: E731
                                               skips=skips, precision=precision)
    gradient = jax.grad(total)
    norm = lambda g: jnp.sqrt(sum(jnp.sum(u**2) for u in g))  # noqa: E731
    z0 = tuple(hand_forward(weights, multipliers, x, phi=identity, skips=skips)[0])
    target = 1e-13 * norm(gradient(z0))

    def body(carry):
        z, step = carry
        return tuple(u - 0.1 * g for u, g in zip(z, gradient(z))), step + 1

    z, steps = jax.lax.while_loop(lambda c: (norm(gradient(c[0])) > target) & (c[1] < 400_000), body, (z0, 0))
    return total(z) / x.shape[0], norm(gradient(z)) <= target


@pytest.mark.parametrize("skips, parameterisation, gamma0, precision, output_dim", GRID)
def test_closed_form_energy_equals_converged_numerical_inference(skips, parameterisation, gamma0, precision,
                                                                  output_dim):
    model = linear_model(6, 4, output_dim, skips=skips, parameterisation=_with_gamma0(parameterisation, gamma0),
                         precision=precision)
    x, y = data(jax.random.PRNGKey(1), 4, D, output_dim)
    closed = theory.equilibrium_energy(model, x, y)
    multipliers = jnp.array([layer.multiplier for layer in model.layers])
    numerical, converged = hand_gradient_descent(weights_of(model), multipliers, x, y, precision, skips=skips)
    assert converged
    np.testing.assert_allclose(closed, numerical, rtol=1e-8)
    # And the formula itself, from S built by explicit products.
    S = hand_rescaling(model)
    _, r = hand_loss(model, x, y)
    expected = 0.5 * np.mean(np.sum(r * np.linalg.solve(S, r.T).T, axis=-1))
    np.testing.assert_allclose(closed, expected, rtol=1e-10)


@pytest.mark.parametrize("skips", [False, True])
def test_closed_form_energy_equals_the_library_inference(skips):
    model = linear_model(8, 5, 3, skips=skips, parameterisation=pc.MuPC(gamma0=0.5), precision=0.5)
    x, y = data(jax.random.PRNGKey(1), 4, D, 3)
    solver = pc.GradientDescent(step_size=0.2, rtol=1e-13, max_steps=400_000)
    numerical = pc.infer(model, x, y, solver=solver)
    assert numerical.result == pc.RESULTS.converged
    np.testing.assert_allclose(theory.equilibrium_energy(model, x, y), numerical.energy, rtol=1e-8)


@pytest.mark.parametrize("skips", [False, True])
@pytest.mark.parametrize("parameterisation", [pc.SP(), pc.NTP(), pc.MuP(), pc.MuPC(), pc.DepthMuP(alpha=0.75)],
                         ids=["sp", "ntp", "mup", "mupc", "alpha0.75"])
def test_rescaling_equals_products_formed_per_layer(skips, parameterisation):
    model = linear_model(7, 6, 3, skips=skips, parameterisation=parameterisation, precision=0.8)
    S = theory.rescaling(model)
    expected = hand_rescaling(model)
    np.testing.assert_allclose(S.matrix, expected, rtol=1e-11, atol=1e-13)
    gram = expected - np.eye(3) / 0.8
    np.testing.assert_allclose(S.gram, gram, rtol=1e-11, atol=1e-13)
    np.testing.assert_allclose(S.spectral_gap, np.linalg.eigvalsh(gram)[-1], rtol=1e-11)
    np.testing.assert_allclose(S.spectral_norm, np.linalg.norm(expected, 2), rtol=1e-11)
    np.testing.assert_allclose(S.trace_gap, np.trace(gram) / 3, rtol=1e-11)


def test_energy_properties_for_scalar_output():
    # d_y = 1, λ = 1: F* = 𝓛/s, and F* ≤ 𝓛.
    model = linear_model(8, 5, 1, skips=True, parameterisation=pc.MuPC(gamma0=0.5))
    x, y = data(jax.random.PRNGKey(2), 6, D, 1)
    s = hand_rescaling(model)[0, 0]
    loss, _ = hand_loss(model, x, y)
    energy = theory.equilibrium_energy(model, x, y)
    np.testing.assert_allclose(energy, loss / s, rtol=1e-12)
    assert energy < loss


METHODS = [theory.Propagation(), theory.DenseCholesky(), theory.LinearCG()]


@pytest.mark.parametrize("skips", [False, True])
@pytest.mark.parametrize("precision", [0.5, 1.0])
def test_exact_activities_have_zero_residual_and_agree(skips, precision):
    model = linear_model(8, 5, 3, skips=skips, parameterisation=pc.MuPC(), precision=precision)
    x, y = data(jax.random.PRNGKey(3), 5, D, 3)
    solutions = [theory.equilibrium_activities(model, x, y, method=m) for m in METHODS]
    closed = theory.equilibrium_energy(model, x, y)
    for solution in solutions:
        assert solution.result == pc.RESULTS.converged
        # Residual measured independently: jax.grad of the hand-written energy.
        multipliers = [layer.multiplier for layer in model.layers]
        grad = jax.grad(lambda z: x.shape[0] * hand_energy(z, weights_of(model), multipliers, x, y,
                                                            phi=lambda u: u, skips=skips, precision=precision))(
            solution.activities)
        assert float(jnp.sqrt(sum(jnp.sum(g**2) for g in grad))) < 1e-8
        assert float(solution.residual) < 1e-8
        np.testing.assert_allclose(solution.energy, closed, rtol=1e-10)
    for other in solutions[1:]:
        for a, b in zip(solutions[0].activities, other.activities):
            np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-10)
    # CG reports its iterations and more products (see the test below).
    assert 0 < int(solutions[2].steps) < int(solutions[2].hvp_evals)


def test_linear_cg_reports_every_product_it_used(monkeypatch):
    import pcscale.theory._activities as activities

    calls, plain = [], activities.batch_hvp

    def counted(model, x, y, z):
        hvp = plain(model, x, y, z)

        def product(v):
            jax.debug.callback(lambda: calls.append(1))
            return hvp(v)

        return product

    monkeypatch.setattr(activities, "batch_hvp", counted)
    model = linear_model(7, 6, 2, skips=True, parameterisation=pc.MuPC())  # shapes no other test traces
    x, y = data(jax.random.PRNGKey(21), 3, D, 2)
    solution = theory.equilibrium_activities(model, x, y, method=theory.LinearCG(rtol=1e-10))
    jax.effects_barrier()
    assert solution.result == pc.RESULTS.converged
    assert int(solution.steps) > 10 and int(solution.hvp_evals) == len(calls)
    # The residual, measured independently at the returned activities, met the tolerance.
    initial = theory.equilibrium_activities(model, x, y, method=theory.LinearCG(max_steps=1)).initial_residual
    assert float(solution.residual) <= 1e-10 * float(initial) * 1.01


def test_equilibrium_errors_are_the_preconditioned_bp_deltas():
    # ε*_ℓ = G_ℓᵀS⁻¹r and λ(y − ŷ*) = S⁻¹r (docs/background.md §4.2), from explicit products.
    model = linear_model(6, 4, 2, skips=True, parameterisation=pc.MuPC(), precision=0.7)
    x, y = data(jax.random.PRNGKey(4), 3, D, 2)
    z = theory.equilibrium_activities(model, x, y, method=theory.DenseCholesky()).activities
    A = linear_maps(model)
    S = hand_rescaling(model)
    _, r = hand_loss(model, x, y)
    u = np.linalg.solve(S, r.T).T
    inputs = [x] + list(z)
    for l in range(1, len(A)):
        G = A[-1]
        for k in range(len(A) - 2, l - 1, -1):
            G = G @ A[k]
        error = np.asarray(z[l - 1] - inputs[l - 1] @ A[l - 1].T)
        np.testing.assert_allclose(error, u @ np.asarray(G), rtol=1e-9, atol=1e-12)
    output = np.asarray(z[-1] @ A[-1].T)
    np.testing.assert_allclose(0.7 * (np.asarray(y) - output), u, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("skips", [False, True])
@pytest.mark.parametrize("parameterisation", [pc.SP(), pc.MuPC(gamma0=0.5), pc.CompleteP(gamma0=2.0)],
                         ids=["sp", "mupc", "completep"])
def test_closed_form_gradient_is_the_energy_gradient_at_the_exact_activities(skips, parameterisation):
    model = linear_model(6, 5, 3, skips=skips, parameterisation=parameterisation, precision=0.5)
    x, y = data(jax.random.PRNGKey(5), 4, D, 3)
    energy, grads = theory.closed_form_gradients(model, x, y)
    z = theory.equilibrium_activities(model, x, y, method=theory.DenseCholesky()).activities
    multipliers = [layer.multiplier for layer in model.layers]
    # Envelope theorem: ∇_θF* = ∂F/∂θ at z*, with F written by hand.
    expected = jax.grad(lambda ws: hand_energy(z, ws, multipliers, x, y, phi=lambda u: u, skips=skips,
                                               precision=0.5))(weights_of(model))
    for layer_grad, want in zip(grads.layers, expected):
        np.testing.assert_allclose(layer_grad.module.weight, want, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(energy, theory.equilibrium_energy(model, x, y), rtol=1e-14)


def test_closed_form_gradient_includes_the_dependence_of_s():
    # Dropping ∂S/∂θ ("S constant") gives a different gradient: the closed form must not.
    model = linear_model(3, 5, 2, skips=False, parameterisation=pc.MuPC())  # narrow: S far from I
    x, y = data(jax.random.PRNGKey(6), 4, D, 2)
    _, grads = theory.closed_form_gradients(model, x, y)
    S = jnp.asarray(hand_rescaling(model))
    multipliers = [layer.multiplier for layer in model.layers]

    def frozen(ws):
        out = x
        for a, W in zip(multipliers, ws):
            out = a * out @ W.T
        r = y - out
        return 0.5 * jnp.mean(jnp.sum(r * jnp.linalg.solve(S, r.T).T, axis=-1))

    frozen_grad = jax.grad(frozen)(weights_of(model))
    difference = max(float(jnp.max(jnp.abs(g.module.weight - f))) for g, f in zip(grads.layers, frozen_grad))
    assert difference > 1e-3


def hand_closed_form_energy(weights, model, x, y):
    """F*(θ) written out with explicit products, as a function of the raw weights."""
    A = []
    for W, layer in zip(weights, model.layers):
        M = layer.multiplier * W
        A.append(M + jnp.eye(M.shape[0]) if layer.skip else M)
    S = jnp.eye(A[-1].shape[0]) / model.output_precision
    for l in range(1, len(A)):
        G = A[-1]
        for k in range(len(A) - 2, l - 1, -1):
            G = G @ A[k]
        S = S + G @ G.T
    out = x
    for M in A:
        out = out @ M.T
    r = y - out
    return 0.5 * jnp.mean(jnp.sum(r * jnp.linalg.solve(S, r.T).T, axis=-1))


def test_closed_form_step_applies_the_pc_update():
    width, eta = 6, 0.05
    model = linear_model(width, 4, 2, skips=True, parameterisation=pc.MuPC())
    x, y = data(jax.random.PRNGKey(7), 4, D, 2)
    optimiser = pc.make_optimiser(model, pc.SGD(eta))
    state = optimiser.init(eqx.filter(model, eqx.is_array))
    new_model, _, metrics = theory.closed_form_step(model, state, x, y, optimiser=optimiser)
    # μPC SGD: every raw weight moves by η·γ0²·N times the gradient of F* (docs/background.md §3.1).
    energy, grads = jax.value_and_grad(hand_closed_form_energy)(weights_of(model), model, x, y)
    for new, old, g in zip(weights_of(new_model), weights_of(model), grads):
        np.testing.assert_allclose(new, old - eta * width * g, rtol=1e-10, atol=1e-13)
    loss, _ = hand_loss(model, x, y)
    S = hand_rescaling(model)
    np.testing.assert_allclose(metrics.loss, loss, rtol=1e-12)
    np.testing.assert_allclose(metrics.energy, energy, rtol=1e-12)
    np.testing.assert_allclose(metrics.spectral_gap, np.linalg.eigvalsh(S)[-1] - 1, rtol=1e-10)
    np.testing.assert_allclose(metrics.trace_gap, np.trace(S - np.eye(2)) / 2, rtol=1e-10)
    assert bool(metrics.updated)


class Conv(eqx.Module):
    """A linear 1-D convolution without bias: a generic (non-`nn.Linear`) linear module."""

    conv: eqx.nn.Conv1d

    def __call__(self, z):
        return self.conv(z)


def test_generic_linear_modules_use_the_same_accumulation():
    keys = jax.random.split(jax.random.PRNGKey(8), 4)
    channels, length = 2, 6
    conv = lambda k: Conv(eqx.nn.Conv1d(channels, channels, 3, padding=1, use_bias=False, key=k))  # noqa: E731
    layers = (
        pc.PCLayer(conv(keys[0])),
        pc.PCLayer(conv(keys[1]), skip=True, scaling=pc.Scaling(multiplier=0.5)),
        pc.PCLayer(conv(keys[2]), scaling=pc.Scaling(multiplier=0.3)),
    )
    model = jax.tree.map(lambda a: a.astype(jnp.float64) if eqx.is_inexact_array(a) else a,
                         pc.PCModel(layers, pc.MSE()))
    x = jax.random.normal(keys[3], (3, channels, length))
    y = jax.random.normal(keys[0], (3, channels, length))
    with pytest.raises(ValueError, match="pass an example batch"):
        theory.rescaling(model)
    # Dense Jacobians of each map, independently, by jax.jacfwd.
    shape = (channels, length)
    J = [jax.jacfwd(layer)(jnp.zeros(shape)).reshape(channels * length, channels * length) for layer in layers]
    G2 = J[2]
    G1 = J[2] @ J[1]
    expected = np.eye(channels * length) + G2 @ G2.T + G1 @ G1.T
    np.testing.assert_allclose(theory.rescaling(model, x).matrix, expected, rtol=1e-11, atol=1e-13)
    numerical = pc.infer(model, x, y, solver=pc.GradientDescent(step_size=0.2, rtol=1e-13, max_steps=100_000))
    np.testing.assert_allclose(theory.equilibrium_energy(model, x, y), numerical.energy, rtol=1e-9)


def test_float64_on_request_for_a_float32_model():
    model32 = linear_model(8, 4, 2, skips=True, parameterisation=pc.MuPC(), dtype=jnp.float32)
    x, y = data(jax.random.PRNGKey(9), 4, D, 2, dtype=jnp.float32)
    energy = theory.equilibrium_energy(model32, x, y, dtype=jnp.float64)
    assert energy.dtype == jnp.float64
    model64 = jax.tree.map(lambda a: a.astype(jnp.float64) if eqx.is_inexact_array(a) else a, model32)
    np.testing.assert_allclose(energy, theory.equilibrium_energy(model64, x.astype(jnp.float64),
                                                                 y.astype(jnp.float64)), rtol=1e-14)
    assert theory.rescaling(model32, dtype=jnp.float64).matrix.dtype == jnp.float64


def test_float32_warns_when_the_gap_is_below_resolution():
    model = linear_model(64, 2, 1, skips=False, parameterisation=pc.MuPC(gamma0=100.0), dtype=jnp.float32)
    with pytest.warns(UserWarning, match="below float32 resolution"):
        theory.rescaling(model)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        theory.rescaling(model, dtype=jnp.float64)  # float64 resolves it: no warning
        theory.rescaling(linear_model(8, 4, 1, skips=True, parameterisation=pc.MuPC(), dtype=jnp.float32))


# ----------------------------------------------------------------------- bad input
def test_rejects_nonlinear_activation():
    model = pc.nn.mlp(D, 6, 2, 3, parameterisation=pc.MuPC(), activation="tanh", dtype=jnp.float64,
                      key=jax.random.PRNGKey(0))
    x, y = data(jax.random.PRNGKey(1), 2, D, 2)
    for call in (lambda: theory.equilibrium_energy(model, x, y), lambda: theory.rescaling(model),
                 lambda: theory.equilibrium_activities(model, x, y)):
        with pytest.raises(ValueError, match="activation 'tanh'.*activation='linear'"):
            call()


def test_rejects_biases_and_cross_entropy():
    model = pc.nn.mlp(D, 6, 2, 3, parameterisation=pc.MuPC(), activation="linear", use_bias=True,
                      dtype=jnp.float64, key=jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="bias.*use_bias=False"):
        theory.rescaling(model)
    model = pc.nn.mlp(D, 6, 2, 3, parameterisation=pc.MuPC(), activation="linear", output_energy=pc.CrossEntropy(),
                      dtype=jnp.float64, key=jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="MSE output only.*CrossEntropy"):
        theory.rescaling(model)


def test_rejects_nonlinear_and_affine_modules():
    class Tanh(eqx.Module):
        weight: jax.Array

        def __call__(self, z):
            return jnp.tanh(self.weight @ z)

    class Affine(eqx.Module):
        weight: jax.Array

        def __call__(self, z):
            return self.weight @ z + 1.0

    W = jnp.eye(3)
    x, y = jnp.ones((2, 3)), jnp.ones((2, 3))
    model = pc.PCModel((pc.PCLayer(Tanh(W)), pc.PCLayer(Tanh(W))), pc.MSE())
    with pytest.raises(ValueError, match=r"model.layers\[1\] is not a linear map"):
        theory.equilibrium_energy(model, x, y)
    model = pc.PCModel((pc.PCLayer(Affine(W)), pc.PCLayer(Affine(W))), pc.MSE())
    with pytest.raises(Exception, match="maps 0 to a non-zero output"):
        theory.equilibrium_energy(model, x, y)


def test_rejects_mismatched_shapes_and_bad_arguments(unchecked):
    model = linear_model(6, 3, 2, skips=False, parameterisation=pc.MuPC())
    x, y = data(jax.random.PRNGKey(0), 3, D, 2)
    with pytest.raises(ValueError, match="per-sample shape"):
        theory.equilibrium_energy(model, x, y[:, :1])
    with pytest.raises(ValueError, match="same batch size"):
        theory.equilibrium_energy(model, x, y[:2])
    with pytest.raises(TypeError, match="PCModel"):
        theory.rescaling("model")
    with pytest.raises(TypeError, match="`method`"):
        theory.equilibrium_activities(model, x, y, method="cg")
    with pytest.raises(ValueError, match="`rtol`"):
        theory.LinearCG(rtol=-1.0)
    with pytest.raises(ValueError, match="floating dtype"):
        theory.rescaling(model, dtype=jnp.int32)


def test_energy_is_the_same_from_the_end_to_end_map_and_the_forward_pass():
    # With B > d_y, ŷ comes from G_0 = A_L⋯A_1; with B ≤ d_y, from the forward pass. The
    # batch-mean F* of 8 samples is the mean over four batches of 2 (d_y = 3).
    model = linear_model(6, 5, 3, skips=True, parameterisation=pc.MuPC(gamma0=0.5), precision=0.7)
    x, y = data(jax.random.PRNGKey(10), 8, D, 3)
    whole = theory.equilibrium_energy(model, x, y)
    parts = [theory.equilibrium_energy(model, x[i:i + 2], y[i:i + 2]) for i in range(0, 8, 2)]
    np.testing.assert_allclose(whole, np.mean(parts), rtol=1e-13)
    # Both paths against the formula with explicit products.
    weights = weights_of(model)
    np.testing.assert_allclose(whole, hand_closed_form_energy(weights, model, x, y), rtol=1e-12)
    np.testing.assert_allclose(parts[0], hand_closed_form_energy(weights, model, x[:2], y[:2]), rtol=1e-12)
    _, grads = theory.closed_form_gradients(model, x, y)
    part_grads = [theory.closed_form_gradients(model, x[i:i + 2], y[i:i + 2])[1] for i in range(0, 8, 2)]
    for index, layer in enumerate(grads.layers):
        mean = np.mean([g.layers[index].module.weight for g in part_grads], axis=0)
        np.testing.assert_allclose(layer.module.weight, mean, rtol=1e-11, atol=1e-14)


def test_depth_one_has_no_free_activities_and_no_gap():
    import warnings

    model = linear_model(4, 1, 2, skips=False, parameterisation=pc.MuPC(), precision=0.5, dtype=jnp.float32)
    x, y = data(jax.random.PRNGKey(11), 3, D, 2, dtype=jnp.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a gap of exactly 0 is resolved: no float32 warning
        S = theory.rescaling(model)
        energy = theory.equilibrium_energy(model, x, y)
    np.testing.assert_allclose(S.matrix, 2.0 * np.eye(2))
    loss, _ = hand_loss(model, x, y)
    np.testing.assert_allclose(energy, 0.5 * loss, rtol=1e-6)  # F* = λ·𝓛
    for method in METHODS:
        solution = theory.equilibrium_activities(model, x, y, method=method)
        assert solution.activities == () and solution.result == pc.RESULTS.converged


def test_conjugate_gradient_converges_by_default_in_float32():
    model = linear_model(16, 8, 3, skips=True, parameterisation=pc.MuPC(), dtype=jnp.float32)
    x, y = data(jax.random.PRNGKey(12), 4, D, 3, dtype=jnp.float32)
    solution = theory.equilibrium_activities(model, x, y, method=theory.LinearCG())
    assert solution.result == pc.RESULTS.converged
    assert float(solution.relative_residual) < 1e-3
    exact = theory.equilibrium_activities(model, x, y, dtype=jnp.float64)
    np.testing.assert_allclose(solution.energy, exact.energy, rtol=1e-5)


def test_closed_form_step_warns_in_float32_below_resolution():
    model = linear_model(64, 2, 1, skips=False, parameterisation=pc.MuPC(gamma0=100.0), dtype=jnp.float32)
    x, y = data(jax.random.PRNGKey(13), 4, D, 1, dtype=jnp.float32)
    optimiser = pc.make_optimiser(model, pc.SGD(0.01))
    state = optimiser.init(eqx.filter(model, eqx.is_array))
    with pytest.warns(UserWarning, match="closed_form_step.*below float32 resolution"):
        theory.closed_form_step(model, state, x, y, optimiser=optimiser)


def test_closed_form_refuses_a_model_it_does_not_describe_wherever_it_is_passed():
    # A cross-entropy output or a bias has no closed form: every entry point says so
    # instead of returning MSE numbers.
    key = jax.random.PRNGKey(0)
    x = jax.random.normal(key, (4, 3))
    y = jax.nn.one_hot(jnp.array([0, 1, 0, 1]), 2)
    crossentropy = pc.nn.mlp(3, 8, 2, 3, parameterisation=pc.MuPC(), activation="linear", use_bias=False,
                             output_energy=pc.CrossEntropy(), key=key)
    biased = pc.nn.mlp(3, 8, 2, 3, parameterisation=pc.MuPC(), activation="linear", use_bias=True, key=key)
    for model, message in ((crossentropy, "MSE output only"), (biased, "without biases only")):
        optimiser = pc.make_optimiser(model, pc.SGD(0.1))
        state = optimiser.init(eqx.filter(model, eqx.is_array))
        with pytest.raises(ValueError, match=message):
            pc.pc_step(model, state, x, y, optimiser=optimiser, solver=pc.theory.ClosedForm())
        with pytest.raises(ValueError, match=message):
            pc.compare_at_equilibrium(model, x, y, solver=pc.theory.ClosedForm())
