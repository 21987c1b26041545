"""MLP builders: `mlp` (no skips) and `residual_mlp` (skips on hidden layers)."""

from __future__ import annotations

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from .._energy import MSE, AbstractOutputEnergy
from .._layer import PCLayer
from .._model import PCModel
from .._parameterisation import (
    SP,
    AbstractParameterisation,
    NetworkShape,
    Role,
    WeightRole,
)
from ._activation import identity, resolve_activation
from ._checks import check_dtype, check_key, check_parameterisation, positive_int


class Linear(eqx.Module):
    """y = W·x for one unbatched vector; the multiplier and the bias live in the
    enclosing PCLayer."""

    weight: Float[Array, "out in"]

    def __call__(self, x: Float[Array, " in"]) -> Float[Array, " out"]:
        return self.weight @ x


def _build(
    input_dim,
    width,
    output_dim,
    depth,
    *,
    skips: bool,
    parameterisation: AbstractParameterisation,
    activation,
    use_bias: bool,
    output_energy: AbstractOutputEnergy,
    output_precision: float,
    dtype,
    key: PRNGKeyArray,
) -> PCModel:
    input_dim = positive_int(input_dim, "input_dim", "pass the flattened input size, e.g. 784")
    width = positive_int(width, "width", "pass the hidden width N, e.g. 128")
    output_dim = positive_int(output_dim, "output_dim", "pass the target size, e.g. 10")
    depth = positive_int(depth, "depth", "pass the number of weight layers L ≥ 1")
    check_parameterisation(parameterisation)
    check_dtype(dtype)
    check_key(key)
    phi = resolve_activation(activation)
    residual = skips and depth > 2
    shape = NetworkShape(width=width, depth=depth, residual=residual)
    keys = jax.random.split(key, 2 * depth)
    layers = []
    for index in range(depth):
        first, last = index == 0, index == depth - 1
        fan_in = input_dim if first else width
        fan_out = output_dim if last else width
        kind = Role.OUTPUT if last else (Role.INPUT if first else Role.HIDDEN)
        role = WeightRole(kind, fan_in=fan_in, branch=residual and not (first or last))
        scaling = parameterisation.scaling(role, shape)
        vector_scaling = parameterisation.scaling(WeightRole(Role.VECTOR, fan_in=fan_in), shape)
        weight = scaling.sample((fan_out, fan_in), dtype, key=keys[2 * index])
        bias = vector_scaling.sample((fan_out,), dtype, key=keys[2 * index + 1]) if use_bias else None
        layers.append(
            PCLayer(
                Linear(weight),
                bias=bias,
                scaling=scaling,
                vector_scaling=vector_scaling,
                skip=role.branch,
                activation=identity if first else phi,
            )
        )
    return PCModel(tuple(layers), output_energy, output_precision=float(output_precision))


_DOC_ARGS = """
    **Arguments:**

    - `input_dim`: D, the flattened input size.
    - `width`: N, the hidden width.
    - `output_dim`: d_y, the target size (number of classes for cross-entropy).
    - `depth`: L ≥ 1, the number of weight layers (H = L − 1 hidden activities). With
      L = 1 the network is a single readout from the input (fan-in D).
    - `parameterisation`: e.g. `pcscale.MuPC()`; default `pcscale.SP()`.
    - `activation`: φ, a callable or one of "linear", "tanh", "relu", "gelu". Default "tanh".
    - `use_bias`: add bias vectors (initialised to zero). Default False, as in the paper.
    - `output_energy`: `pcscale.MSE()` (default) or `pcscale.CrossEntropy()`.
    - `output_precision`: λ, the weight of the output energy. Default 1.
    - `dtype`: parameter dtype. Default float32.
    - `key`: a JAX PRNG key; one independent subkey is split off per tensor.

    **Returns:** a [`PCModel`][pcscale.PCModel].
"""


def mlp(
    input_dim: int,
    width: int,
    output_dim: int,
    depth: int,
    *,
    parameterisation: AbstractParameterisation = SP(),
    activation: str | Callable[[Array], Array] = "tanh",
    use_bias: bool = False,
    output_energy: AbstractOutputEnergy = MSE(),
    output_precision: float = 1.0,
    dtype=jnp.float32,
    key: PRNGKeyArray,
) -> PCModel:
    return _build(
        input_dim, width, output_dim, depth, skips=False, parameterisation=parameterisation,
        activation=activation, use_bias=use_bias, output_energy=output_energy,
        output_precision=output_precision, dtype=dtype, key=key,
    )


def residual_mlp(
    input_dim: int,
    width: int,
    output_dim: int,
    depth: int,
    *,
    parameterisation: AbstractParameterisation = SP(),
    activation: str | Callable[[Array], Array] = "tanh",
    use_bias: bool = False,
    output_energy: AbstractOutputEnergy = MSE(),
    output_precision: float = 1.0,
    dtype=jnp.float32,
    key: PRNGKeyArray,
) -> PCModel:
    return _build(
        input_dim, width, output_dim, depth, skips=True, parameterisation=parameterisation,
        activation=activation, use_bias=use_bias, output_energy=output_energy,
        output_precision=output_precision, dtype=dtype, key=key,
    )


mlp.__doc__ = (
    """A multilayer perceptron without skips, as a PC network:
    f_1(x) = a_1·W_1·x, f_l(z) = a_l·W_l·φ(z) for l = 2 … L. Each z_l is a
    pre-activation (φ is applied to the incoming activity).
"""
    + _DOC_ARGS
)
residual_mlp.__doc__ = (
    """A residual MLP as a PC network: f_1(x) = a_1·W_1·x,
    f_l(z) = z + a_l·W_l·φ(z) for the hidden layers l = 2 … L−1 (the skip adds the
    pre-activation z), and f_L(z) = a_L·W_L·φ(z). The input and output layers never
    have skips; with L ≤ 2 the network equals `mlp`. Branch multipliers and depth
    factors come from the parameterisation with L = depth.
"""
    + _DOC_ARGS
)
