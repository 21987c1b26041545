"""What the linear theory needs from a PCModel: validation that it is linear, the shapes
of its activities, the transposes of its layer maps, and an optional dtype switch."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import overload

import equinox as eqx
import jax
import jax.core
import jax.numpy as jnp
from jaxtyping import Array

from .._custom_types import BatchX, BatchY
from .._linear import check_model
from .._model import PCModel
from .._validation import as_float_array

# Below this relative size, S − I/λ is not resolved by float32 arithmetic: fewer than
# three significant digits of the gap survive when it is added to the identity.
_FLOAT32_GAP_FLOOR = 1e3 * float(jnp.finfo(jnp.float32).eps)


def enable_float64() -> None:
    """Switch JAX to 64-bit mode for the whole process, so that models built with
    `dtype=jnp.float64` and the `dtype=jnp.float64` option of the theory functions
    compute in float64.

    It changes a process-wide flag, so it is yours to call, at the start of a program,
    before any JAX array exists (arrays created earlier stay float32); no pcscale function
    calls it for you. It is the same as `jax.config.update("jax_enable_x64", True)`. To
    compute in float64 in one part of a program only, use JAX's scoped switch instead,
    `with jax.enable_x64(True): …`, which holds for the calling thread until the block
    ends (it is how `pcscale.experiments.run` runs a float64 config).
    """
    jax.config.update("jax_enable_x64", True)


@overload
def cast_model(model: PCModel, x: BatchX, y: BatchY, dtype) -> tuple[PCModel, Array, Array]: ...


@overload
def cast_model(model: PCModel, x: BatchX, y: None, dtype) -> tuple[PCModel, Array, None]: ...


@overload
def cast_model(model: PCModel, x: None, y: None, dtype) -> tuple[PCModel, None, None]: ...


def cast_model(model: PCModel, x, y, dtype):
    """The model and data in `dtype` (None: the model's own dtype)."""
    x = as_float_array(x, "x") if x is not None else None
    y = as_float_array(y, "y") if y is not None else None
    if dtype is None:
        return model, x, y
    try:
        dtype = jnp.dtype(dtype)
    except TypeError:
        raise ValueError(f"`dtype` must be a floating dtype, got {dtype!r}; e.g. dtype=jnp.float64.") from None
    if not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(f"`dtype` must be a floating dtype, got {dtype}; e.g. dtype=jnp.float64.")
    if dtype == jnp.float64 and not jax.config.read("jax_enable_x64"):
        raise ValueError(
            "`dtype` is float64 but JAX's 64-bit mode is off, so the computation would "
            "silently run in float32; call pcscale.theory.enable_float64() (or "
            'jax.config.update("jax_enable_x64", True)) at the start of the program.'
        )

    def cast(leaf):
        if eqx.is_inexact_array(leaf):
            return leaf.astype(dtype)
        return leaf

    model = jax.tree.map(cast, model)
    x = None if x is None else x.astype(dtype)
    y = None if y is None else y.astype(dtype)
    return model, x, y


def prepare(model, x, y, dtype, function: str) -> tuple[PCModel, Array, Array]:
    """Checked, dtype-cast model and data for a linear-theory entry point. Shapes and
    finiteness are validated inside the jitted computation (`validated`), so that they
    are checked at trace time and on device rather than re-traced on every call."""
    check_model(model, function)
    return cast_model(model, x, y, dtype)


def warn_if_unresolved(gap: Callable[[], Array], model: PCModel, function: str, stacklevel: int = 3) -> None:
    """Warn when float32 cannot resolve S − I/λ. `gap` returns ‖S‖₂ − 1/λ; it is only
    evaluated (and read back from the device) for float32 models with concrete values."""
    if model.dtype != jnp.float32:
        return
    value = gap()
    if isinstance(value, jax.core.Tracer):
        return
    relative = float(value) * model.output_precision
    # A gap of exactly 0 (no hidden layers) is resolved: S = I/λ exactly.
    if math.isfinite(relative) and 0 < relative < _FLOAT32_GAP_FLOOR:
        warnings.warn(
            f"{function}: ‖S − I/λ‖·λ = {relative:.2e} is below float32 resolution "
            f"(~{_FLOAT32_GAP_FLOOR:.1e}), so F* and 𝓛 (and PC and BP gradients) cannot be told "
            "apart in float32; pass dtype=jnp.float64 (after pcscale.theory.enable_float64()).",
            stacklevel=stacklevel,
        )


def check_key(key) -> None:
    """A clear error for something that is not a JAX PRNG key."""
    if isinstance(key, jax.Array):
        if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) and key.shape == ():
            return
        if key.dtype == jnp.uint32 and key.shape == (2,):
            return
    raise TypeError(
        f"`key` must be a JAX PRNG key, got {key!r}; pass e.g. key=jax.random.PRNGKey(0) "
        "or jax.random.key(0)."
    )
