"""The activation functions builders accept by name, and their gains."""

from __future__ import annotations

import math
import numbers
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
"""Activation functions by name ("linear", "identity", "tanh", "relu", "gelu"; "gelu" is
the exact z·Φ(z)); the builders' `activation` argument takes a name from here or a
callable."""

# Gains g with Var(g·φ(z)) ≈ Var(z) for z ~ N(0, 1), used by the μP family's
# gain/√fan_in multipliers (docs/background.md §3.3). Linear, tanh and ReLU take PyTorch's
# values (1, 5/3, √2). PyTorch has none for GELU; pcscale uses the second-moment gain
# 1/√E[GELU(z)²] = 1/√0.42522 (E by quadrature), the rule that also gives ReLU its √2.
GAINS: dict[Callable[[Array], Array], float] = {
    identity: 1.0,
    jax.nn.tanh: 5.0 / 3.0,
    jax.nn.relu: math.sqrt(2.0),
    gelu: 1.5335304411955328,
}
"""Gain g of each activation function of [`ACTIVATIONS`][pcscale.nn.ACTIVATIONS], keyed
by the callable, with Var(g·φ(z)) ≈ Var(z) for z ~ N(0, 1): 1 (linear), 5/3 (tanh),
√2 (ReLU) and 1/√E[GELU(z)²] ≈ 1.534 (GELU). The μP family's gain/√fan_in multipliers
use it (docs/background.md §3.3)."""


def resolve_activation(activation: str | Callable[[Array], Array]) -> Callable[[Array], Array]:
    """A callable from a name in `ACTIVATIONS`, or the callable itself."""
    if callable(activation):
        return activation
    if isinstance(activation, str) and activation.lower() in ACTIVATIONS:
        return ACTIVATIONS[activation.lower()]
    raise ValueError(
        f"`activation` must be one of {sorted(ACTIVATIONS)} or a callable, got {activation!r}."
    )


def activation_gain(phi: Callable[[Array], Array], gain: float | None = None) -> float:
    """The gain of `phi` from `GAINS`, or `gain` when given (needed for a custom
    activation)."""
    if gain is not None:
        if isinstance(gain, bool) or not isinstance(gain, numbers.Real) or not gain > 0:
            raise ValueError(f"`gain` must be a positive float, got {gain!r}; e.g. gain=1.0.")
        return float(gain)
    if phi in GAINS:
        return GAINS[phi]
    raise ValueError(
        f"no gain is known for the custom activation {phi!r}; pass gain=... (1/√E[φ(z)²] "
        "for z ~ N(0, 1) is a good default)."
    )
