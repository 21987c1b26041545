"""The CIFAR ResNet-18 (He et al. 2016) in its pre-activation form, without BatchNorm, as a
PC network."""

from __future__ import annotations

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
from ._resnet import Conv2d
from ._vgg import _image_sides

KERNEL = 3
STRIDES = (1, 2, 2, 2)
BLOCKS_PER_STAGE = 2


class BasicBlock(eqx.Module):
    """The map of one pre-activation basic block, for one (C, H, W) input x = φ(z):
    conv2(φ(conv1(x))), plus the projection proj(x) when the block has one (the
    downsampling blocks). The identity shortcut of the other blocks is the enclosing
    PCLayer's skip."""

    conv1: Conv2d
    conv2: Conv2d
    proj: Conv2d | None = None
    activation: Callable[[Array], Array] = eqx.field(static=True, default=identity)

    def __call__(self, x: Float[Array, "in height width"]) -> Float[Array, "out h w"]:
        out = self.conv2(self.activation(self.conv1(x)))
        return out if self.proj is None else out + self.proj(x)


class GlobalPoolReadout(eqx.Module):
    """Average one (C, H, W) activity over its height and width, then map the C channels
    linearly to the output."""

    weight: Float[Array, "out c"]

    def __call__(self, x: Float[Array, "c height width"]) -> Float[Array, " out"]:
        if x.ndim != 3 or x.shape[0] != self.weight.shape[1]:
            raise ValueError(
                f"the readout expects a ({self.weight.shape[1]}, height, width) activity, got "
                f"shape {tuple(x.shape)}."
            )
        return self.weight @ jnp.mean(x, axis=(1, 2))


def _widths(widths) -> tuple[int, int, int, int]:
    if isinstance(widths, (str, bytes)) or not isinstance(widths, (tuple, list)) or len(widths) != 4:
        raise ValueError(
            f"`widths` must be four positive integers (the channels of the four stages), got "
            f"{widths!r}; the standard ResNet-18 has widths=(64, 128, 256, 512)."
        )
    a, b, c, d = (positive_int(w, "widths", "e.g. widths=(64, 128, 256, 512)") for w in widths)
    return a, b, c, d


def _roles_by_path(roles: dict[str, WeightRole]) -> Callable[[str, Array], WeightRole]:
    return lambda path, leaf: roles[path]


