"""Users' own Equinox blocks: roles declared or inferred, any preset applied
(pcscale.nn.parameterise, pcscale.nn.infer_roles, pcscale.Parameterised)."""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pcscale as pc
from pcscale import Role, WeightRole


class TwoLayerBranch(eqx.Module):
    """A user's residual branch: w2·tanh(w1·(g ⊙ z))."""

    w1: jax.Array
    w2: jax.Array
    g: jax.Array

    def __init__(self, width, *, key):
        k1, k2 = jax.random.split(key)
        self.w1 = jax.random.normal(k1, (4 * width, width))
        self.w2 = jax.random.normal(k2, (width, 4 * width))
        self.g = jnp.ones(width)

    def __call__(self, z):
        return self.w2 @ jnp.tanh(self.w1 @ (self.g * z))


KEY = jax.random.key(0)


def test_infer_roles_reads_width_axes():
    roles = pc.nn.infer_roles(TwoLayerBranch(8, key=KEY), TwoLayerBranch(32, key=KEY), branch=True,
                              branch_outputs=[".w2"])
    assert roles.w1 == WeightRole(Role.HIDDEN, fan_in=32, branch=True, branch_output=False)
    assert roles.w2 == WeightRole(Role.HIDDEN, fan_in=128, branch=True, branch_output=True)
    assert roles.g == WeightRole(Role.GAIN, fan_in=32, branch=True)


def test_infer_roles_on_an_equinox_mlp():
    base = eqx.nn.MLP(5, 3, width_size=8, depth=2, key=KEY)
    target = eqx.nn.MLP(5, 3, width_size=32, depth=2, key=KEY)
    roles = pc.nn.infer_roles(base, target)
    kinds = [(r.kind, r.fan_in) for r in jax.tree.leaves(roles, is_leaf=lambda r: isinstance(r, WeightRole))]
    assert kinds == [
        (Role.INPUT, 5), (Role.VECTOR, 32),
        (Role.HIDDEN, 32), (Role.VECTOR, 32),
        (Role.OUTPUT, 32), (Role.VECTOR, 3),
    ]


def test_parameterised_equinox_mlp_computes_the_mup_network():
    width = 32
    target = eqx.nn.MLP(5, 3, width_size=width, depth=2, activation=jnp.tanh, key=KEY)
    roles = pc.nn.infer_roles(eqx.nn.MLP(5, 3, width_size=8, depth=2, key=KEY), target)
    shape = pc.NetworkShape(width=width, depth=3)
    module = pc.nn.parameterise(target, roles, pc.MuP(gamma0=2.0), shape, key=jax.random.key(1))
    x = jax.random.normal(jax.random.key(2), (5,))
    w = [layer.weight for layer in module.module.layers]
    b = [layer.bias for layer in module.module.layers]
    # μP by hand: 1/√D input, 1/√N hidden, 1/(γ0·N) readout; biases start at zero.
    assert all(float(jnp.abs(bias).max()) == 0.0 for bias in b)
    h1 = jnp.tanh(w[0] @ x / math.sqrt(5))
    h2 = jnp.tanh(w[1] @ h1 / math.sqrt(width))
    expected = w[2] @ h2 / (2.0 * width)
    np.testing.assert_allclose(module(x), expected, rtol=1e-5, atol=1e-7)
    # N(0, 1) raw weights.
    assert float(jnp.std(w[1])) == pytest.approx(1.0, rel=0.1)


def test_branch_multiplier_lands_on_the_branch_output_only():
    width, depth = 16, 4
    target = TwoLayerBranch(width, key=KEY)
    roles = pc.nn.infer_roles(TwoLayerBranch(4, key=KEY), target, branch=True, branch_outputs=[".w2"])
    shape = pc.NetworkShape(width=width, depth=depth, residual=True)
    module = pc.nn.parameterise(target, roles, pc.MuPC(), shape, key=jax.random.key(3))
    z = jax.random.normal(jax.random.key(4), (width,))
    w1, w2, g = module.module.w1, module.module.w2, module.module.g
    expected = (w2 / math.sqrt(4 * width) / math.sqrt(depth)) @ jnp.tanh((w1 / math.sqrt(width)) @ (g * z))
    np.testing.assert_allclose(module(z), expected, rtol=1e-5, atol=1e-7)
    assert float(jnp.abs(g - 1).max()) == 0.0  # gains start at one


