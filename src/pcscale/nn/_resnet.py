"""The 3-stage residual CNN of docs/background.md §3.3 as a PC network."""

from __future__ import annotations

import numbers
from collections.abc import Callable

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

KERNEL = 3
STAGES = 3


class Conv2d(eqx.Module):
    """A 3×3 (any odd k×k) convolution of one unbatched (C, H, W) image, stride 1, padding
    k//2 (the side is kept), no bias; the multiplier lives in the enclosing PCLayer.

    `padding` (zero padding on every side, default k//2) and `stride` (default 1) set
    other geometries: the VGG blocks use padding 0, the ResNet-18 downsampling blocks
    stride 2 (padding 1 for 3×3, 0 for the 1×1 projection).
    """

    weight: Float[Array, "out in k k"]
    padding: int | None = eqx.field(static=True, default=None)
    stride: int = eqx.field(static=True, default=1)

    def __check_init__(self):
        if self.padding is not None and (
            isinstance(self.padding, bool) or not isinstance(self.padding, numbers.Integral) or self.padding < 0
        ):
            raise ValueError(f"`padding` must be None or a non-negative integer, got {self.padding!r}.")
        if isinstance(self.stride, bool) or not isinstance(self.stride, numbers.Integral) or self.stride < 1:
            raise ValueError(f"`stride` must be a positive integer, got {self.stride!r}.")

    def __call__(self, x: Float[Array, "in height width"]) -> Float[Array, "out out_height out_width"]:
        if x.ndim != 3 or x.shape[0] != self.weight.shape[1]:
            raise ValueError(
                f"the convolution expects one (channels, height, width) image with "
                f"{self.weight.shape[1]} channels, got per-sample shape {tuple(x.shape)}; pass "
                f"images shaped (batch, {self.weight.shape[1]}, height, width) (channel-major)."
            )
        pad = self.weight.shape[-1] // 2 if self.padding is None else int(self.padding)
        stride = int(self.stride)
        out = jax.lax.conv_general_dilated(
            x[None], self.weight, window_strides=(stride, stride), padding=((pad, pad), (pad, pad)),
            dimension_numbers=("NCHW", "OIHW", "NCHW"),
        )
        return out[0]


