"""PCLayer: one prediction μ_l = f_l(z_{l−1}) of a predictive coding network."""

from __future__ import annotations

from collections.abc import Callable

import equinox as eqx
import jax
from jaxtyping import Array, PyTree

from ._parameterisation import Init, Scaling


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
    """

    module: PyTree
    bias: Array | None = None
    scaling: Scaling = eqx.field(static=True, default=Scaling())
    vector_scaling: Scaling = eqx.field(
        static=True, default=Scaling(init=Init.ZEROS, init_std=0.0, weight_decay_scale=0.0)
    )
    skip: bool = eqx.field(static=True, default=False)
    activation: Callable[[Array], Array] = eqx.field(static=True, default=identity)

    def __check_init__(self):
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

    def parameter_scalings(self) -> PyTree:
        """The [`Scaling`][pcscale.Scaling] of each array leaf of the layer, as a pytree
        with the structure of `eqx.filter(layer, eqx.is_array)`.

        A `module` with its own `parameter_scalings()` (a
        [`Parameterised`][pcscale.Parameterised]) gives those of its leaves; otherwise
        matrices get `scaling` and vectors `vector_scaling`."""

        def pick(leaf):
            return self.scaling if jax.numpy.ndim(leaf) >= 2 else self.vector_scaling

        scalings = jax.tree.map(pick, eqx.filter(self, eqx.is_array))
        own = getattr(self.module, "parameter_scalings", None)
        if callable(own):
            scalings = eqx.tree_at(lambda layer: layer.module, scalings, own())
        return scalings