def test_per_leaf_learning_rates_reach_the_optimiser():
    # A PC network with a user's branch in the middle; one Adam step moves each raw weight
    # by η·scale·sign(g) (Adam's first step, with ε negligible), scale read from the
    # table: CompleteP with the per-role rule, depth 3 (one branch): branch η/√N, input
    # and readout η, the gain η.
    width, depth, eta = 8, 3, 1e-2
    shape = pc.NetworkShape(width=width, depth=depth, residual=True)
    preset = pc.CompleteP(adam_rule=pc.AdamRule.PER_ROLE)
    roles = pc.nn.infer_roles(TwoLayerBranch(4, key=KEY), TwoLayerBranch(width, key=KEY), branch=True,
                              branch_outputs=[".w2"])
    branch = pc.nn.parameterise(TwoLayerBranch(width, key=KEY), roles, preset, shape, key=jax.random.key(5))
    first = preset.scaling(WeightRole(Role.INPUT, fan_in=5), shape)
    last = preset.scaling(WeightRole(Role.OUTPUT, fan_in=width), shape)
    layers = (
        pc.PCLayer(pc.nn.Linear(jax.random.normal(jax.random.key(6), (width, 5), jnp.float64)), scaling=first),
        pc.PCLayer(branch, skip=True),
        pc.PCLayer(pc.nn.Linear(jax.random.normal(jax.random.key(7), (2, width), jnp.float64)), scaling=last,
                   activation=jnp.tanh),
    )
    model = pc.PCModel(layers, pc.MSE())
    model = jax.tree.map(lambda leaf: leaf.astype(jnp.float64) if eqx.is_inexact_array(leaf) else leaf, model)
    x = jax.random.normal(jax.random.key(8), (4, 5), jnp.float64)
    y = jax.random.normal(jax.random.key(9), (4, 2), jnp.float64)
    optimiser = pc.make_optimiser(model, pc.Adam(eta, eps=1e-30))
    state = optimiser.init(eqx.filter(model, eqx.is_array))
    new, _, _ = pc.bp_step(model, state, x, y, optimiser=optimiser)

    def hand_loss(w_in, w1, w2, g, w_out):
        h = (w_in @ x.T).T / math.sqrt(5)
        h = h + jax.vmap(lambda z: (w2 / math.sqrt(4 * width) / depth) @ jnp.tanh((w1 / math.sqrt(width)) @ (g * z)))(h)
        out = (w_out @ jnp.tanh(h).T).T / width
        return 0.5 * jnp.mean(jnp.sum((out - y) ** 2, axis=-1))

    params = (layers[0].module.weight, branch.module.w1, branch.module.w2, branch.module.g, layers[2].module.weight)
    grads = jax.grad(hand_loss, argnums=range(5))(*params)
    after = (new.layers[0].module.weight, new.layers[1].module.module.w1, new.layers[1].module.module.w2,
             new.layers[1].module.module.g, new.layers[2].module.weight)
    scales = (1.0, 1 / math.sqrt(width), 1 / math.sqrt(width), 1.0, 1.0)
    for before, moved, grad, scale in zip(params, after, grads, scales):
        np.testing.assert_allclose(moved - before, -eta * scale * jnp.sign(grad), rtol=1e-6, atol=1e-12)


