"""The Gauss–Newton preconditioner in error coordinates: exact for linear networks (one
Newton step is the closed form), the same certified equilibrium as Newton–Krylov for
nonlinear ones, and the preconditioner itself against a dense Gauss–Newton matrix built
here by hand."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import data

import pcscale as pc
from pcscale._infer import summed_energy_and_grad

GN = pc.GaussNewtonPreconditioner()


def _flat(tree):
    return jnp.concatenate([jnp.ravel(leaf) for leaf in jax.tree.leaves(tree)])


def _hand_energy(model, x, y, cross_entropy):
    """Σ_i F_i written out from the layers, independently of PCModel.energy."""

    def energy(z):
        total = 0.0
        inputs = (x,) + tuple(z)
        for layer, z_prev, z_l in zip(model.layers[:-1], inputs[:-1], z):
            total = total + 0.5 * jnp.sum((z_l - jax.vmap(layer)(z_prev)) ** 2)
        out = jax.vmap(model.layers[-1])(inputs[-1])
        if cross_entropy:
            loss = -jnp.sum(y * jax.nn.log_softmax(out, axis=-1))
        else:
            loss = 0.5 * jnp.sum((y - out) ** 2)
        return total + model.output_precision * loss

    return energy


@pytest.mark.parametrize("skips, precision", [(True, 2.5), (False, 1.0)])
def test_one_newton_step_is_the_closed_form_equilibrium_of_a_linear_network(skips, precision):
    build = pc.nn.residual_mlp if skips else pc.nn.mlp
    model = build(6, 16, 3, 4, parameterisation=pc.MuPC(), activation="linear", output_precision=precision,
                  dtype=jnp.float64, key=jax.random.key(0))
    x, y = data(jax.random.key(1), 4, 6, 3)
    solution = pc.infer(model, x, y, solver=pc.NewtonKrylov(rtol=1e-12, max_steps=1, preconditioner=GN))
    exact = pc.theory.equilibrium_activities(model, x, y)
    assert int(solution.steps) == 1 and int(solution.hvp_evals) == 1  # one CG iteration: M⁻¹ = H⁻¹
    np.testing.assert_allclose(_flat(solution.activities), _flat(exact.activities), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(float(solution.energy), float(pc.theory.equilibrium_energy(model, x, y)), rtol=1e-10)


def test_newtons_inner_tolerance_is_tight_once_the_quadratic_model_predicts_the_gradient():
    """On a linear network the energy is quadratic, so the first Newton step's model
    predicts the next gradient exactly: the forcing term (how far the gradient landed from
    the prediction) is then 0 and the second inner solve goes to the tolerance. Newton
    certifies 1e-10 in exactly two steps, the first one loose (η = `forcing`). A rule
    that tightens only with the residual, such as min(0.1, √(‖g‖/‖g₀‖)), needs more."""
    model = pc.nn.residual_mlp(6, 16, 3, 6, parameterisation=pc.MuPC(), activation="linear", dtype=jnp.float64,
                               key=jax.random.key(4))
    x, y = data(jax.random.key(5), 4, 6, 3)
    solution = pc.infer(model, x, y, solver=pc.NewtonKrylov(rtol=1e-10))
    assert solution.result == pc.RESULTS.converged and int(solution.steps) == 2
    # The residual, recomputed from the hand-written energy, meets the tolerance.
    grad = jax.grad(_hand_energy(model, x, y, False))(tuple(solution.activities))
    start = jax.grad(_hand_energy(model, x, y, False))(tuple(model.init_activities(x)))
    assert float(jnp.linalg.norm(_flat(grad))) <= 1e-10 * float(jnp.linalg.norm(_flat(start)))


def _dense_gauss_newton(model, z, y_one_hot, sample, cross_entropy, precisions=None):
    """The Gauss–Newton matrix of one sample's energy in the activities, built column by
    column: Σ_l (∂e_l/∂z)ᵀ Π_l (∂e_l/∂z) over the hidden errors e_l = z_l − f_l(z_{l−1}),
    plus λ·(∂ŷ/∂z)ᵀ H_ℓ (∂ŷ/∂z), with H_ℓ = I (MSE) or diag(p) − ppᵀ (cross-entropy).
    `precisions`: the hidden errors' precisions of this sample, concatenated over the
    layers (default all 1)."""
    shapes = [a.shape[1:] for a in z]
    sizes = [int(np.prod(s)) for s in shapes]
    z_one = jnp.concatenate([jnp.ravel(a[sample]) for a in z])

    def split(v):
        parts, start = [], 0
        for shape, size in zip(shapes, sizes):
            parts.append(v[start:start + size].reshape(shape))
            start += size
        return parts

    def errors(v):  # hidden errors above the first (z_1 − f_1(x) has the identity Jacobian)
        parts = split(v)
        return jnp.concatenate([parts[0]] + [jnp.ravel(parts[l] - model.layers[l](parts[l - 1]))
                                             for l in range(1, len(parts))])

    def prediction(v):
        return model.layers[-1](split(v)[-1])

    jac_e = jax.jacobian(errors)(z_one)
    jac_y = jax.jacobian(prediction)(z_one)
    out = prediction(z_one)
    if cross_entropy:
        p = jax.nn.softmax(out)
        curvature = jnp.diag(p) - jnp.outer(p, p)
    else:
        curvature = jnp.eye(out.shape[0])
    weights = jnp.ones(jac_e.shape[0]) if precisions is None else precisions
    return jac_e.T @ (weights[:, None] * jac_e) + model.output_precision * jac_y.T @ curvature @ jac_y


@pytest.mark.parametrize("cross_entropy", [pytest.param(False, marks=pytest.mark.slow), True])
def test_the_preconditioner_is_the_inverse_of_a_hand_built_gauss_newton_matrix(cross_entropy):
    energy = pc.CrossEntropy() if cross_entropy else pc.MSE()
    model = pc.nn.residual_mlp(5, 7, 4, 4, parameterisation=pc.MuPC(), activation="tanh", output_energy=energy,
                               output_precision=1.7, dtype=jnp.float64, key=jax.random.key(2))
    x, y = data(jax.random.key(3), 3, 5, 4, one_hot=True)
    # Away from the feedforward state, so that every error is non-zero.
    z = tuple(a + 0.3 * jax.random.normal(jax.random.key(9 + i), a.shape)
              for i, a in enumerate(model.init_activities(x)))
    fn = summed_energy_and_grad(model, x, y)
    r = tuple(jax.random.normal(jax.random.key(20 + i), a.shape) for i, a in enumerate(z))
    applied = GN.at(model, fn, z).apply(r)
    for sample in range(x.shape[0]):
        dense = _dense_gauss_newton(model, z, y, sample, cross_entropy)
        expected = jnp.linalg.solve(dense, jnp.concatenate([jnp.ravel(a[sample]) for a in r]))
        got = jnp.concatenate([jnp.ravel(a[sample]) for a in applied])
        np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-12)


def test_the_preconditioner_with_learnt_per_unit_variances_is_the_inverse_of_the_dense_matrix():
    """Learnt per-unit variances make Π⁻¹ an array per layer (the Woodbury solve's other
    branch): against the dense Gauss–Newton matrix with Π_l = exp(−log σ²_l), set by hand."""
    base = pc.nn.residual_mlp(5, 7, 4, 4, parameterisation=pc.MuPC(), activation="tanh", output_precision=1.3,
                              dtype=jnp.float64, key=jax.random.key(12))
    model = pc.with_learnt_variances(base, per_unit_input_shape=(5,), initial=1.0)
    log_variances = [0.4 * jax.random.normal(jax.random.key(30 + i), layer.log_variance.shape)
                     for i, layer in enumerate(model.layers[:-1])]
    model = eqx.tree_at(lambda m: [layer.log_variance for layer in m.layers[:-1]], model, log_variances)
    x, y = data(jax.random.key(13), 3, 5, 4)
    z = tuple(a + 0.3 * jax.random.normal(jax.random.key(40 + i), a.shape)
              for i, a in enumerate(model.init_activities(x)))
    r = tuple(jax.random.normal(jax.random.key(50 + i), a.shape) for i, a in enumerate(z))
    applied = GN.at(model, summed_energy_and_grad(model, x, y), z).apply(r)
    precisions = jnp.concatenate([jnp.broadcast_to(jnp.exp(-s), (7,)) for s in log_variances])
    for sample in range(x.shape[0]):
        dense = _dense_gauss_newton(model, z, y, sample, False, precisions)
        expected = jnp.linalg.solve(dense, jnp.concatenate([jnp.ravel(a[sample]) for a in r]))
        got = jnp.concatenate([jnp.ravel(a[sample]) for a in applied])
        np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-12)


# Cross-entropy on the residual net in the default run; the other two with -m slow.
NONLINEAR = [
    pytest.param("tanh-residual-mse", pc.nn.residual_mlp, pc.MSE(), marks=pytest.mark.slow),
    pytest.param("tanh-residual-ce", pc.nn.residual_mlp, pc.CrossEntropy()),
    pytest.param("tanh-mlp-mse", pc.nn.mlp, pc.MSE(), marks=pytest.mark.slow),
]


@pytest.mark.parametrize("name, build, energy", NONLINEAR, ids=["tanh-residual-mse", "tanh-residual-ce", "tanh-mlp-mse"])
def test_the_certified_equilibrium_is_newton_krylovs(name, build, energy):
    model = build(12, 32, 5, 4, parameterisation=pc.MuPC(), activation="tanh", output_energy=energy,
                  dtype=jnp.float64, key=jax.random.key(4))
    x, y = data(jax.random.key(5), 6, 12, 5, one_hot=True)
    gn = pc.infer(model, x, y, solver=pc.NewtonKrylov(rtol=1e-10, preconditioner=GN))
    nk = pc.infer(model, x, y, solver=pc.NewtonKrylov(rtol=1e-10))
    every = pc.infer(model, x, y, solver=pc.NewtonKrylov(
        rtol=1e-10, preconditioner=pc.GaussNewtonPreconditioner(refresh=1)))
    assert gn.result == pc.RESULTS.converged and nk.result == pc.RESULTS.converged
    # The residual recomputed from a hand-written energy meets the tolerance.
    hand = _hand_energy(model, x, y, isinstance(energy, pc.CrossEntropy))
    initial = float(jnp.linalg.norm(_flat(jax.grad(hand)(model.init_activities(x)))))
    assert float(jnp.linalg.norm(_flat(jax.grad(hand)(gn.activities)))) <= 1e-10 * initial
    np.testing.assert_allclose(_flat(gn.activities), _flat(nk.activities), rtol=1e-8, atol=1e-10)
    _, g_gn = pc.pc_gradients(model, gn.activities, x, y)
    _, g_nk = pc.pc_gradients(model, nk.activities, x, y)
    u, v = _flat(g_gn), _flat(g_nk)
    assert float(u @ v / (jnp.linalg.norm(u) * jnp.linalg.norm(v))) > 0.999999
    np.testing.assert_allclose(_flat(every.activities), _flat(nk.activities), rtol=1e-8, atol=1e-10)
    # The counts follow from the construction: per Newton step one linearisation, two
    # passes per application (one more than the HVPs) and one pass setting up the line
    # search's path; one forward pass per line-search trial (every gradient but the
    # solve's first and each step's linearisation); and d_y backward passes for J at
    # every step it is built (the first, then every `refresh`).
    outputs = 5
    for solution, builds in ((every, int(every.steps)), (gn, 1 + (int(gn.steps) - 1) // 5)):
        steps, trials = int(solution.steps), int(solution.grad_evals) - int(solution.steps) - 1
        expected = steps * 4 + 2 * int(solution.hvp_evals) + trials + builds * outputs
        assert int(solution.vjp_evals) == expected
        assert int(solution.evaluations) == int(solution.grad_evals) + int(solution.hvp_evals) + expected


@pytest.mark.slow  # benchmarks/certified.py measures it at the paper's sizes
def test_it_needs_fewer_products_than_the_depth_preconditioner_on_a_deep_residual_network():
    model = pc.nn.residual_mlp(12, 32, 4, 16, parameterisation=pc.MuPC(), activation="tanh",
                               dtype=jnp.float64, key=jax.random.key(6))
    x, y = data(jax.random.key(7), 4, 12, 4, one_hot=True)
    gn = pc.infer(model, x, y, solver=pc.NewtonKrylov(rtol=1e-8, preconditioner=GN))
    depth = pc.infer(model, x, y, solver=pc.NewtonKrylov(rtol=1e-8, preconditioner=pc.DepthPreconditioner()))
    assert gn.result == pc.RESULTS.converged and depth.result == pc.RESULTS.converged
    # In gradient evaluations, with the costs InferenceStats documents (an HVP about two
    # gradients, a linear pass about half of one), linear passes included: measured 257
    # against 586 here (13 against 11 Newton steps; 65 against 278 HVPs).
    def cost(s):
        return int(s.grad_evals) + 2 * int(s.hvp_evals) + 0.5 * int(s.vjp_evals)

    assert 2 * cost(gn) < cost(depth)


def test_auto_solver_uses_it_for_few_outputs_and_keeps_the_depth_preconditioner_for_many():
    few = pc.nn.residual_mlp(6, 8, 3, 4, parameterisation=pc.MuPC(), activation="tanh", key=jax.random.key(0))
    many = pc.nn.residual_mlp(6, 8, 100, 4, parameterisation=pc.MuPC(), activation="tanh", key=jax.random.key(0))
    linear = pc.nn.residual_mlp(6, 8, 3, 4, parameterisation=pc.MuPC(), activation="linear", key=jax.random.key(0))
    assert isinstance(pc.auto_solver(few).preconditioner, pc.GaussNewtonPreconditioner)
    assert isinstance(pc.auto_solver(many).preconditioner, pc.DepthPreconditioner)
    assert isinstance(pc.auto_solver(linear), pc.ConjugateGradient)


def test_it_is_refused_where_it_cannot_be_rebuilt():
    with pytest.raises(TypeError, match="NewtonKrylov"):
        pc.ConjugateGradient(preconditioner=GN)
    model = pc.nn.mlp(3, 4, 2, 3, key=jax.random.key(0))
    with pytest.raises(TypeError, match="NewtonKrylov"):
        GN.apply(model, model.init_activities(jnp.ones((2, 3))))
    with pytest.raises(ValueError, match="refresh"):
        pc.GaussNewtonPreconditioner(refresh=0)


@pytest.mark.parametrize("build", [pc.nn.residual_mlp, pc.nn.mlp], ids=["residual", "mlp"])
def test_the_line_search_path_moves_the_errors_linearly_with_the_given_tangent(build):
    """Newton–Krylov's trials lie on t ↦ z(ε̄ + t·δ): along it the errors, written out
    here from the layers, are exactly ε̄ + t·δ with δ = A·d, and its tangent at t = 0 is
    the direction d (checked by a central difference)."""
    from pcscale._error_coordinates import error_path

    model = build(7, 16, 3, 4, parameterisation=pc.MuPC(), activation="tanh", dtype=jnp.float64,
                  key=jax.random.key(8))
    x, _ = data(jax.random.key(9), 5, 7, 3, one_hot=True)
    keys = jax.random.split(jax.random.key(10), 2 * model.num_hidden)
    ff = model.init_activities(x)
    z = tuple(a + 0.3 * jax.random.normal(k, a.shape, a.dtype) for a, k in zip(ff, keys[::2], strict=True))
    d = tuple(0.5 * jax.random.normal(k, a.shape, a.dtype) for a, k in zip(z, keys[1::2], strict=True))

    def hand_errors(states):
        inputs = (x,) + tuple(states)
        return tuple(s - jax.vmap(layer)(prev) for layer, prev, s in zip(model.layers[:-1], inputs[:-1], states))

    _, delta = jax.jvp(hand_errors, (z,), (d,))
    path = error_path(model, z, d)
    for t in (0.0, 0.3, 1.0, -0.7):
        expected = tuple(e + t * dl for e, dl in zip(hand_errors(z), delta, strict=True))
        np.testing.assert_allclose(_flat(hand_errors(path(jnp.asarray(t)))), _flat(expected), rtol=1e-12, atol=1e-12)
    h = 1e-5
    tangent = (_flat(path(jnp.asarray(h))) - _flat(path(jnp.asarray(-h)))) / (2 * h)
    np.testing.assert_allclose(tangent, _flat(d), rtol=1e-7, atol=1e-8)


def test_a_float32_model_stays_float32_with_a_kept_jacobian():
    """With 64-bit mode on, the Jacobian kept between Newton steps (refresh > 1) must
    carry the model's dtype: a float64 placeholder once turned every product float64."""
    model = pc.nn.residual_mlp(12, 32, 5, 4, parameterisation=pc.MuPC(), activation="tanh", dtype=jnp.float32,
                               key=jax.random.key(11))
    x, y = data(jax.random.key(12), 6, 12, 5, dtype=jnp.float32)
    solution = pc.infer(model, x, y, solver=pc.NewtonKrylov(rtol=1e-4, preconditioner=pc.GaussNewtonPreconditioner()))
    assert solution.result == pc.RESULTS.converged
    assert all(a.dtype == jnp.float32 for a in solution.activities)
