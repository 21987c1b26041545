"""Boundary checks shared by the public entry points (model, inference, training)."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array


def as_float_array(value, name: str) -> Array:
    """Convert to a JAX array and reject non-numeric input with a clear error."""
    try:
        array = jnp.asarray(value)
    except TypeError as error:
        raise TypeError(
            f"`{name}` must be an array, got {type(value).__name__} ({error}); pass a JAX or NumPy array."
        ) from None
    if not (jnp.issubdtype(array.dtype, jnp.number) or jnp.issubdtype(array.dtype, jnp.bool_)):
        raise TypeError(f"`{name}` must be numeric, got dtype {array.dtype}; pass a float array.")
    return array


def cast_to(array: Array, dtype) -> Array:
    """Cast floating or integer data to the model's floating dtype, so that a float32
    model never silently computes in float64 (or the reverse)."""
    if dtype is None or array.dtype == dtype:
        return array
    return array.astype(dtype)


def check_finite(array: Array, name: str) -> Array:
    """Raise (eagerly or inside jit, via `eqx.error_if`) if `array` has a NaN or inf."""
    if isinstance(array, jax.core.Tracer):
        # Only a scalar passes through the check, which runs on one device, and the array
        # depends on it through `+ 0` (exact, except that −0.0 becomes +0.0): a batch
        # split over several devices stays split instead of being gathered onto the
        # checking device.
        zero = eqx.error_if(
            jnp.zeros((), array.dtype),
            ~jnp.all(jnp.isfinite(array)),
            f"`{name}` contains NaN or inf values; clean or mask the data before passing it.",
        )
        return array + zero
    if not bool(np.all(np.isfinite(np.asarray(array)))):
        bad = int(np.size(array) - np.count_nonzero(np.isfinite(np.asarray(array))))
        raise ValueError(
            f"`{name}` contains {bad} NaN or inf value(s); clean or mask the data before "
            "passing it."
        )
    return array


def check_x(x: Array) -> None:
    if x.ndim < 2:
        raise ValueError(
            f"`x` must be batched with the batch on axis 0, got shape {x.shape}; add a batch "
            "axis, e.g. x[None] for one sample."
        )
    if x.shape[0] < 1:
        raise ValueError(f"`x` must hold at least one sample, got shape {x.shape}; pass a non-empty batch.")


def check_y(x: Array, y: Array, output_shape: tuple[int, ...], needs_probabilities: bool) -> None:
    if y.ndim < 1 or y.shape[0] != x.shape[0]:
        raise ValueError(
            f"`x` and `y` must have the same batch size (axis 0), got x.shape={x.shape} and "
            f"y.shape={y.shape}; pass one target per input."
        )
    if needs_probabilities and jnp.issubdtype(y.dtype, jnp.integer):
        raise TypeError(
            f"`y` holds integer labels (dtype {y.dtype}, shape {y.shape}) but the output "
            "energy is cross-entropy, which needs one-hot targets; convert them with "
            f"jax.nn.one_hot(y, {output_shape[-1] if output_shape else 'num_classes'})."
        )
    if tuple(y.shape[1:]) != tuple(output_shape):
        raise ValueError(
            f"`y` has per-sample shape {tuple(y.shape[1:])} but the model's output has shape "
            f"{tuple(output_shape)}; the target width must equal the output width "
            "(build the model with output_dim matching the targets, or one-hot encode labels)."
        )


def validated(model, x: Array, y: Array, z=None) -> tuple[Array, Array]:
    """Shape checks and dtype casts of `model._check` (static: inside jit they run at
    trace time only), then finiteness checks on device."""
    x, y = model._check(x, y, z)
    return check_finite(x, "x"), check_finite(y, "y")