def test_roles_as_a_function_of_the_path_and_keeping_values():
    module = TwoLayerBranch(8, key=KEY)

    def role(path, leaf):
        if path == ".g":
            return WeightRole(Role.GAIN, fan_in=8)
        return WeightRole(Role.HIDDEN, fan_in=leaf.shape[1])

    shape = pc.NetworkShape(width=8, depth=3)
    kept = pc.nn.parameterise(module, role, pc.MuP(), shape, reinitialise=False)
    assert kept.module.w1 is module.w1
    assert [s.multiplier for s in kept.scalings] == pytest.approx([1 / math.sqrt(8), 1 / math.sqrt(32), 1.0])


def test_bad_roles_and_modules_are_rejected(unchecked):
    base, target = TwoLayerBranch(4, key=KEY), TwoLayerBranch(8, key=KEY)
    shape = pc.NetworkShape(width=8, depth=3)
    with pytest.raises(ValueError, match="several hidden matrices.*branch_outputs"):
        pc.nn.infer_roles(base, target, branch=True)
    with pytest.raises(ValueError, match="branch_outputs.*'.w3'"):
        pc.nn.infer_roles(base, target, branch=True, branch_outputs=[".w3"])
    with pytest.raises(ValueError, match="does not change with width"):
        pc.nn.infer_roles(eqx.nn.Linear(3, 2, key=KEY), eqx.nn.Linear(3, 2, key=KEY))
    with pytest.raises(ValueError, match="same weights"):
        pc.nn.infer_roles(base, eqx.nn.Linear(3, 2, key=KEY))
    with pytest.raises(ValueError, match="one WeightRole per array leaf"):
        pc.nn.parameterise(target, [WeightRole(Role.HIDDEN, fan_in=8)], pc.MuP(), shape, key=KEY)
    with pytest.raises(ValueError, match="key"):
        pc.nn.parameterise(target, lambda p, w: WeightRole(Role.HIDDEN, fan_in=8), pc.MuP(), shape)
    with pytest.raises(TypeError, match="parameterisation"):
        pc.nn.parameterise(target, lambda p, w: WeightRole(Role.HIDDEN, fan_in=8), "mupc", shape, key=KEY)
    with pytest.raises(ValueError, match="one Scaling per array leaf"):
        pc.Parameterised(target, (pc.Scaling(),))


def test_a_nested_parameterised_module_or_a_double_scaling_is_refused():
    shape = pc.NetworkShape(width=8, depth=3)
    block = pc.nn.parameterise(TwoLayerBranch(8, key=KEY), lambda p, w: WeightRole(Role.HIDDEN, fan_in=8),
                               pc.MuP(), shape, key=KEY)
    with pytest.raises(ValueError, match="below its top level"):
        pc.PCLayer(eqx.nn.Sequential([block]))
    with pytest.raises(ValueError, match="scaling` must stay the default"):
        pc.PCLayer(block, scaling=pc.Scaling(multiplier=0.5))


def test_gain_is_for_hidden_matrices_and_output_biases_can_be_named():
    class Biased(eqx.Module):
        w_in: jax.Array
        w: jax.Array
        b: jax.Array

        def __init__(self, width):
            self.w_in, self.w, self.b = jnp.zeros((width, 3)), jnp.zeros((width, width)), jnp.zeros(width)

        def __call__(self, z):
            return self.w @ jnp.tanh(self.w_in @ z) + self.b

    roles = pc.nn.infer_roles(Biased(4), Biased(16), gain=5 / 3)
    assert roles.w_in.gain == 1.0 and roles.w.gain == 5 / 3
    roles = pc.nn.infer_roles(Biased(4), Biased(16), branch=True, branch_outputs=[".w", ".b"])
    assert roles.b.branch and roles.b.branch_output
    shape = pc.NetworkShape(width=16, depth=4, residual=True)
    assert pc.CompleteP().scaling(roles.b, shape).multiplier == pytest.approx(1 / 4)
    with pytest.raises(ValueError, match="no hidden"):
        pc.nn.infer_roles(eqx.nn.Linear(3, 4, key=KEY), eqx.nn.Linear(3, 8, key=KEY), branch=True)
