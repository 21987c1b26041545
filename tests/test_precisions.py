"""Per-layer precisions: fixed weights of the hidden errors and learnt variances, against
hand-written energies, a dense solve of the hand-written Hessian, and the fixed point of
the variance update."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import data

import pcscale as pc

PRECISIONS = (2.0, 0.5, 3.0)


def _flat(tree):
    return jnp.concatenate([jnp.ravel(leaf) for leaf in jax.tree.leaves(tree)])


def _linear(skips=True, output=1.7, depth=4, width=8, key=0):
    build = pc.nn.residual_mlp if skips else pc.nn.mlp
    model = build(5, width, 3, depth, parameterisation=pc.MuPC(), activation="linear", dtype=jnp.float64,
                  key=jax.random.key(key))
    return pc.with_precisions(model, hidden=PRECISIONS[: depth - 1], output=output)


def _hand_sample_energy(model, x, y, z, hidden=None, log_variances=None):
    """F_i per sample, written out from the layers with explicit precisions and
    log-variances."""
    hidden = hidden if hidden is not None else [1.0] * model.num_hidden
    inputs = (x,) + tuple(z)
    total = 0.0
    for index, (layer, prev, z_l) in enumerate(zip(model.layers[:-1], inputs[:-1], z, strict=True)):
        e2 = (z_l - jax.vmap(layer)(prev)) ** 2
        if log_variances is None:
            total = total + 0.5 * hidden[index] * jnp.sum(e2, axis=-1)
        else:
            s = jnp.broadcast_to(log_variances[index], e2.shape)
            total = total + 0.5 * hidden[index] * jnp.sum(jnp.exp(-s) * e2, axis=-1) + 0.5 * jnp.sum(s, axis=-1)
    out = jax.vmap(model.layers[-1])(inputs[-1])
    return total + model.output_precision * 0.5 * jnp.sum((y - out) ** 2, axis=-1)


def test_the_energy_is_the_hand_written_one_with_precisions_and_learnt_variances():
    model = pc.nn.residual_mlp(5, 8, 3, 4, parameterisation=pc.MuPC(), activation="tanh", dtype=jnp.float64,
                               key=jax.random.key(1))
    x, y = data(jax.random.key(2), 4, 5, 3)
    keys = jax.random.split(jax.random.key(3), 3)
    z = tuple(a + 0.2 * jax.random.normal(k, a.shape, a.dtype)
              for a, k in zip(model.init_activities(x), keys, strict=True))
    fixed = pc.with_precisions(model, hidden=PRECISIONS, output=2.5)
    np.testing.assert_allclose(fixed.sample_energies(z, x, y),
                               _hand_sample_energy(fixed, x, y, z, hidden=PRECISIONS), rtol=1e-13)
    for shape in (None, (5,)):
        learnt = pc.with_learnt_variances(fixed, per_unit_input_shape=shape, initial=0.7)
        s = [jax.random.normal(k, layer.log_variance.shape) * 0.3 for k, layer in zip(keys, learnt.layers[:-1],
                                                                                         strict=False)]
        learnt = eqx.tree_at(lambda m: [layer.log_variance for layer in m.layers[:-1]], learnt, s)
        np.testing.assert_allclose(learnt.sample_energies(z, x, y),
                                   _hand_sample_energy(learnt, x, y, z, hidden=PRECISIONS, log_variances=s),
                                   rtol=1e-13)


@pytest.mark.parametrize("skips", [True, False], ids=["residual", "mlp"])
def test_the_linear_closed_form_with_precisions_is_a_dense_solve_of_the_hand_written_hessian(skips):
    model = _linear(skips)
    x, y = data(jax.random.key(4), 6, 5, 3)
    z0 = model.init_activities(x)
    shapes = [a.shape[1:] for a in z0]
    sizes = [int(np.prod(s)) for s in shapes]

    def unflatten(v):
        parts, start = [], 0
        for shape, size in zip(shapes, sizes, strict=True):
            parts.append(v[start:start + size].reshape(shape))
            start += size
        return tuple(parts)

    activities, energies = [], []
    for i in range(x.shape[0]):
        def energy(v, i=i):
            return _hand_sample_energy(model, x[i:i + 1], y[i:i + 1],
                                       tuple(p[None] for p in unflatten(v)), hidden=PRECISIONS)[0]
        v0 = jnp.concatenate([a[i] for a in z0])
        hessian = jax.hessian(energy)(v0)
        v = v0 - jnp.linalg.solve(hessian, jax.grad(energy)(v0))  # the energy is quadratic
        activities.append(v)
        energies.append(energy(v))
    expected_energy = float(np.mean(energies))
    assert float(pc.theory.equilibrium_energy(model, x, y)) == pytest.approx(expected_energy, rel=1e-10)
    exact = pc.theory.equilibrium_activities(model, x, y).activities
    got = jnp.stack([jnp.concatenate([a[i] for a in exact]) for i in range(x.shape[0])])
    np.testing.assert_allclose(got, jnp.stack(activities), rtol=1e-10, atol=1e-12)
    # The rescaling is I/λ + Σ_l G_l Π_l⁻¹ G_lᵀ: F* = (1/2B)Σ_i r_iᵀS⁻¹r_i with r = y − ŷ.
    S = pc.theory.rescaling(model, x).matrix
    r = y - model(x)
    assert float(0.5 * jnp.mean(jnp.sum(r * jnp.linalg.solve(S, r.T).T, axis=1))) == pytest.approx(
        expected_energy, rel=1e-10)
    # One Gauss–Newton step (Woodbury with Π) is the exact equilibrium of a linear network.
    solution = pc.infer(model, x, y, solver=pc.NewtonKrylov(rtol=1e-10, preconditioner=pc.GaussNewtonPreconditioner()))
    assert int(solution.steps) == 1 and solution.result == pc.RESULTS.converged
    np.testing.assert_allclose(_flat(solution.activities), _flat(exact), rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("per_unit", [False, True], ids=["scalar", "diagonal"])
def test_learnt_variances_converge_to_the_empirical_error_variance(per_unit):
    """A linear-Gaussian toy: states sampled as z_l = f_l(z_{l−1}) + noise of known
    variance v_l (per unit, for the diagonal case) through the model's own layers, all
    observed (clamped). Gradient descent on log σ² of the energy converges to the mean of
    ε² over the batch (and the units, for one variance per layer), which matches v_l
    within Monte-Carlo error."""
    base = pc.nn.residual_mlp(4, 50, 2, 4, parameterisation=pc.MuPC(), activation="linear", dtype=jnp.float64,
                              key=jax.random.key(5))
    batch = 400
    x, y = data(jax.random.key(6), batch, 4, 2)
    keys = jax.random.split(jax.random.key(7), base.num_hidden)
    true = [0.3, 1.5, 0.8]
    if per_unit:
        true = [v * jnp.linspace(0.5, 1.5, 50) for v in true]
    z, prev = [], x
    for layer, v, k in zip(base.layers[:-1], true, keys, strict=True):
        prev = jax.vmap(layer)(prev) + jnp.sqrt(jnp.broadcast_to(v, (batch, 50))) * jax.random.normal(k, (batch, 50))
        z.append(prev)
    z = tuple(z)
    model = pc.with_learnt_variances(base, per_unit_input_shape=(4,) if per_unit else None, initial=1.0)

    def variances(m):
        return [layer.log_variance for layer in m.layers[:-1]]

    @jax.jit
    def descend(m):
        grads = eqx.filter_grad(lambda m: m.energy(z, x, y))(m)
        scale = 50.0 if per_unit else 1.0  # the energy's curvature in a per-unit s is 1/N of a shared one's
        return eqx.tree_at(variances, m, [s - 2.0 / 50 * scale * g for s, g in zip(variances(m), variances(grads),
                                                                                strict=True)])

    for _ in range(300):
        model = descend(model)
    for layer, error, v in zip(model.layers[:-1], model.errors(z, x), true, strict=True):
        empirical = jnp.mean(error**2, axis=0) if per_unit else jnp.mean(error**2)
        np.testing.assert_allclose(jnp.exp(layer.log_variance), empirical, rtol=1e-8)
        # Monte-Carlo error of a variance from n samples: √(2/n) relative.
        samples = batch if per_unit else batch * 50
        np.testing.assert_allclose(empirical, v, rtol=5 * np.sqrt(2 / samples))


def test_depth_stable_precisions_and_refusals(unchecked):
    assert pc.depth_stable_precisions(256, 32, gamma0=0.5) == (32.0, 0.25 * 256 * 32)
    model = pc.nn.mlp(3, 4, 2, 3, key=jax.random.key(0))
    with pytest.raises(ValueError, match="one per hidden layer"):
        pc.with_precisions(model, hidden=[1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="hidden"):
        pc.with_precisions(model, hidden=-1.0)
    with pytest.raises(ValueError, match="last layer"):
        pc.PCModel(model.layers[:-1] + (eqx.tree_at(lambda l: l.log_variance, model.layers[-1], jnp.zeros(()),
                                                    is_leaf=lambda v: v is None),), model.output_energy)
    with pytest.raises(ValueError, match="precision"):
        pc.PCLayer(model.layers[0].module, precision=0.0)
    with pytest.raises(TypeError, match="log_variance"):
        pc.PCLayer(model.layers[0].module, log_variance=1.0)


def test_what_reads_the_energys_structure_treats_learnt_variances_honestly(unchecked):
    """The closed forms omit the log-determinant term, so they refuse learnt variances;
    the PC–BP comparison leaves the variances out (BP has no counterpart); a variance
    learns at the optimiser's base rate under every parameterisation; a bidirectional
    model refuses maps with precisions it would not use."""
    base = pc.nn.residual_mlp(5, 8, 3, 4, parameterisation=pc.MuPC(), activation="linear", dtype=jnp.float64,
                              key=jax.random.key(9))
    learnt = pc.with_learnt_variances(base, initial=2.0)
    x, y = data(jax.random.key(10), 4, 5, 3)
    with pytest.raises(ValueError, match="fixed precisions only"):
        pc.theory.equilibrium_energy(learnt, x, y)
    with pytest.raises(ValueError, match="fixed precisions only"):
        pc.theory.nonlinear_rescaling(learnt, x, y)
    z = pc.infer(learnt, x, y, solver=pc.NewtonKrylov(rtol=1e-10)).activities
    _, pc_grads = pc.pc_gradients(learnt, z, x, y)
    _, bp_grads = pc.bp_gradients(learnt, x, y)
    weights = [_flat([layer.module]) for layer in pc_grads.layers], [_flat([layer.module]) for layer in bp_grads.layers]
    u, v = jnp.concatenate(weights[0]), jnp.concatenate(weights[1])
    expected = float(u @ v / (jnp.linalg.norm(u) * jnp.linalg.norm(v)))
    assert float(pc.compare_gradients(pc_grads, bp_grads).cosine) == pytest.approx(expected, rel=1e-12)
    for layer in learnt.layers[:-1]:
        scaling = layer.parameter_scalings().log_variance
        assert (scaling.sgd_lr_scale, scaling.adam_lr_scale, scaling.weight_decay_scale) == (1.0, 1.0, 0.0)
    with pytest.raises(ValueError, match="precisions"):
        pc.BidirectionalModel(up=pc.with_precisions(base, hidden=2.0), down=None, gen_weight=0.0)
