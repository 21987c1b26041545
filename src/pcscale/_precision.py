"""The rounding floor of the residual: which inference tolerances a dtype can certify."""

from __future__ import annotations

import math
import warnings

import equinox as eqx
import jax
import jax.core
import jax.numpy as jnp
import optax.tree_utils as otu
from jaxtyping import Array, Float, PyTree

from ._precise import precise_jit

# Calibration of the floor (docs/inference.md, "The rounding floor"): the residual
# ‖∇_z Σ_i F_i‖ at which float32 solves stall (Newton–Krylov and conjugate gradients,
# both preconditioned), divided by eps·‖(z_1 … z_H)‖ at the feedforward state, lay
# between 0.49 and 1.02 on tanh and linear μPC residual MLPs with N = 32 … 256,
# H = 3 … 31, B = 8 … 64. With a factor of 1 the estimate sits at (within 2%) or above
# every measured stall.
FLOOR_FACTOR = 1.0
# Relative tolerances above every floor the estimate gives up to N = 10⁴, H = 100 (the
# up-front check then skips its evaluation).
_SURELY_ABOVE = {"float64": 1e-9, "float32": 1e-1}


def cast_floating(tree: PyTree, dtype) -> PyTree:
    """`tree` with every floating array cast to `dtype` (integer arrays, e.g. token ids,
    and non-array leaves are kept)."""
    floating, rest = eqx.partition(tree, eqx.is_inexact_array)
    return eqx.combine(otu.tree_cast(floating, dtype), rest)


def floor_from_activities(z, dtype) -> Float[Array, ""]:
    """The absolute rounding floor of the residual for activities `z` computed in
    `dtype` (inside or outside jit)."""
    return FLOOR_FACTOR * jnp.finfo(dtype).eps * otu.tree_norm(z)


@precise_jit
def floor_and_start(model, x, y, z=None):
    """The absolute rounding floor at `z` (default the feedforward state) and the
    residual there, from one gradient evaluation."""
    from ._infer import summed_energy_and_grad

    x, y = model._check(x, y, z)
    if z is None:
        z = jax.vmap(model.activities_one)(x)
    _, grad = summed_energy_and_grad(model, x, y)(tuple(z))
    return floor_from_activities(z, model.dtype), otu.tree_norm(grad)


def residual_floor(model, x, y, z=None) -> Float[Array, ""]:
    r"""Estimate of the smallest relative residual ‖∇_z Σ_i F_i‖/‖∇_z Σ_i F_i(z_0)‖
    that inference in the model's dtype can certify.

    The activity gradient ε_l − J_{l+1}ᵀε_{l+1} is a difference of O(1) quantities:
    each error ε_l = z_l − μ_l is computed with an absolute rounding error of order
    eps·|z_l|, so no iteration can push the residual much below eps·‖z‖ (all
    activities stacked), whatever the solver. Relative to the starting residual, whose
    size the 1/(γ0·N) readout sets, that floor grows like eps·N·√H: about 1e-4 in
    float32 at N = 256, H = 31, and 1e-13 in float64. The estimate is
    `FLOOR_FACTOR`·eps·‖z‖ over the starting residual, with the factor calibrated on
    measured stalls (docs/inference.md).

    **Arguments:**

    - `model`: a [`PCModel`][pcscale.PCModel].
    - `x`, `y`: a batch, as for [`infer`][pcscale.infer].
    - `z`: starting activities; default the feedforward state.

    **Returns:** the relative floor, a scalar (∞ when the starting residual is 0).
    """
    floor, start = floor_and_start(model, x, y, z)
    return jnp.where(start > 0, floor / jnp.where(start > 0, start, 1.0), jnp.inf)


def warn_if_uncertifiable(model, x, y, solver, z=None, *, stacklevel: int = 3) -> bool:
    """Warn, before a solve, when the solver's tolerance (atol + rtol·initial residual)
    lies below the rounding floor of the model's dtype. Returns whether it warned. A
    solver that certifies in float64 itself (MixedPrecision), or one running a fixed
    budget (rtol = atol = 0), is not checked."""
    from ._solver import MixedPrecision

    traced = any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves((model, x, y, z)))
    if isinstance(solver, MixedPrecision) or traced:
        return False  # certifies in float64 itself; or inside a caller's trace: no values
    rtol, atol = float(solver.rtol), float(solver.atol)
    if (rtol == 0 and atol == 0) or rtol >= _SURELY_ABOVE.get(jnp.dtype(model.dtype).name, 1.0):
        return False  # a fixed budget, or surely certifiable: no evaluation needed
    floor, start = (float(v) for v in floor_and_start(model, x, y, z))
    requested = atol + rtol * start
    # Measured stalls lie between 0.49 and 1.02 times the estimate (FLOOR_FACTOR): below
    # half of it a tolerance is out of reach, between half and all of it it may be.
    if not (start > 0 and math.isfinite(start) and math.isfinite(floor)) or requested >= floor:
        return False  # nothing to solve, or non-finite data (refused by the solve itself)
    relative = floor / start
    dtype = jnp.dtype(model.dtype).name
    verdict = (
        "the solve will end `stalled` near that floor instead of converging"
        if requested < 0.5 * floor
        else "it is within a factor of two of that floor, so the solve may end `stalled` instead of converging"
    )
    warnings.warn(
        f"the requested tolerance (rtol={rtol:g}, atol={atol:g}) is below the estimated rounding floor of "
        f"{dtype} for this model and batch (relative residual ≈ {relative:.1g}): {verdict}. Fixes: wrap the "
        f"solver in pcscale.MixedPrecision (float32 iterations, float64 certification), build the model in "
        f"float64, or set rtol ≥ {relative:.0e} (docs/inference.md, 'The rounding floor').",
        stacklevel=stacklevel,
    )
    return True
