"""VGG-style convolutional PC networks, with the VGG-5 and VGG-7 of the PCX benchmark
(Pinchetti et al. 2024, "Benchmarking predictive coding networks – made simple")."""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Callable, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from .._energy import AbstractOutputEnergy, CrossEntropy
from .._layer import PCLayer
from .._model import PCModel
from .._parameterisation import SP, AbstractParameterisation
from .._roles import NetworkShape, Role, WeightRole
from ._activation import activation_gain, identity, resolve_activation
from ._checks import check_dtype, check_key, check_parameterisation, positive_int
from ._custom import parameterise
from ._resnet import Conv2d, Readout

KERNEL = 3


@dataclasses.dataclass(frozen=True)
class VGGBlock:
    """One convolutional block of [`vgg`][pcscale.nn.vgg]: a 3×3 convolution with stride
    1 and a per-channel bias, optionally followed by a 2×2 max-pool with stride 2.

    **Arguments:**

    - `channels`: the number of output channels, a positive integer.
    - `padding`: the zero padding on each side, 0 or 1: 1 keeps the side, 0 shrinks it
      by 2.
    - `pool`: whether a 2×2 max-pool with stride 2 halves the side (rounding down).
    """

    channels: int
    padding: int
    pool: bool

    def __post_init__(self):
        channels = self.channels
        if isinstance(channels, bool) or not isinstance(channels, numbers.Integral) or channels < 1:
            raise ValueError(
                f"`channels` of a VGGBlock must be a positive integer, got {channels!r}; e.g. "
                "VGGBlock(channels=128, padding=1, pool=True)."
            )
        if isinstance(self.padding, bool) or self.padding not in (0, 1):
            raise ValueError(
                f"`padding` of a VGGBlock must be 0 or 1 (3×3 kernels), got {self.padding!r}."
            )
        if not isinstance(self.pool, bool):
            raise TypeError(f"`pool` of a VGGBlock must be a bool, got {self.pool!r}.")


VGG5 = (VGGBlock(128, 1, True), VGGBlock(256, 1, True), VGGBlock(512, 1, True), VGGBlock(512, 1, True))
"""The VGG-5 of the PCX benchmark (Pinchetti et al. 2024): four conv blocks with 128,
256, 512 and 512 channels, padding 1, each max-pooled. On 32×32 images the activities are
(128, 16, 16), (256, 8, 8), (512, 4, 4) and (512, 2, 2), and the readout has fan-in
2048."""

VGG7 = (
    VGGBlock(128, 1, True), VGGBlock(128, 1, False), VGGBlock(256, 1, True),
    VGGBlock(256, 0, False), VGGBlock(512, 1, True), VGGBlock(512, 0, False),
)
"""The VGG-7 of the PCX benchmark (Pinchetti et al. 2024): six conv blocks with 128, 128,
256, 256, 512 and 512 channels; the padding-0 blocks shrink the side by 2. On 32×32
images the last activity is (512, 1, 1) (readout fan-in 512); on 56×56 crops (Tiny
ImageNet) it is (512, 4, 4) (fan-in 8192)."""


class MaxPool2(eqx.Module):
    """2×2 max pooling with stride 2 of one (C, H, W) image; an odd side drops its last
    row or column (rounding down, as PyTorch's `MaxPool2d(2)`)."""

    def __call__(self, x: Float[Array, "c height width"]) -> Float[Array, "c half_height half_width"]:
        if x.ndim != 3 or min(x.shape[1:]) < 2:
            raise ValueError(
                f"cannot 2×2 max-pool an activity of shape {tuple(x.shape)}: it needs one "
                "(channels, height, width) image with sides of at least 2; the images are "
                "smaller than the `image_size` the model was built with."
            )
        # A concrete −inf lets JAX recognise the max monoid, whose reduction it can
        # differentiate (a traced initial value would not be).
        return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 2, 2), (1, 2, 2), "VALID")


class ConvPool(eqx.Module):
    """One VGG block map for one (C, H, W) image: conv, then the optional 2×2 max-pool,
    then the per-channel bias. The bias is a vector of the block's channels, so that the
    optimiser treats it as a vector; adding it after the pool equals adding it before,
    as it is constant over each channel."""

    conv: Conv2d
    bias: Float[Array, " out"]
    pool: Callable[[Array], Array] | None = None

    def __call__(self, x: Float[Array, "in height width"]) -> Float[Array, "out h w"]:
        out = self.conv(x)
        if self.pool is not None:
            out = self.pool(out)
        return out + self.bias[:, None, None]


