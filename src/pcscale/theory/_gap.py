"""The expected rescaling gap E[s − 1] at initialisation (docs/background.md §4.4–4.5)."""

from __future__ import annotations

import numbers

from .._parameterisation import (
    AbstractParameterisation,
    Init,
    NetworkShape,
    Role,
    Scaling,
    WeightRole,
)


def _variance(scaling: Scaling) -> float:
    """Variance of one effective weight a·W at initialisation."""
    if scaling.init in (Init.ZEROS, Init.ONES):
        # Constant raw weights carry no variance; a gain of one is not a random matrix.
        return 0.0
    return (scaling.multiplier * scaling.init_std) ** 2


def predicted_gap(width: int, depth: int, parameterisation: AbstractParameterisation, *, skips: bool) -> float:
    r"""The expected gap E[tr(S − I/λ)]/d_y at initialisation of a linear MLP built by
    `pcscale.nn.mlp` (`skips=False`) or `pcscale.nn.residual_mlp` (`skips=True`): for
    d_y = 1 and λ = 1 this is E[s − 1], the size of the PC–BP discrepancy before training.

    It follows from the parameterisation's own scalings: a row vector v through a hidden
    map A = s·I + a·W with i.i.d. weights of variance σ² grows as
    E‖vA‖² = (s + N·a²σ²)·‖v‖², and the readout gives E‖G_H‖²/d_y = N·a_L²σ_L², so

    $$\mathbb E[s-1] = N a_L^2\sigma_L^2 \sum_{k=0}^{L-2} (s + N a^2\sigma^2)^k.$$

    For the presets this is (docs/background.md §4.4–4.5): μP family without skips
    (L − 1)/(γ0²N); with α-branches L^{2α}[(1 + L^{−2α})^{L−1} − 1]/(γ0²N), i.e.
    L[(1 + 1/L)^{L−1} − 1]/(γ0²N) for μPC; NTP (L − 1)/γ0² without skips; SP
    (1 − 3^{−(L−1)})/(2γ0²) without skips and [(4/3)^{L−1} − 1]/γ0² with. The gap does not
    depend on the input or output dimension, nor on λ.

    A network is in the PC ≈ BP regime when this is small (≪ 1). Single draws scatter
    around it (about ±35% at L = 32 without skips); for d_y > 1, ‖S‖₂ − 1/λ exceeds it by
    a random-matrix factor.

    **Arguments:**

    - `width`: N. `depth`: L, the number of weight layers.
    - `parameterisation`: e.g. `pcscale.MuPC()`.
    - `skips`: whether hidden layers 2 … L−1 have skip connections.

    **Returns:** the expected gap, a float.
    """
    for name, value in (("width", width), ("depth", depth)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
    if not isinstance(parameterisation, AbstractParameterisation):
        raise TypeError(
            f"`parameterisation` must be a pcscale parameterisation such as pcscale.MuPC(), got "
            f"{parameterisation!r}."
        )
    if not isinstance(skips, bool):
        raise TypeError(f"`skips` must be True or False, got {skips!r}.")
    width, depth = int(width), int(depth)
    residual = skips and depth > 2
    shape = NetworkShape(width=width, depth=depth, residual=residual)
    readout = parameterisation.scaling(WeightRole(Role.OUTPUT, fan_in=width), shape)
    hidden = parameterisation.scaling(WeightRole(Role.HIDDEN, fan_in=width, branch=residual), shape)
    factor = (1.0 if residual else 0.0) + width * _variance(hidden)
    return width * _variance(readout) * sum(factor**k for k in range(depth - 1))