def resnet18(
    in_channels: int,
    output_dim: int,
    *,
    image_size: int | tuple[int, int] = 32,
    widths: Sequence[int] = (64, 128, 256, 512),
    activation: str | Callable[[Array], Array] = "relu",
    gain: float | None = None,
    parameterisation: AbstractParameterisation = SP(),
    output_energy: AbstractOutputEnergy = CrossEntropy(),
    output_precision: float = 1.0,
    dtype=jnp.float32,
    key: PRNGKeyArray,
) -> PCModel:
    r"""The CIFAR ResNet-18 (He et al. 2016) as a PC network, in its pre-activation form
    (He et al. 2016b) without BatchNorm and without conv biases.

    A 3×3 stem conv (C_in → widths[0], stride 1), four stages of two basic blocks with
    `widths` channels and strides 1, 2, 2, 2, global average pooling and a linear readout
    with a bias. There is no BatchNorm: a PC energy is a sum over samples, each with its
    own activities, so the layer maps must act on one sample at a time. The layer maps,
    for one (C, H, W) image (all 3×3 convs have padding 1):

    - stem: f(x) = a·W ∗ x (the image, no φ);
    - identity block: f(z) = z + conv2(φ(conv1(φ(z)))) (the skip adds the
      pre-activation z);
    - downsampling block (the first of stages 2–4): f(z) = proj(φ(z)) +
      conv2(φ(conv1(φ(z)))), with conv1 of stride 2 and proj a 1×1 stride-2 conv
      (padding 0) from the stage's input channels to its output channels;
    - readout: f(z) = a·W·avgpool(φ(z)) + b, avgpool the mean over height and width.

    So the PC activities are the stem output and the eight block outputs (pre-activations),
    and the logits are the output: 10 layer maps. The output of conv1 inside a block is
    computed feedforward within the block's map; it is not a PC activity and has no
    error of its own.

    Each block's module is a [`Parameterised`][pcscale.Parameterised] with one scaling
    per conv (its multiplier applied to the weight). Roles: stem `INPUT` (fan-in 9·C_in);
    every block conv `HIDDEN` with its fan-in (9·C_in of the conv, C_in for the
    projection) and the activation's gain, as each reads φ of something; the convs of
    identity blocks sit in a residual branch, with conv2 its output (carrying the depth
    factor L^(−α) of the μP family); the downsampling blocks have no skip and no branch;
    readout `OUTPUT` (fan-in widths[3]), its bias `VECTOR` (zero at initialisation). The
    network shape is N = widths[0], L = 10, residual.

    **Arguments:**

    - `in_channels`: C_in, the number of image channels (3 for RGB).
    - `output_dim`: the number of classes.
    - `image_size`: the input side (or (height, width)). Global average pooling makes the
      network accept any size; this is checked to be positive. Default 32.
    - `widths`: the channels of the four stages. Default (64, 128, 256, 512).
    - `activation`: φ, a callable or one of "linear", "tanh", "relu", "gelu". Default
      "relu".
    - `gain`: the activation gain of the block convs' multipliers; needed only for a
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
    _image_sides(image_size)
    stage_widths = _widths(widths)
    check_parameterisation(parameterisation)
    check_dtype(dtype)
    check_key(key)
    phi = resolve_activation(activation)
    hidden_gain = activation_gain(phi, gain)
    depth = 2 + len(STRIDES) * BLOCKS_PER_STAGE
    shape = NetworkShape(width=stage_widths[0], depth=depth, residual=True)
    keys = iter(jax.random.split(key, depth + 1))
    k2 = KERNEL * KERNEL

    def zeros(*sides: int) -> Array:
        return jnp.zeros(sides, dtype)

    stem_scaling = parameterisation.scaling(WeightRole(Role.INPUT, fan_in=in_channels * k2), shape)
    stem = stem_scaling.sample((stage_widths[0], in_channels, KERNEL, KERNEL), dtype, key=next(keys))
    layers = [PCLayer(Conv2d(stem, padding=1), scaling=stem_scaling)]

    channels_in = stage_widths[0]
    for channels, first_stride in zip(stage_widths, STRIDES, strict=True):
        for index in range(BLOCKS_PER_STAGE):
            stride = first_stride if index == 0 else 1
            downsample = stride != 1 or channels != channels_in
            conv1 = Conv2d(zeros(channels, channels_in, KERNEL, KERNEL), padding=1, stride=stride)
            conv2 = Conv2d(zeros(channels, channels, KERNEL, KERNEL), padding=1)
            proj = Conv2d(zeros(channels, channels_in, 1, 1), padding=0, stride=stride) if downsample else None
            roles = {
                ".conv1.weight": WeightRole(
                    Role.HIDDEN, fan_in=channels_in * k2, branch=not downsample, branch_output=False,
                    gain=hidden_gain,
                ),
                ".conv2.weight": WeightRole(
                    Role.HIDDEN, fan_in=channels * k2, branch=not downsample, gain=hidden_gain
                ),
                ".proj.weight": WeightRole(Role.HIDDEN, fan_in=channels_in, gain=hidden_gain),
            }
            block = BasicBlock(conv1, conv2, proj, activation=phi)
            module = parameterise(block, _roles_by_path(roles), parameterisation, shape, key=next(keys))
            layers.append(PCLayer(module, skip=not downsample, activation=phi))
            channels_in = channels

    readout = parameterisation.scaling(WeightRole(Role.OUTPUT, fan_in=channels_in), shape)
    vector = parameterisation.scaling(WeightRole(Role.VECTOR, fan_in=channels_in), shape)
    weight = readout.sample((output_dim, channels_in), dtype, key=next(keys))
    bias = vector.sample((output_dim,), dtype, key=next(keys))
    layers.append(
        PCLayer(GlobalPoolReadout(weight), bias=bias, scaling=readout, vector_scaling=vector, activation=phi)
    )
    return PCModel(tuple(layers), output_energy, output_precision=float(output_precision))
