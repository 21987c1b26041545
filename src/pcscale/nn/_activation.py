"""The activation functions builders accept by name."""

from __future__ import annotations

from collections.abc import Callable

import jax
from jaxtyping import Array

# The same function object as PCLayer's default, so that layers built either way share
# compiled code.
from .._layer import identity as identity


def gelu(z: Array) -> Array:
    """Exact GELU, z·Φ(z)."""
    return jax.nn.gelu(z, approximate=False)


ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
    "linear": identity,
    "identity": identity,
    "tanh": jax.nn.tanh,
    "relu": jax.nn.relu,
    "gelu": gelu,
}


def resolve_activation(activation: str | Callable[[Array], Array]) -> Callable[[Array], Array]:
    """A callable from a name in `ACTIVATIONS`, or the callable itself."""
    if callable(activation):
        return activation
    if isinstance(activation, str) and activation.lower() in ACTIVATIONS:
        return ACTIVATIONS[activation.lower()]
    raise ValueError(
        f"`activation` must be one of {sorted(ACTIVATIONS)} or a callable, got {activation!r}."
    )