class AvgPool2(eqx.Module):
    """2×2 average pooling with stride 2 of one (C, H, W) image (H and W even)."""

    def __call__(self, x: Float[Array, "c height width"]) -> Float[Array, "c height/2 width/2"]:
        c, h, w = x.shape
        if h % 2 or w % 2:
            raise ValueError(
                f"cannot 2×2-pool an activity of shape {tuple(x.shape)} (odd side): the images "
                "are not of the `image_size` the model was built with (sides divisible by 8)."
            )
        return x.reshape(c, h // 2, 2, w // 2, 2).mean(axis=(2, 4))


class Readout(eqx.Module):
    """Flatten one (C, H, W) activity (channel-major) and map it linearly to the output."""

    weight: Float[Array, "out features"]

    def __call__(self, x: Float[Array, "c height width"]) -> Float[Array, " out"]:
        if x.size != self.weight.shape[1]:
            raise ValueError(
                f"the readout expects {self.weight.shape[1]} features but the last activity has "
                f"shape {tuple(x.shape)}; the images are not of the `image_size` the model was "
                "built with."
            )
        return self.weight @ x.reshape(-1)


def _image_size(value) -> tuple[int, int]:
    sides = (value, value) if not isinstance(value, (tuple, list)) else tuple(value)
    if len(sides) != 2:
        raise ValueError(f"`image_size` must be an int or (height, width), got {value!r}.")
    height, width = (positive_int(s, "image_size", "pass the image side, e.g. 32") for s in sides)
    if any(s % 2**STAGES for s in (height, width)):
        raise ValueError(
            f"`image_size` must be divisible by {2**STAGES} (one 2×2 pooling per stage), got "
            f"{value!r}; crop or resize the images, e.g. to 32 or 224."
        )
    return height, width


def resnet(
    in_channels: int,
    width: int,
    output_dim: int,
    *,
    image_size: int | tuple[int, int] = 32,
    n_res: int = 3,
    activation: str | Callable[[Array], Array] = "tanh",
    gain: float | None = None,
    parameterisation: AbstractParameterisation = SP(),
    output_energy: AbstractOutputEnergy = CrossEntropy(),
    output_precision: float = 1.0,
    dtype=jnp.float32,
    key: PRNGKeyArray,
) -> PCModel:
    r"""The 3-stage residual CNN of Bordelon et al. (`docs/background.md` §3.3) as a PC network.

    Maps, for one (C_in, H, W) image: [stage conv → n_res/3 residual blocks → 2×2
    average pool] × 3, then the readout (flatten, linear to `output_dim`). All convs are
    3×3, stride 1, padding 1, no bias.

    - stage conv: f(z) = a·W ∗ φ(z) (C_in → C for the first stage, whose input is the
      image and gets no φ; C → C after);
    - block: f(z) = z + a·W ∗ φ(z), the skip adding the pre-activation z;
    - pool: f(z) = avgpool₂(z) (no parameters, no φ);
    - readout: f(z) = a·W·flatten(φ(z)), fan-in C·(H/8)·(W/8).

    The PC activities are the outputs of every map but the readout, **including the pool
    outputs**: 3·(2 + n_res/3) tensors of shape (C, ·, ·) per sample. The effective depth
    used by the parameterisation is L_eff = n_res + 4 (the three stage convs and the
    readout count once each). Roles: first stage conv `INPUT` (fan-in C_in·9), other
    stage convs `HIDDEN` (fan-in 9C, gain 1), block convs `HIDDEN` branches (fan-in 9C,
    the activation's gain), readout `OUTPUT`. Under μPC this gives the multipliers
    1/√(9·C_in), 1/√(9C), gain/√(9C·L_eff) and 1/fan-in of §3.3; pass
    `MuPC(adam_rule=AdamRule.RESNET_REFERENCE)` for its per-group Adam rates.

    **Arguments:**

    - `in_channels`: C_in, the number of image channels (3 for RGB).
    - `width`: C, the channels of every stage.
    - `output_dim`: the number of classes.
    - `image_size`: the input side (or (height, width)), divisible by 8. Default 32.
    - `n_res`: the number of residual blocks, a multiple of 3 (n_res/3 per stage); 0
      gives a plain CNN. Default 3, as in the paper.
    - `activation`: φ, a callable or one of "linear", "tanh", "relu", "gelu". Default
      "tanh".
    - `gain`: the activation gain for the block multipliers; needed only for a custom
      callable `activation` (tanh 5/3, ReLU √2, linear 1, GELU 1.5335).
    - `parameterisation`: e.g. `pcscale.MuPC()`; default `pcscale.SP()`.
    - `output_energy`: default `pcscale.CrossEntropy()` (one-hot targets).
    - `output_precision`: λ. Default 1.
    - `dtype`: parameter dtype. Default float32.
    - `key`: a JAX PRNG key.

    **Returns:** a [`PCModel`][pcscale.PCModel] taking batches of (C_in, H, W) images.
    """
    in_channels = positive_int(in_channels, "in_channels", "pass the image channels, e.g. 3")
    width = positive_int(width, "width", "pass the number of channels C, e.g. 16")
    output_dim = positive_int(output_dim, "output_dim", "pass the number of classes, e.g. 10")
    height, side = _image_size(image_size)
    if isinstance(n_res, bool) or not isinstance(n_res, numbers.Integral) or n_res < 0 or n_res % STAGES:
        raise ValueError(
            f"`n_res` must be a non-negative multiple of {STAGES} (blocks per stage × 3), got "
            f"{n_res!r}; the paper uses n_res=3."
        )
    n_res = int(n_res)
    check_parameterisation(parameterisation)
    check_dtype(dtype)
    check_key(key)
    phi = resolve_activation(activation)
    block_gain = activation_gain(phi, gain)
    shape = NetworkShape(width=width, depth=n_res + 4, residual=n_res > 0)
    per_stage = n_res // STAGES
    keys = iter(jax.random.split(key, n_res + STAGES + 1))
    k2 = KERNEL * KERNEL

    def conv_layer(role: WeightRole, channels_in: int, *, skip: bool, activation) -> PCLayer:
        scaling = parameterisation.scaling(role, shape)
        weight = scaling.sample((width, channels_in, KERNEL, KERNEL), dtype, key=next(keys))
        return PCLayer(Conv2d(weight), scaling=scaling, skip=skip, activation=activation)

    layers = []
    for stage in range(STAGES):
        if stage == 0:
            role = WeightRole(Role.INPUT, fan_in=in_channels * k2)
            layers.append(conv_layer(role, in_channels, skip=False, activation=identity))
        else:
            role = WeightRole(Role.HIDDEN, fan_in=width * k2)
            layers.append(conv_layer(role, width, skip=False, activation=phi))
        for _ in range(per_stage):
            role = WeightRole(Role.HIDDEN, fan_in=width * k2, branch=True, gain=block_gain)
            layers.append(conv_layer(role, width, skip=True, activation=phi))
        layers.append(PCLayer(AvgPool2()))
    features = width * (height // 2**STAGES) * (side // 2**STAGES)
    readout = parameterisation.scaling(WeightRole(Role.OUTPUT, fan_in=features), shape)
    weight = readout.sample((output_dim, features), dtype, key=next(keys))
    layers.append(PCLayer(Readout(weight), scaling=readout, activation=phi))
    return PCModel(tuple(layers), output_energy, output_precision=float(output_precision))
