"""The VGG and ResNet-18 builders against hand counts and a hand-written plain-JAX forward.

Parameter counts are written out as arithmetic from the architectures (PCX's VGG-5 and
VGG-7, He et al.'s CIFAR ResNet-18 without BatchNorm). The reference forwards follow
PCX's order, conv + bias → φ → max-pool, and the pre-activation ResNet, using only the raw
weight arrays read from the built models; the μPC multipliers are the closed forms of
the μP family (gain/√fan_in, times L^(−1/2) on a residual branch's output, 1/(γ0·fan_in)
for the readout).
"""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import cross_entropy

import pcscale as pc
from pcscale.nn import VGGBlock

HIGHEST = jax.lax.Precision.HIGHEST
CLASSES = 5

# Tiny variants with the published block patterns (padding and pooling), few channels.
TINY_VGG5 = (VGGBlock(4, 1, True), VGGBlock(6, 1, True), VGGBlock(8, 1, True), VGGBlock(8, 1, True))
TINY_VGG7 = (
    VGGBlock(4, 1, True), VGGBlock(4, 1, False), VGGBlock(6, 1, True),
    VGGBlock(6, 0, False), VGGBlock(8, 1, True), VGGBlock(8, 0, False),
)
TINY_WIDTHS = (4, 8, 8, 8)


@eqx.filter_jit
def forward(model, x):
    """`model(x)`, compiled once as a whole (faster than op by op)."""
    return model(x)


def n_params(model) -> int:
    return sum(x.size for x in jax.tree.leaves(eqx.filter(model, eqx.is_array)))


def abstract(build, **kwargs):
    """The model's shapes without drawing its weights."""
    return eqx.filter_eval_shape(lambda key: build(key=key, **kwargs), jax.random.key(0))


def abstract_params(model) -> int:
    return sum(math.prod(x.shape) for x in jax.tree.leaves(model) if isinstance(x, jax.ShapeDtypeStruct))


def images(seed, batch, side, channels=3):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, channels, side, side))
    y = np.eye(CLASSES)[rng.integers(0, CLASSES, batch)]
    return jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32)


# ------------------------------------------------------------------- parameter counts
VGG5_CIFAR10 = (3 * 128 * 9 + 128) + (128 * 256 * 9 + 256) + (256 * 512 * 9 + 512) + (512 * 512 * 9 + 512) \
    + (512 * 2 * 2 * 10 + 10)
VGG5_CIFAR100 = (3 * 128 * 9 + 128) + (128 * 256 * 9 + 256) + (256 * 512 * 9 + 512) + (512 * 512 * 9 + 512) \
    + (512 * 2 * 2 * 100 + 100)
VGG7_CONVS = (3 * 128 * 9 + 128) + (128 * 128 * 9 + 128) + (128 * 256 * 9 + 256) + (256 * 256 * 9 + 256) \
    + (256 * 512 * 9 + 512) + (512 * 512 * 9 + 512)
VGG7_CIFAR10 = VGG7_CONVS + (512 * 1 * 1 * 10 + 10)
VGG7_TINY_IMAGENET = VGG7_CONVS + (512 * 4 * 4 * 200 + 200)
RESNET18_CIFAR10 = (
    3 * 64 * 9  # stem
    + 4 * (64 * 64 * 9)  # stage 1: two identity blocks
    + (64 * 128 * 9 + 128 * 128 * 9 + 64 * 128) + 2 * (128 * 128 * 9)  # stage 2
    + (128 * 256 * 9 + 256 * 256 * 9 + 128 * 256) + 2 * (256 * 256 * 9)  # stage 3
    + (256 * 512 * 9 + 512 * 512 * 9 + 256 * 512) + 2 * (512 * 512 * 9)  # stage 4
    + (512 * 10 + 10)  # readout
)


def test_hand_counts_match_the_published_totals():
    assert VGG5_CIFAR10 == 3_859_210
    # torchvision-style CIFAR ResNet-18: 11,173,962 parameters, of which 9,600 are
    # BatchNorm scales and shifts (2 per channel of the 16 block BNs, the stem's and the
    # three projections'); this network has none.
    bn = 2 * (64 + 4 * 64 + 4 * 128 + 4 * 256 + 4 * 512 + 128 + 256 + 512)
    assert bn == 9_600
    assert RESNET18_CIFAR10 == 11_173_962 - bn == 11_164_362


