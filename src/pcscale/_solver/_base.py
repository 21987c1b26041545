"""The interface every inference solver implements."""

from __future__ import annotations

import abc
import functools
import numbers
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Int

from .._custom_types import Activities

# value_and_grad of the summed per-sample energy Σ_i F_i with respect to the activities.
EnergyAndGrad = Callable[[Activities], tuple[Array, Activities]]


def to_float(value):
    """Field converter: real numbers become Python floats (so that `1` and `1.0` trace
    and cache alike); anything else is left for `__check_init__` to reject."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return float(value)
    return value


def check_tolerances(solver) -> None:
    """Shared validation of the stopping fields every solver carries."""
    for name in ("rtol", "atol"):
        value = getattr(solver, name)
        if not (isinstance(value, float) and value >= 0):
            raise ValueError(
                f"`{name}` must be a non-negative float, got {value!r}; e.g. {name}=1e-5, or 0 "
                "to run the full step budget."
            )
    steps = solver.max_steps
    if not (isinstance(steps, numbers.Integral) and not isinstance(steps, bool) and steps >= 0):
        raise ValueError(
            f"`max_steps` must be a non-negative int, got {steps!r}; e.g. max_steps=1000."
        )
    factor = solver.divergence_factor
    if not (isinstance(factor, float) and factor > 1):
        raise ValueError(
            f"`divergence_factor` must be a float > 1, got {factor!r}; the default is 1e4."
        )


def _convert(solver):
    def convert(leaf):
        if isinstance(leaf, (int, float)) and not isinstance(leaf, bool):
            return jnp.asarray(leaf)
        return leaf

    return jax.tree.map(convert, solver)


_converted = functools.lru_cache(maxsize=64)(_convert)


def with_traced_numbers(solver):
    """The solver with its numeric fields (β, tolerances, budget …) turned into
    weakly-typed arrays, so that jitted callers trace them instead of recompiling for
    every new value. Booleans and non-numeric leaves (e.g. optax functions) are kept.
    Conversions are cached, so a training loop pays for them once."""
    try:
        return _converted(solver)
    except TypeError:  # an unhashable field: convert without caching
        return _convert(solver)


class AbstractInferenceSolver(eqx.Module):
    """Base of all inference solvers.

    A solver minimises the summed per-sample energy Σ_i F_i over the activities (so every
    sample moves by its own gradient and step sizes are per sample, independent of the
    batch size). The loop in [`infer`][pcscale.infer] calls `init` once, then `step`
    until the residual ‖∇_z Σ_i F_i‖ ≤ `atol` + `rtol`·(initial residual), the budget
    `max_steps` runs out, or the energy diverges (non-finite, or above
    `divergence_factor` × its initial value).

    Every solver carries the stopping fields `rtol`, `atol`, `max_steps` and
    `divergence_factor`. Setting `rtol = atol = 0` runs the full budget (the reference
    implementation's fixed-budget behaviour), still reporting the residual reached.
    """

    # Concrete solvers declare rtol, atol, max_steps and divergence_factor as fields
    # (not AbstractVars, so that solvers may put required fields first).

    @abc.abstractmethod
    def init(self, z: Activities, grad: Activities) -> Any:
        """Solver state, from the starting activities and their energy gradient."""

    @abc.abstractmethod
    def step(
        self, fn: EnergyAndGrad, z: Activities, grad: Activities, state: Any
    ) -> tuple[Activities, Array, Activities, Any, Int[Array, ""]]:
        """One update. Returns the new activities, their summed energy and gradient (so
        the loop never re-evaluates), the new state and the number of gradient
        evaluations this step used."""
