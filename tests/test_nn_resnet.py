"""The 3-stage residual CNN of docs/background.md §3.3 against a hand-written batched forward.

Every expectation here is written from the §3.3 table and the conventions of the
builder's docstring (block z + a·W∗φ(z); stage convs after the first and the readout act
on φ(z); pools are plain 2×2 averages of z; the first conv acts on the raw image), with
the multipliers as closed forms. Only raw weights are read from the model.
"""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import cross_entropy

import pcscale as pc

C_IN, WIDTH, CLASSES = 3, 4, 5
ACTIVATIONS = {"tanh": (jnp.tanh, 5.0 / 3.0), "relu": (jax.nn.relu, math.sqrt(2.0))}


# ----------------------------------------------------------------- hand-written network
def hand_multipliers(parameterisation: str, *, c_in, width, n_res, image_size, gain):
    """Forward multipliers of §3.3 as closed forms: (first stage conv, other stage convs,
    block convs, readout)."""
    if parameterisation == "sp":
        return 1.0, 1.0, 1.0, 1.0
    l_eff = n_res + 4
    readout_fan_in = width * (image_size // 8) ** 2
    return (
        1.0 / math.sqrt(c_in * 9),
        1.0 / math.sqrt(9 * width),
        gain / math.sqrt(9 * width) / math.sqrt(l_eff),
        1.0 / readout_fan_in,
    )


def conv(x, w):
    """3×3 stride-1 padding-1 convolution of a batch, NCHW images and OIHW kernels."""
    return jax.lax.conv_general_dilated(
        x, w, window_strides=(1, 1), padding=((1, 1), (1, 1)),
        dimension_numbers=("NCHW", "OIHW", "NCHW"), precision=jax.lax.Precision.HIGHEST,
    )


def pool(z):
    b, c, h, w = z.shape
    return z.reshape(b, c, h // 2, 2, w // 2, 2).mean(axis=(3, 5))


def raw_weights(model, n_res):
    """(stage conv weights, block conv weights per stage, readout weight), read from the
    layer list [conv, blocks…, pool] × 3, readout."""
    per_stage = n_res // 3
    layers = model.layers
    stage, blocks, index = [], [], 0
    for _ in range(3):
        stage.append(layers[index].module.weight)
        blocks.append([layers[index + 1 + j].module.weight for j in range(per_stage)])
        assert isinstance(layers[index + 1 + per_stage].module, pc.nn.AvgPool2)
        index += per_stage + 2
    assert index == len(layers) - 1
    return stage, blocks, layers[-1].module.weight


def hand_forward(weights, multipliers, x, phi):
    """Returns the list of activities (every map's output but the readout) and logits."""
    stage, blocks, readout = weights
    a_first, a_stage, a_block, a_readout = multipliers
    activities = []
    z = x
    for s in range(3):
        z = a_first * conv(z, stage[0]) if s == 0 else a_stage * conv(phi(z), stage[s])
        activities.append(z)
        for w in blocks[s]:
            z = z + a_block * conv(phi(z), w)
            activities.append(z)
        z = pool(z)
        activities.append(z)
    flat = phi(z).reshape(z.shape[0], -1)  # channel-major flatten of (C, H, W)
    logits = a_readout * jnp.matmul(flat, readout.T, precision=jax.lax.Precision.HIGHEST)
    return activities, logits


def hand_loss(weights, multipliers, x, y, phi):
    return jnp.mean(cross_entropy(hand_forward(weights, multipliers, x, phi)[1], y))


def build(parameterisation, activation, n_res, image_size, *, dtype=jnp.float32, precision=1.0, seed=0,
          width=WIDTH):
    preset = pc.MuPC() if parameterisation == "mupc" else pc.SP()
    return pc.nn.resnet(
        C_IN, width, CLASSES, image_size=image_size, n_res=n_res, activation=activation,
        parameterisation=preset, output_precision=precision, dtype=dtype, key=jax.random.PRNGKey(seed),
    )


def images(seed, batch, side, dtype, channels=C_IN):
    """Gaussian images and one-hot labels (NumPy's RNG: deterministic, nothing to compile)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, channels, side, side))
    y = np.eye(CLASSES)[rng.integers(0, CLASSES, batch)]
    return jnp.asarray(x, dtype), jnp.asarray(y, dtype)


# ------------------------------------------------------------------------------ tests
# Two cases cover both presets, both activations and both depths in the default run;
# the rest of the product runs with -m slow (each case compiles its own network).
FORWARD_CASES = [
    pytest.param(p, a, n, marks=() if (p, a, n) in {("mupc", "tanh", 3), ("sp", "relu", 6)} else pytest.mark.slow)
    for p in ("mupc", "sp") for a in ("tanh", "relu") for n in (3, 6)
]


@pytest.mark.parametrize("parameterisation, activation, n_res", FORWARD_CASES)
def test_forward_matches_hand_written_resnet(parameterisation, activation, n_res):
    side = 16
    model = build(parameterisation, activation, n_res, side)
    phi, gain = ACTIVATIONS[activation]
    a = hand_multipliers(parameterisation, c_in=C_IN, width=WIDTH, n_res=n_res, image_size=side, gain=gain)
    x, _ = images(1, 3, side, jnp.float32)
    activities, expected = hand_forward(raw_weights(model, n_res), a, x, phi)

    out = model(x)
    assert out.dtype == jnp.float32 and out.shape == (3, CLASSES)
    scale = max(1.0, float(jnp.max(jnp.abs(expected))))
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-6 * scale)

    # The feedforward activities are the hand-written ones, pool outputs included.
    z = model.init_activities(x)
    assert len(z) == len(activities) == 3 * (2 + n_res // 3)
    for z_l, h_l in zip(z, activities):
        assert z_l.shape == h_l.shape
        np.testing.assert_allclose(z_l, h_l, rtol=1e-6, atol=1e-6 * max(1.0, float(jnp.max(jnp.abs(h_l)))))


@pytest.mark.parametrize("n_res", [0, 3, 6])
def test_activity_count_and_shapes(n_res):
    side, batch = 16, 2
    model = build("mupc", "tanh", n_res, side)
    z = model.init_activities(jnp.ones((batch, C_IN, side, side), jnp.float32))
    per_stage = n_res // 3
    expected = []
    for s in range(3):
        expected += [(batch, WIDTH, side >> s, side >> s)] * (1 + per_stage)  # conv, blocks
        expected.append((batch, WIDTH, side >> (s + 1), side >> (s + 1)))  # pool
    assert len(z) == 3 * (2 + n_res // 3)
    assert [tuple(z_l.shape) for z_l in z] == expected


@pytest.mark.parametrize("precision", [1.0, 0.3])
def test_feedforward_state_has_zero_errors_and_energy_is_lambda_times_ce(precision):
    side, n_res, parameterisation = 8, 3, "mupc"
    model = build(parameterisation, "tanh", n_res, side, dtype=jnp.float64, precision=precision)
    x, y = images(2, 4, side, jnp.float64)
    z = model.init_activities(x)
    for error in model.errors(z, x):
        assert float(jnp.max(jnp.abs(error))) == 0.0
    a = hand_multipliers(parameterisation, c_in=C_IN, width=WIDTH, n_res=n_res, image_size=side, gain=5 / 3)
    loss = hand_loss(raw_weights(model, n_res), a, x, y, jnp.tanh)
    np.testing.assert_allclose(model.loss(x, y), loss, rtol=1e-12)
    np.testing.assert_allclose(model.energy(z, x, y), precision * loss, rtol=1e-12)
    # Pool outputs are activities with their own error: perturbing one by δ gives the
    # error δ there (the pool has no parameters, so its prediction is unchanged).
    pool_index = 1 + n_res // 3
    delta = jnp.asarray(0.1 * np.random.default_rng(3).standard_normal(z[pool_index].shape))
    z_pert = tuple(z_l + delta if i == pool_index else z_l for i, z_l in enumerate(z))
    errors = model.errors(z_pert, x)
    np.testing.assert_allclose(errors[pool_index], delta, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("parameterisation, activation", [("mupc", "tanh"), ("sp", "relu")])
def test_pc_gradient_at_equilibrium_matches_hand_bp_gradient(parameterisation, activation):
    n_res, lam, side = 3, 1e-4, 8
    model = build(parameterisation, activation, n_res, side, dtype=jnp.float64, precision=lam)
    phi, gain = ACTIVATIONS[activation]
    a = hand_multipliers(parameterisation, c_in=C_IN, width=WIDTH, n_res=n_res, image_size=side, gain=gain)
    x, y = images(4, 4, side, jnp.float64)

    sol = pc.infer(model, x, y, solver=pc.GradientDescent(step_size=0.3, rtol=1e-9, max_steps=20_000))
    assert bool(sol.stats.result == pc.RESULTS.converged), sol.stats
    assert float(sol.stats.relative_residual) <= 1e-9

    # jit only to keep the test fast on CPU (one compilation instead of op-by-op).
    _, pc_grads = eqx.filter_jit(pc.pc_gradients)(model, sol.activities, x, y)
    bp_grads = jax.jit(jax.grad(hand_loss), static_argnums=4)(raw_weights(model, n_res), a, x, y, phi)
    pc_flat = jnp.concatenate([g.ravel() for g in jax.tree.leaves(raw_weights(pc_grads, n_res))])
    bp_flat = jnp.concatenate([g.ravel() for g in jax.tree.leaves(bp_grads)])
    # The PC gradient has no parameters beyond the convs and the readout.
    assert len(jax.tree.leaves(eqx.filter(pc_grads, eqx.is_array))) == 3 + n_res + 1
    assert pc_flat.shape == bp_flat.shape

    cosine = float(pc_flat @ bp_flat / (jnp.linalg.norm(pc_flat) * jnp.linalg.norm(bp_flat)))
    assert cosine > 0.999, cosine
    # For small λ, F* = λ·𝓛 + O(λ²), so the PC gradient is λ times the BP gradient.
    ratio = float(jnp.linalg.norm(pc_flat) / (lam * jnp.linalg.norm(bp_flat)))
    assert abs(ratio - 1.0) < 1e-2, ratio


# ---------------------------------------------------------------------------- bad input
@pytest.fixture(scope="module")
def model16():
    return build("mupc", "tanh", 3, 16)


@pytest.mark.parametrize("channels", [1, 4])
def test_wrong_channel_count_is_rejected(model16, channels):
    x = jnp.ones((2, channels, 16, 16), jnp.float32)
    with pytest.raises(ValueError, match="channels"):
        model16(x)
    with pytest.raises(ValueError, match="channels"):
        model16.init_activities(x)


@pytest.mark.parametrize("hw", [(8, 8), (16, 8), (12, 12)])
def test_wrong_image_size_is_rejected(model16, hw):
    x = jnp.ones((2, C_IN) + hw, jnp.float32)
    with pytest.raises(ValueError, match="image_size"):
        model16(x)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(image_size=12), "image_size"),
        (dict(image_size=(16, 20)), "image_size"),
        (dict(image_size=0), "image_size"),
        (dict(n_res=4), "n_res"),
        (dict(n_res=-3), "n_res"),
        (dict(width=0), "width"),
        (dict(in_channels=0), "in_channels"),
        (dict(output_dim=0), "output_dim"),
    ],
)
def test_bad_builder_arguments_are_rejected(kwargs, name):
    args = dict(in_channels=C_IN, width=WIDTH, output_dim=CLASSES)
    args.update({k: kwargs.pop(k) for k in list(kwargs) if k in args})
    with pytest.raises(ValueError, match=name):
        pc.nn.resnet(args["in_channels"], args["width"], args["output_dim"], key=jax.random.PRNGKey(0), **kwargs)