def test_vgg5_cifar10_parameter_count():
    model = pc.nn.vgg(3, 10, blocks=pc.nn.VGG5, image_size=32, key=jax.random.key(0))
    assert n_params(model) == VGG5_CIFAR10
    # The abstract build counts the same, and is what the other cases use.
    assert abstract_params(abstract(pc.nn.vgg, in_channels=3, output_dim=10, blocks=pc.nn.VGG5)) == VGG5_CIFAR10


@pytest.mark.parametrize("blocks, side, classes, expected", [
    (pc.nn.VGG5, 32, 100, VGG5_CIFAR100),
    (pc.nn.VGG7, 32, 10, VGG7_CIFAR10),
    (pc.nn.VGG7, 56, 200, VGG7_TINY_IMAGENET),
])
def test_vgg_parameter_counts(blocks, side, classes, expected):
    model = abstract(pc.nn.vgg, in_channels=3, output_dim=classes, blocks=blocks, image_size=side)
    assert abstract_params(model) == expected


def test_resnet18_parameter_count():
    model = abstract(pc.nn.resnet18, in_channels=3, output_dim=10)
    assert abstract_params(model) == RESNET18_CIFAR10
    assert len(model.layers) == 10


# -------------------------------------------------------------------- activity shapes
def activity_shapes(model, side, channels=3):
    x = jax.ShapeDtypeStruct((channels, side, side), jnp.float32)
    return [tuple(a.shape) for a in eqx.filter_eval_shape(lambda m, xi: m.activities_one(xi), model, x)]


@pytest.mark.parametrize("blocks, side, classes, expected", [
    (pc.nn.VGG5, 32, 10, [(128, 16, 16), (256, 8, 8), (512, 4, 4), (512, 2, 2)]),
    (pc.nn.VGG7, 32, 10, [(128, 16, 16), (128, 16, 16), (256, 8, 8), (256, 6, 6), (512, 3, 3), (512, 1, 1)]),
    (pc.nn.VGG7, 56, 200, [(128, 28, 28), (128, 28, 28), (256, 14, 14), (256, 12, 12), (512, 6, 6), (512, 4, 4)]),
])
def test_vgg_activity_shapes(blocks, side, classes, expected):
    model = abstract(pc.nn.vgg, in_channels=3, output_dim=classes, blocks=blocks, image_size=side)
    assert activity_shapes(model, side) == expected
    assert model.layers[-1].module.weight.shape == (classes, math.prod(expected[-1]))


def test_resnet18_activity_shapes():
    model = abstract(pc.nn.resnet18, in_channels=3, output_dim=10)
    assert activity_shapes(model, 32) == (
        [(64, 32, 32)] * 3 + [(128, 16, 16)] * 2 + [(256, 8, 8)] * 2 + [(512, 4, 4)] * 2
    )
    assert [layer.skip for layer in model.layers] == [False, True, True, False, True, False, True, False, True, False]


# -------------------------------------------------------- hand-written plain-JAX forwards
def conv(x, w, *, padding, stride=1):
    return jax.lax.conv_general_dilated(
        x, w, window_strides=(stride, stride), padding=((padding, padding), (padding, padding)),
        dimension_numbers=("NCHW", "OIHW", "NCHW"), precision=HIGHEST,
    )


def maxpool(x):
    return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 1, 2, 2), (1, 1, 2, 2), "VALID")


def vgg_weights(model):
    """([(conv weight, conv bias)] per block, (readout weight, readout bias))."""
    convs = [(layer.module.module.conv.weight, layer.module.module.bias) for layer in model.layers[:-1]]
    return convs, (model.layers[-1].module.weight, model.layers[-1].bias)


def vgg_forward(weights, blocks, x, phi):
    """PCX's VGG: pool(φ(conv(x) + b)) per block, then a linear readout of the flattened
    (channel-major) features."""
    convs, (w_out, b_out) = weights
    h = x
    for (w, b), block in zip(convs, blocks, strict=True):
        h = phi(conv(h, w, padding=block.padding) + b[None, :, None, None])
        if block.pool:
            h = maxpool(h)
    return jnp.matmul(h.reshape(h.shape[0], -1), w_out.T, precision=HIGHEST) + b_out[None, :]


