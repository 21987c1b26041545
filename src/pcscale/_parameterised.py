"""Parameterised: any Equinox module whose weights each carry their own Scaling."""

from __future__ import annotations

import equinox as eqx
import jax
from jaxtyping import PyTree

from ._roles import Scaling


class Parameterised(eqx.Module):
    """Wraps an Equinox module so that each of its array leaves W carries a
    [`Scaling`][pcscale.Scaling]: the module is called with a·W in place of W (a the
    leaf's forward multiplier), and the optimiser reads the leaf's learning-rate, ε and
    weight-decay scales.

    This is how maps with several differently scaled weights (a transformer block: W_qkv
    and W1 unscaled, W_out and W2 carrying the branch multiplier) or a user's own blocks
    join a [`PCLayer`][pcscale.PCLayer]. Applying a to the weight rather than to the
    output is exact for any map linear in that weight, which is every case here. Build
    one with [`pcscale.nn.parameterise`][pcscale.nn.parameterise], which also draws the
    weights from their scalings.

    **Arguments:**

    - `module`: the Equinox module (any callable pytree).
    - `scalings`: one `Scaling` per array leaf of `module`, in `jax.tree.leaves(
      eqx.filter(module, eqx.is_array))` order.
    """

    module: PyTree
    scalings: tuple[Scaling, ...] = eqx.field(static=True)

    def __check_init__(self):
        if not callable(self.module):
            raise TypeError(f"`module` must be callable, got {type(self.module).__name__}.")
        count = len(jax.tree.leaves(eqx.filter(self.module, eqx.is_array)))
        if not isinstance(self.scalings, tuple) or len(self.scalings) != count:
            got = len(self.scalings) if isinstance(self.scalings, tuple) else type(self.scalings).__name__
            raise ValueError(
                f"`scalings` must be a tuple of one Scaling per array leaf of `module` ({count}), "
                f"got {got}; build it with pcscale.nn.parameterise."
            )
        for index, scaling in enumerate(self.scalings):
            if not isinstance(scaling, Scaling):
                raise TypeError(f"`scalings[{index}]` must be a pcscale.Scaling, got {scaling!r}.")

    def effective(self) -> PyTree:
        """The wrapped module with every weight W replaced by a·W."""
        params, static = eqx.partition(self.module, eqx.is_array)
        leaves, treedef = jax.tree.flatten(params)
        scaled = [w if s.multiplier == 1.0 else s.multiplier * w for w, s in zip(leaves, self.scalings, strict=False)]
        return eqx.combine(jax.tree.unflatten(treedef, scaled), static)

    def __call__(self, *args, **kwargs):
        return self.effective()(*args, **kwargs)

    def parameter_scalings(self) -> PyTree:
        """The `Scaling` of each array leaf, as a pytree with the structure of
        `eqx.filter(self, eqx.is_array)`."""
        params = eqx.filter(self, eqx.is_array)
        return jax.tree.unflatten(jax.tree.structure(params), list(self.scalings))
