"""PCLayer: one prediction μ_l = f_l(z_{l−1}) of a predictive coding network."""

from __future__ import annotations

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PyTree

from ._parameterisation import Init, Scaling
from ._validation import is_finite_real

VARIANCE_SCALING = Scaling(init=Init.ZEROS, init_std=0.0, weight_decay_scale=0.0)


def identity(z: Array) -> Array:
    """φ(z) = z: the default activation of a PCLayer (linear networks)."""
    return z


def _has_own_scalings(node) -> bool:
    return isinstance(node, eqx.Module) and callable(getattr(node, "parameter_scalings", None))


class PCLayer(eqx.Module):
    """One layer map of a PC network, for a single (unbatched) sample:

    f(z) = s·z + a·module(φ(z)) + b,

    with φ the `activation` applied to the incoming activity, a the forward multiplier
    `scaling.multiplier`, s = 1 when `skip` is set (a residual layer), else 0, and b an
    optional bias outside the multiplier (so that its effective size and update do not
    shrink with a).

    **Arguments:**

    - `module`: any Equinox module (or callable pytree) mapping one unbatched activity to
      the branch output. Its array leaves are the layer's parameters.
    - `bias`: optional bias vector b of the layer's output shape. Default none.
    - `scaling`: the [`Scaling`][pcscale.Scaling] of the layer's matrices (leaves with two
      or more axes): forward multiplier and learning-rate, ε and weight-decay scales.
      Default: all ones (a plain layer).
    - `vector_scaling`: the [`Scaling`][pcscale.Scaling] of its vectors (leaves with at most
      one axis: `bias`, gains inside `module`). Only the optimiser scales are read.
    - `skip`: add the incoming activity (residual layer). Shapes must match.
    - `activation`: φ, applied to the incoming activity before `module`. Default identity.
    - `precision`: π > 0, the fixed precision of this layer's prediction error
      ε = z − f(z_prev) in the energy, (π/2)·‖ε‖². Default 1. Hidden layers only: the
      output term is weighted by the model's `output_precision` λ.
    - `log_variance`: None (default), or a learnable log-variance s of the error, a
      scalar array (one variance for the layer) or one of the layer's output shape (one
      per unit). The energy term becomes (π/2)·Σ_k e^{−s_k}·ε_k² + ½·Σ_k s_k (the
      Gaussian's log-determinant; a scalar s counts once per unit), and s is a parameter
      like the weights (at the optimiser's base rate under every parameterisation): the
      PC update descends ∂F/∂s, whose zero is e^{s} = π times the mean of ε² over the
      batch (and the units, for a scalar). Hidden layers only.
    """

    module: PyTree
    bias: Array | None = None
    scaling: Scaling = eqx.field(static=True, default=Scaling())
    vector_scaling: Scaling = eqx.field(
        static=True, default=Scaling(init=Init.ZEROS, init_std=0.0, weight_decay_scale=0.0)
    )
    skip: bool = eqx.field(static=True, default=False)
    activation: Callable[[Array], Array] = eqx.field(static=True, default=identity)
    precision: float = eqx.field(static=True, default=1.0, kw_only=True)
    log_variance: Array | None = eqx.field(default=None, kw_only=True)

    def __check_init__(self):
        if isinstance(self.precision, bool) or not (is_finite_real(self.precision) and self.precision > 0):
            raise ValueError(
                f"`precision` must be a positive finite float, got {self.precision!r}; the default is 1.0."
            )
        if self.log_variance is not None and not (
            eqx.is_inexact_array(self.log_variance) and jnp.ndim(self.log_variance) <= 3
        ):
            raise TypeError(
                f"`log_variance` must be None or a floating array (a scalar, or the layer's output "
                f"shape), got {type(self.log_variance).__name__}; e.g. log_variance=jnp.zeros(())."
            )
        if not isinstance(self.scaling, Scaling):
            raise TypeError(f"`scaling` must be a pcscale.Scaling, got {type(self.scaling).__name__}.")
        if not isinstance(self.vector_scaling, Scaling):
            raise TypeError(
                f"`vector_scaling` must be a pcscale.Scaling, got {type(self.vector_scaling).__name__}."
            )
        if not callable(self.module):
            raise TypeError(
                f"`module` must be a callable Equinox module, got {type(self.module).__name__}."
            )
        own = callable(getattr(self.module, "parameter_scalings", None))
        if own and self.scaling != Scaling():
            raise ValueError(
                "`module` carries its own per-weight scalings (a pcscale.Parameterised), so the "
                f"layer's `scaling` must stay the default, got {self.scaling!r}; put the "
                "multiplier into the Parameterised module's scalings instead."
            )
        nested = [
            node for node in jax.tree.leaves(self.module, is_leaf=_has_own_scalings)
            if _has_own_scalings(node) and node is not self.module
        ]
        if nested:
            raise ValueError(
                "`module` contains a pcscale.Parameterised below its top level, whose "
                "learning-rate, ε and weight-decay scales the optimiser would not see; pass it "
                "as the PCLayer's module directly (one Parameterised per layer, wrapping the "
                "whole map)."
            )

    @property
    def multiplier(self) -> float:
        """The forward multiplier a of the branch."""
        return self.scaling.multiplier

    def __call__(self, z: Array) -> Array:
        out = self.scaling.multiplier * self.module(self.activation(z))
        if self.bias is not None:
            out = out + self.bias
        return z + out if self.skip else out

    def error_energy(self, z: Array, prediction: Array) -> Float[Array, ""]:
        """This layer's term of the energy for one sample: (π/2)·‖z − f(z_prev)‖², with
        the learnt variance and its log-determinant when `log_variance` is set."""
        squared = (z - prediction) ** 2
        if self.log_variance is None:
            return 0.5 * self.precision * jnp.sum(squared)
        s = jnp.broadcast_to(self.log_variance, squared.shape)
        return 0.5 * self.precision * jnp.sum(jnp.exp(-s) * squared) + 0.5 * jnp.sum(s)

    def error_precision(self, shape: tuple[int, ...]) -> Array | float:
        """The precision of each unit of this layer's error, for an error of per-sample
        `shape`: π·e^{−s} broadcast to it, or the float π without a learnt variance."""
        if self.log_variance is None:
            return self.precision
        return self.precision * jnp.exp(-jnp.broadcast_to(self.log_variance, shape))

    def parameter_scalings(self) -> PyTree:
        """The [`Scaling`][pcscale.Scaling] of each array leaf of the layer, as a pytree
        with the structure of `eqx.filter(layer, eqx.is_array)`.

        A `module` with its own `parameter_scalings()` (a
        [`Parameterised`][pcscale.Parameterised]) gives those of its leaves; otherwise
        matrices get `scaling` and vectors `vector_scaling`; a learnt `log_variance`
        gets `VARIANCE_SCALING` (the optimiser's base rates, no weight decay)."""

        def pick(leaf):
            return self.scaling if jax.numpy.ndim(leaf) >= 2 else self.vector_scaling

        scalings = jax.tree.map(pick, eqx.filter(self, eqx.is_array))
        own = getattr(self.module, "parameter_scalings", None)
        if callable(own):
            scalings = eqx.tree_at(lambda layer: layer.module, scalings, own())
        if self.log_variance is not None:
            # A variance is neither a weight nor a bias: the optimiser's base rate, no decay,
            # under every parameterisation.
            scalings = eqx.tree_at(lambda layer: layer.log_variance, scalings, VARIANCE_SCALING)
        return scalings