def resnet18_weights(model):
    stem = model.layers[0].module.weight
    blocks = []
    for layer in model.layers[1:-1]:
        block = layer.module.module
        blocks.append((block.conv1.weight, block.conv2.weight, None if block.proj is None else block.proj.weight))
    return stem, blocks, (model.layers[-1].module.weight, model.layers[-1].bias)


def resnet18_forward(weights, x, phi):
    """Pre-activation ResNet-18 without BatchNorm: h ← shortcut + conv2(φ(conv1(φ(h)))),
    the shortcut h itself or a 1×1 stride-2 conv of φ(h); strides 1, 2, 2, 2 by stage."""
    stem, blocks, (w_out, b_out) = weights
    h = conv(x, stem, padding=1)
    for w1, w2, proj in blocks:
        a = phi(h)
        stride = 1 if proj is None else 2
        branch = conv(phi(conv(a, w1, padding=1, stride=stride)), w2, padding=1)
        h = (h if proj is None else conv(a, proj, padding=0, stride=2)) + branch
    pooled = jnp.mean(phi(h), axis=(2, 3))
    return jnp.matmul(pooled, w_out.T, precision=HIGHEST) + b_out[None, :]


def with_random_biases(model, where, seed):
    """The model with the biases that `where` picks set to non-zero values, so that
    their placement is tested."""
    biases = where(model)
    keys = jax.random.split(jax.random.key(seed), len(biases))
    new = [0.1 * jax.random.normal(k, b.shape, b.dtype) for k, b in zip(keys, biases, strict=True)]
    return eqx.tree_at(where, model, new)


def vgg_biases(model):
    return [layer.module.module.bias for layer in model.layers[:-1]] + [model.layers[-1].bias]


def readout_bias(model):
    return [model.layers[-1].bias]


def all_multipliers(model):
    """Every forward multiplier of the model, per layer and per Parameterised leaf."""
    out = []
    for layer in model.layers:
        out.append(layer.multiplier)
        if isinstance(layer.module, pc.Parameterised):
            out += [s.multiplier for s in layer.module.scalings]
    return out


@pytest.mark.parametrize("blocks, side, activation, phi", [
    (TINY_VGG5, 16, "relu", jax.nn.relu),
    (TINY_VGG7, 35, "relu", jax.nn.relu),  # odd sides: the pools round down
    (TINY_VGG7, 32, "tanh", jnp.tanh),
])
def test_vgg_forward_equals_pcx_order(blocks, side, activation, phi):
    model = pc.nn.vgg(3, CLASSES, blocks=blocks, image_size=side, activation=activation, key=jax.random.key(1))
    assert all(m == 1.0 for m in all_multipliers(model))  # SP: no multipliers
    model = with_random_biases(model, vgg_biases, 2)
    x, _ = images(0, 3, side)
    expected = jax.jit(vgg_forward, static_argnums=(1, 3))(vgg_weights(model), blocks, x, phi)
    np.testing.assert_allclose(forward(model, x), expected, rtol=1e-5, atol=1e-5)


def test_resnet18_forward_equals_hand_written():
    model = pc.nn.resnet18(3, CLASSES, image_size=8, widths=TINY_WIDTHS, key=jax.random.key(3))
    assert all(m == 1.0 for m in all_multipliers(model))
    model = with_random_biases(model, readout_bias, 4)
    x, _ = images(1, 2, 8)
    expected = jax.jit(resnet18_forward, static_argnums=2)(resnet18_weights(model), x, jax.nn.relu)
    np.testing.assert_allclose(forward(model, x), expected, rtol=1e-5, atol=1e-5)