def _image_sides(value) -> tuple[int, int]:
    sides = (value, value) if not isinstance(value, (tuple, list)) else tuple(value)
    if len(sides) != 2:
        raise ValueError(f"`image_size` must be an int or (height, width), got {value!r}.")
    height, width = (positive_int(s, "image_size", "pass the image side, e.g. 32") for s in sides)
    return height, width


def block_side(side: int, block: VGGBlock) -> int:
    """The side of a block's output for an input of side `side` (3×3 kernel, stride 1)."""
    out = side + 2 * block.padding - (KERNEL - 1)
    return out // 2 if block.pool else out


def smallest_side(blocks: Sequence[VGGBlock]) -> int:
    """The smallest image side for which every activity of `blocks` has side ≥ 1."""
    need = 1
    for block in reversed(blocks):
        if block.pool:
            need *= 2
        need = max(1, need + (KERNEL - 1) - 2 * block.padding)
    return need


def _check_blocks(blocks) -> tuple[VGGBlock, ...]:
    if isinstance(blocks, (str, bytes)) or not isinstance(blocks, Sequence) or len(blocks) == 0:
        raise ValueError(
            f"`blocks` must be a non-empty sequence of pcscale.nn.VGGBlock, got {blocks!r}; e.g. "
            "blocks=pcscale.nn.VGG5."
        )
    for index, block in enumerate(blocks):
        if not isinstance(block, VGGBlock):
            raise TypeError(
                f"`blocks[{index}]` must be a pcscale.nn.VGGBlock, got {block!r}; write e.g. "
                "VGGBlock(channels=128, padding=1, pool=True)."
            )
    return tuple(blocks)


def _check_image_size(image_size, blocks: tuple[VGGBlock, ...]) -> tuple[int, int]:
    height, width = _image_sides(image_size)
    smallest = smallest_side(blocks)
    if min(height, width) < smallest:
        raise ValueError(
            f"`image_size` {image_size!r} is too small for these blocks: an activity would have a "
            f"side below 1. The smallest valid image side is {smallest}; pass image_size >= "
            f"{smallest}, or use fewer pooling or padding-0 blocks."
        )
    for block in blocks:
        height, width = block_side(height, block), block_side(width, block)
    return height, width


def _role_by_rank(matrix: WeightRole, vector: WeightRole) -> Callable[[str, Array], WeightRole]:
    return lambda path, leaf: matrix if jnp.ndim(leaf) >= 2 else vector


