"""Weight gradients of the PC energy (activities fixed) and of the BP loss."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array

from ._custom_types import Activities
from ._model import PCModel


def pc_gradients(model: PCModel, z: Activities, x: Array, y: Array) -> tuple[Array, PCModel]:
    """F(z; θ) and ∇_θ F at fixed activities z (batch-mean energy): the PC update
    direction, built only from each layer's local error. Inputs must be validated."""
    z = jax.lax.stop_gradient(z)

    def energy(m: PCModel) -> Array:
        return jnp.mean(jax.vmap(m._energy_one)(z, x, y))

    return eqx.filter_value_and_grad(energy)(model)


def bp_gradients(model: PCModel, x: Array, y: Array) -> tuple[Array, PCModel]:
    """𝓛(θ) and ∇_θ 𝓛 of the feedforward pass (batch-mean loss) by backpropagation."""

    def loss(m: PCModel) -> Array:
        return jnp.mean(jax.vmap(lambda xi, yi: m.output_energy(m._forward_one(xi), yi))(x, y))

    return eqx.filter_value_and_grad(loss)(model)