def test_vgg_bp_gradient_equals_hand_written():
    side = 16
    model = pc.nn.vgg(3, CLASSES, blocks=TINY_VGG5, image_size=side, key=jax.random.key(5))
    model = with_random_biases(model, vgg_biases, 6)
    x, y = images(2, 4, side)

    def hand_loss(weights):
        return jnp.mean(cross_entropy(vgg_forward(weights, TINY_VGG5, x, jax.nn.relu), y))

    expected = jax.jit(jax.grad(hand_loss))(vgg_weights(model))
    grads = eqx.filter_jit(eqx.filter_grad(lambda m: m.loss(x, y)))(model)
    got = vgg_weights(grads)
    assert len(jax.tree.leaves(eqx.filter(grads, eqx.is_array))) == len(jax.tree.leaves(expected))
    for g, e in zip(jax.tree.leaves(got), jax.tree.leaves(expected), strict=True):
        np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("kernel, kwargs, padding, stride", [
    (3, {}, 1, 1), (5, {}, 2, 1),  # the defaults keep the side, as before padding and stride existed
    (3, dict(padding=0), 0, 1), (3, dict(padding=1, stride=2), 1, 2), (1, dict(padding=0, stride=2), 0, 2),
])
def test_conv2d_padding_and_stride(kernel, kwargs, padding, stride):
    rng = np.random.default_rng(9)
    w = jnp.asarray(rng.standard_normal((4, 3, kernel, kernel)), jnp.float32)
    x = jnp.asarray(rng.standard_normal((3, 7, 7)), jnp.float32)
    expected = conv(x[None], w, padding=padding, stride=stride)[0]
    np.testing.assert_allclose(pc.nn.Conv2d(w, **kwargs)(x), expected, rtol=1e-5, atol=1e-5)


def test_maxpool_rounds_down_odd_sides():
    x = jnp.arange(2 * 5 * 7, dtype=jnp.float32).reshape(2, 5, 7) * jnp.array([1.0, -1.0])[:, None, None]
    cropped = x[:, :4, :6].reshape(2, 2, 2, 3, 2)
    np.testing.assert_array_equal(pc.nn.MaxPool2()(x), cropped.max(axis=(2, 4)))


# ------------------------------------------------------------------------------- μPC
def mupc_multiplier(kind, fan_in, *, gain=1.0, branch_output=False, depth=1, gamma0=1.0):
    """μPC (α = 1/2) multipliers: gain/√fan_in, times L^(−1/2) on a branch's output;
    1/(γ0·fan_in) for the readout; 1 for biases."""
    if kind == "output":
        return 1.0 / (gamma0 * fan_in)
    if kind == "vector":
        return 1.0
    return gain / math.sqrt(fan_in) * (depth**-0.5 if branch_output else 1.0)


def test_vgg_under_mupc():
    side, relu_gain = 32, math.sqrt(2.0)
    model = pc.nn.vgg(3, CLASSES, blocks=TINY_VGG7, image_size=side, parameterisation=pc.MuPC(),
                      key=jax.random.key(7))
    x, _ = images(3, 2, side)
    assert bool(jnp.all(jnp.isfinite(forward(model, x))))
    expected, channels_in = [], 3
    for index, block in enumerate(TINY_VGG7):
        kind, gain = ("input", 1.0) if index == 0 else ("hidden", relu_gain)
        expected.append([1.0, mupc_multiplier(kind, 9 * channels_in, gain=gain), 1.0])  # layer, weight, bias
        channels_in = block.channels
    expected.append([mupc_multiplier("output", 8 * 1 * 1)])
    got = [[layer.multiplier] + ([s.multiplier for s in layer.module.scalings]
                                 if isinstance(layer.module, pc.Parameterised) else [])
           for layer in model.layers]
    assert len(got) == len(expected)
    for g, e in zip(got, expected, strict=True):
        np.testing.assert_allclose(g, e, rtol=1e-12)


def test_resnet18_under_mupc():
    model = pc.nn.resnet18(3, CLASSES, image_size=8, widths=TINY_WIDTHS, parameterisation=pc.MuPC(),
                           key=jax.random.key(8))
    x, _ = images(4, 2, 8)
    assert bool(jnp.all(jnp.isfinite(forward(model, x))))
    g, depth = math.sqrt(2.0), 10
    assert model.layers[0].multiplier == pytest.approx(mupc_multiplier("input", 3 * 9))
    stage_of_block = [0, 0, 1, 1, 2, 2, 3, 3]
    channels_in = TINY_WIDTHS[0]
    for layer, stage in zip(model.layers[1:-1], stage_of_block, strict=True):
        c = TINY_WIDTHS[stage]
        got = [s.multiplier for s in layer.module.scalings]
        if layer.skip:  # identity block: conv1, conv2 in a residual branch, conv2 its output
            expected = [mupc_multiplier("hidden", 9 * c, gain=g),
                        mupc_multiplier("hidden", 9 * c, gain=g, branch_output=True, depth=depth)]
        else:  # downsampling block: conv1 (stride 2), conv2, 1×1 projection; no branch
            expected = [mupc_multiplier("hidden", 9 * channels_in, gain=g), mupc_multiplier("hidden", 9 * c, gain=g),
                        mupc_multiplier("hidden", channels_in, gain=g)]
        np.testing.assert_allclose(got, expected, rtol=1e-12)
        channels_in = c
    assert model.layers[-1].multiplier == pytest.approx(mupc_multiplier("output", TINY_WIDTHS[-1]))


