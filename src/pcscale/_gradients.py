"""Weight gradients of the PC energy (activities fixed) and of the BP loss."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array

from ._custom_types import Activities, BatchX, BatchY
from ._model import PCModel
from ._precise import full_precision
from ._precision import cast_floating as tree_cast
from ._validation import as_float_array, validated


def energy_gradients(model: PCModel, z: Activities, x: Array, y: Array) -> tuple[Array, PCModel]:
    """`pc_gradients` for validated inputs (callable inside jit)."""
    z = jax.lax.stop_gradient(tuple(z))
    narrow, wide = model.dtype, jnp.result_type(*jax.tree.leaves(z))
    if narrow is not None and jnp.finfo(wide).bits > jnp.finfo(narrow).bits:
        # Activities certified in a wider dtype (pcscale.MixedPrecision): evaluate the
        # whole energy in it, or the errors of the lowest layers, whose predictions use
        # only the narrow weights and input, fall back to the narrow rounding floor. The
        # gradient is returned in the model's dtype.
        wide_energy, grads = energy_gradients(tree_cast(model, wide), z, tree_cast(x, wide), tree_cast(y, wide))
        return wide_energy, tree_cast(grads, narrow)

    def energy(m: PCModel) -> Array:
        return jnp.mean(jax.vmap(m.energy_one)(z, x, y))

    return eqx.filter_value_and_grad(energy)(model)


def loss_gradients(model: PCModel, x: Array, y: Array) -> tuple[Array, PCModel]:
    """`bp_gradients` for validated inputs (callable inside jit)."""

    def loss(m: PCModel) -> Array:
        return jnp.mean(jax.vmap(lambda xi, yi: m.output_energy(m.forward_one(xi), yi))(x, y))

    return eqx.filter_value_and_grad(loss)(model)


@full_precision
def pc_gradients(model: PCModel, z: Activities, x: BatchX, y: BatchY) -> tuple[Array, PCModel]:
    """F(z; θ) and ∇_θF at fixed activities z (batch-mean energy): the PC weight update
    direction, which uses only each layer's local error.

    **Arguments:** `model`, `x`, `y` as for [`infer`][pcscale.infer]; `z` the activities
    (e.g. `infer(...).activities`).

    **Returns:** `(energy, gradient)`, the gradient a PCModel-shaped pytree.
    """
    x, y = validated(model, as_float_array(x, "x"), as_float_array(y, "y"), z)
    return energy_gradients(model, z, x, y)


@full_precision
def bp_gradients(model: PCModel, x: BatchX, y: BatchY) -> tuple[Array, PCModel]:
    """𝓛(θ) and ∇_θ𝓛 of the feedforward pass (batch-mean loss), by backpropagation.

    **Returns:** `(loss, gradient)`, the gradient a PCModel-shaped pytree.
    """
    x, y = validated(model, as_float_array(x, "x"), as_float_array(y, "y"))
    return loss_gradients(model, x, y)