def vgg(
    in_channels: int,
    output_dim: int,
    *,
    blocks: Sequence[VGGBlock],
    image_size: int | tuple[int, int] = 32,
    pool: Callable[[Array], Array] | None = None,
    activation: str | Callable[[Array], Array] = "relu",
    gain: float | None = None,
    parameterisation: AbstractParameterisation = SP(),
    output_energy: AbstractOutputEnergy = CrossEntropy(),
    output_precision: float = 1.0,
    dtype=jnp.float32,
    key: PRNGKeyArray,
) -> PCModel:
    r"""A VGG-style CNN as a PC network: conv blocks, then one linear readout.

    Each [`VGGBlock`][pcscale.nn.VGGBlock] is one layer map, for one (C, H, W) image,

    - block: f(z) = maxpool₂(a·W ∗ φ(z)) + b (3×3 kernel, stride 1, the block's
      padding; the max-pool only if the block has `pool`), with b a per-channel bias
      outside the multiplier (adding it after the pool equals adding it before, as it is
      constant over each channel). The first block reads the image and gets no φ;
    - readout: f(z) = a·W·flatten(φ(z)) + b.

    The PC activities are the block outputs (pre-activations, after the pool) and the
    logits are the output. PCX's VGGs (Pinchetti et al. 2024) compute
    maxpool₂(φ(W ∗ x + b)) and keep those post-activation values as activities; for a
    non-decreasing φ (ReLU, tanh, linear; not GELU) the max-pool commutes with φ, so the
    feedforward function of this network equals PCX's exactly, while its activities are
    pre-activations, as everywhere in pcscale. [`VGG5`][pcscale.nn.VGG5] and
    [`VGG7`][pcscale.nn.VGG7] are the published architectures.

    Roles: first conv `INPUT` (fan-in 9·C_in), the other convs `HIDDEN` (fan-in 9·C of
    their input, with the activation's gain, as they read φ(z); no residual branches),
    readout `OUTPUT` (fan-in C·H·W of the last activity), biases `VECTOR` (zero at
    initialisation). The network shape is N = the widest block's channels, L = the number
    of blocks + 1, no residual branches. Each block's module is a
    [`Parameterised`][pcscale.Parameterised] carrying the scalings of its weight and bias:
    the conv bias is a (C,) vector inside the block's map (`layer.module.module.bias`),
    not the PCLayer's `bias`, which would need the shape (C, 1, 1) and would then be
    scaled by the optimiser as a matrix. Its multiplier is 1, so it stays outside a.

    **Arguments:**

    - `in_channels`: C_in, the number of image channels (3 for RGB).
    - `output_dim`: the number of classes.
    - `blocks`: a non-empty sequence of [`VGGBlock`][pcscale.nn.VGGBlock], e.g.
      `pcscale.nn.VGG5` or `pcscale.nn.VGG7`.
    - `image_size`: the input side (or (height, width)); every activity must keep a
      side of at least 1. Default 32.
    - `pool`: the 2×2 pooling of the blocks with `pool` set: `MaxPool2()` (the default,
      as published) or [`AvgPool2()`][pcscale.nn.AvgPool2] (even sides only). A
      max-pool, like a ReLU, puts kinks into the PC energy, whose minimum then generally
      lies on a kink where the gradient does not vanish: certified inference (a gradient
      norm below a tolerance) can stall there. Average pooling with a smooth φ (tanh,
      GELU) keeps the energy smooth (docs/bench_suite.md measures both).
    - `activation`: φ, a callable or one of "linear", "tanh", "relu", "gelu". Default
      "relu", as in PCX.
    - `gain`: the activation gain of the hidden convs' multipliers; needed only for a
      custom callable `activation` (tanh 5/3, ReLU √2, linear 1, GELU 1.5335).
    - `parameterisation`: e.g. `pcscale.MuPC()`; default `pcscale.SP()`.
    - `output_energy`: default `pcscale.CrossEntropy()` (one-hot targets).
    - `output_precision`: λ. Default 1.
    - `dtype`: parameter dtype. Default float32.
    - `key`: a JAX PRNG key.

    **Returns:** a [`PCModel`][pcscale.PCModel] taking batches of (C_in, H, W) images.
    """
    in_channels = positive_int(in_channels, "in_channels", "pass the image channels, e.g. 3")
    output_dim = positive_int(output_dim, "output_dim", "pass the number of classes, e.g. 10")
    blocks = _check_blocks(blocks)
    height, width = _check_image_size(image_size, blocks)
    check_parameterisation(parameterisation)
    check_dtype(dtype)
    check_key(key)
    if pool is not None and not callable(pool):
        raise TypeError(f"`pool` must be a pooling module such as pcscale.nn.MaxPool2() or pcscale.nn.AvgPool2(), "
                        f"got {pool!r}.")
    phi = resolve_activation(activation)
    hidden_gain = activation_gain(phi, gain)
    shape = NetworkShape(width=max(block.channels for block in blocks), depth=len(blocks) + 1, residual=False)
    keys = iter(jax.random.split(key, len(blocks) + 2))

    layers = []
    channels_in = in_channels
    for index, block in enumerate(blocks):
        fan_in = channels_in * KERNEL * KERNEL
        if index == 0:
            role = WeightRole(Role.INPUT, fan_in=fan_in)
        else:
            role = WeightRole(Role.HIDDEN, fan_in=fan_in, gain=hidden_gain)
        placeholder = ConvPool(
            Conv2d(jnp.zeros((block.channels, channels_in, KERNEL, KERNEL), dtype), padding=block.padding),
            jnp.zeros((block.channels,), dtype),
            (MaxPool2() if pool is None else pool) if block.pool else None,
        )
        roles = _role_by_rank(role, WeightRole(Role.VECTOR, fan_in=fan_in))
        module = parameterise(placeholder, roles, parameterisation, shape, key=next(keys))
        layers.append(PCLayer(module, activation=identity if index == 0 else phi))
        channels_in = block.channels

    features = channels_in * height * width
    readout = parameterisation.scaling(WeightRole(Role.OUTPUT, fan_in=features), shape)
    vector = parameterisation.scaling(WeightRole(Role.VECTOR, fan_in=features), shape)
    weight = readout.sample((output_dim, features), dtype, key=next(keys))
    bias = vector.sample((output_dim,), dtype, key=next(keys))
    layers.append(
        PCLayer(Readout(weight), bias=bias, scaling=readout, vector_scaling=vector, activation=phi)
    )
    return PCModel(tuple(layers), output_energy, output_precision=float(output_precision))