def test_biases_are_treated_as_vectors_and_the_feedforward_state_has_zero_errors():
    side = 16
    model = pc.nn.vgg(3, CLASSES, blocks=TINY_VGG5, image_size=side, parameterisation=pc.MuPC(),
                      key=jax.random.key(10))
    scalings = jax.tree.leaves(model.parameter_scalings(), is_leaf=lambda s: isinstance(s, pc.Scaling))
    params = jax.tree.leaves(eqx.filter(model, eqx.is_array))
    assert len(scalings) == len(params) == 2 * len(model.layers)
    for leaf, scaling in zip(params, scalings, strict=True):
        # Biases (vectors) start at zero without weight decay; weights are decayed.
        assert (scaling.weight_decay_scale == 0.0) == (leaf.ndim == 1)
    x, y = images(5, 2, side)
    z = eqx.filter_jit(lambda m, x: m.init_activities(x))(model, x)
    energy, loss = eqx.filter_jit(lambda m, z, x, y: (m.energy(z, x, y), m.loss(x, y)))(model, z, x, y)
    np.testing.assert_allclose(energy, loss, rtol=1e-6)


# ------------------------------------------------------------------------------ errors
def test_too_small_image_is_rejected():
    # VGG-7 needs 32: 31 → 15 → 15 → 7 → 5 → 2 → 0.
    with pytest.raises(ValueError, match=r"`image_size` 28 .*smallest valid image side is 32"):
        pc.nn.vgg(3, 10, blocks=pc.nn.VGG7, image_size=28, key=jax.random.key(0))
    with pytest.raises(ValueError, match=r"`image_size` 31 .* 32"):
        pc.nn.vgg(3, 10, blocks=TINY_VGG7, image_size=31, key=jax.random.key(0))
    with pytest.raises(ValueError, match=r"`image_size` 15 .* 16"):
        pc.nn.vgg(3, 10, blocks=TINY_VGG5, image_size=15, key=jax.random.key(0))


# A wrong type may be caught first by the test run's runtime type checker (a TypeError
# naming the parameter in quotes), so those cases match the bare name.
@pytest.mark.parametrize("args, error, pattern", [
    ((0, 1, True), ValueError, "`channels`"),
    ((8, 2, True), ValueError, "`padding`"),
    ((8, 1, 1), TypeError, "pool"),
])
def test_bad_vgg_block_is_rejected(args, error, pattern):
    with pytest.raises(error, match=pattern):
        VGGBlock(*args)


@pytest.mark.parametrize("kwargs, error, pattern", [
    (dict(blocks=()), ValueError, "`blocks`"),
    (dict(blocks=[(8, 1, True)]), TypeError, "blocks"),
    (dict(blocks=TINY_VGG5, image_size=0), ValueError, "`image_size`"),
    (dict(blocks=TINY_VGG5, activation="softsign"), ValueError, "`activation`"),
])
def test_bad_vgg_arguments_are_rejected(kwargs, error, pattern):
    with pytest.raises(error, match=pattern):
        pc.nn.vgg(3, 10, key=jax.random.key(0), **kwargs)


@pytest.mark.parametrize("kwargs, name", [
    (dict(widths=(4, 8, 8)), "widths"),
    (dict(widths=(4, 0, 8, 8)), "widths"),
    (dict(image_size=0), "image_size"),
    (dict(in_channels=0), "in_channels"),
])
def test_bad_resnet18_arguments_are_rejected(kwargs, name):
    arguments = dict(in_channels=3, output_dim=10, key=jax.random.key(0)) | kwargs
    with pytest.raises(ValueError, match=f"`{name}`"):
        pc.nn.resnet18(**arguments)
