"""Energies of one unbatched activity against its prediction.

Hidden layers use the Gaussian energy ½‖z − μ‖² (at unit precision; a layer may weight it,
see `PCLayer.error_energy`). The output term is
one of the [`AbstractOutputEnergy`][pcscale.AbstractOutputEnergy] subclasses; the model
multiplies it by the output precision λ.
"""

from __future__ import annotations

import abc
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float


def gaussian_energy(z: Float[Array, " ..."], mu: Float[Array, " ..."]) -> Float[Array, ""]:
    """½‖z − μ‖², summed over every unit (and position, token …) of one sample."""
    return 0.5 * jnp.sum((z - mu) ** 2)


class AbstractOutputEnergy(eqx.Module):
    """The per-sample output loss ℓ(y, ŷ) of a model (before the precision λ).

    Subclasses set `categorical = True` when targets must be probability vectors
    (one-hot), so that integer labels are rejected at the boundary.
    """

    categorical: ClassVar[bool] = False

    @abc.abstractmethod
    def __call__(self, prediction: Float[Array, " ..."], target: Float[Array, " ..."]) -> Float[Array, ""]:
        """ℓ(y, ŷ) for one unbatched sample."""

    @abc.abstractmethod
    def output_error(self, prediction: Float[Array, " ..."], target: Float[Array, " ..."]) -> Float[Array, " ..."]:
        """e_out = ∂ℓ/∂ŷ for one sample (closed form, used by theory and tests)."""


class MSE(AbstractOutputEnergy):
    """Gaussian output energy ℓ = ½‖y − ŷ‖²."""

    def __call__(self, prediction, target):
        return gaussian_energy(target, prediction)

    def output_error(self, prediction, target):
        return prediction - target


class CrossEntropy(AbstractOutputEnergy):
    """Categorical output energy ℓ = −Σ_k y_k·log_softmax(ŷ)_k over the last axis.

    `ŷ` are logits and `y` one-hot (or any probability vector). The log-softmax is
    computed stably (max subtracted, then log-sum-exp), never as log(softmax). For
    sequence outputs (tokens on leading axes) the term is summed over tokens.
    Integer class labels are rejected at the boundary: convert them with
    `jax.nn.one_hot(labels, num_classes)`.
    """

    categorical: ClassVar[bool] = True

    def __call__(self, prediction, target):
        return -jnp.sum(target * jax.nn.log_softmax(prediction, axis=-1))

    def output_error(self, prediction, target):
        return jax.nn.softmax(prediction, axis=-1) * jnp.sum(target, axis=-1, keepdims=True) - target
