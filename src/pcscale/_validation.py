"""Boundary checks shared by the public entry points (model, inference, training)."""

from __future__ import annotations

import math
import numbers

import equinox as eqx
import jax
import jax.core
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike

_DTYPE_KINDS = {"U": "strings", "S": "byte strings", "O": "Python objects", "V": "raw bytes"}


def is_finite_real(value) -> bool:
    """A finite real number given as a Python or NumPy scalar (not a bool, not an
    array): the one test behind every numeric setting's validation."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _non_numeric_dtype(value):
    """The NumPy dtype of `value` if it is array-like but not numeric, else None."""
    dtype = getattr(value, "dtype", None)
    if dtype is None:
        try:
            dtype = np.asarray(value).dtype
        except (TypeError, ValueError):  # ragged or exotic input: reported as a non-array
            return None
    try:
        dtype = np.dtype(dtype)
    except TypeError:
        return None
    if np.issubdtype(dtype, np.number) or np.issubdtype(dtype, np.bool_):
        return None
    return dtype


def as_float_array(value, name: str) -> Array:
    """Convert to a JAX array and reject non-numeric input with a clear error."""
    try:
        array = jnp.asarray(value)
    except TypeError as error:
        dtype = _non_numeric_dtype(value)
        if dtype is not None:
            kind = _DTYPE_KINDS.get(dtype.kind, "non-numeric values")
            raise TypeError(
                f"`{name}` must be numeric, got {type(value).__name__} of dtype {dtype} "
                f"({kind}); convert it to numbers first, e.g. np.asarray({name}, dtype=np.float32), "
                "encoding categories as integers or one-hot vectors."
            ) from None
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
    if isinstance(array, jax.Array) and not array.is_fully_addressable:
        # A batch split over hosts cannot be fetched: reduce it where it lives (the
        # count is a replicated scalar every process can read).
        bad = int(jnp.sum(~jnp.isfinite(array)))
    else:  # on the host, so that this also works while an outer function is traced
        bad = int(np.size(array) - np.count_nonzero(np.isfinite(np.asarray(array))))
    if bad:
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
    # Integer targets of the output's shape may be one-hot rows (`check_one_hot` checks
    # their values); of any other shape they are class indices.
    if (
        needs_probabilities
        and jnp.issubdtype(y.dtype, jnp.integer)
        and tuple(y.shape[1:]) != tuple(output_shape)
    ):
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


def check_one_hot(y: Array, name: str = "y") -> Array:
    """Accept integer targets for a categorical (cross-entropy) energy only if they are
    one-hot along the last axis (zeros and a single 1): raise eagerly, or inside jit
    (via `eqx.error_if`), otherwise. Returns `y`, still integer; the caller casts it."""
    width = y.shape[-1] if y.ndim else 0
    advice = (
        f"cross-entropy needs one-hot (probability) targets: pass rows holding a single 1, or "
        f"convert class indices with jax.nn.one_hot(labels, {width})."
    )
    if isinstance(y, jax.core.Tracer):
        valid = jnp.all((y == 0) | (y == 1)) & jnp.all(jnp.sum(y, axis=-1) == 1)
        zero = eqx.error_if(
            jnp.zeros((), y.dtype),
            ~valid,
            f"`{name}` holds integers of the output's shape that are not one-hot rows; {advice}",
        )
        return y + zero
    values = np.asarray(y)
    binary = (values == 0) | (values == 1)
    rows = np.sum(values, axis=-1) == 1
    if not (np.all(binary) and np.all(rows)):
        bad = np.argwhere(~(np.all(binary, axis=-1) & rows))[0]
        index = tuple(int(i) for i in bad)
        raise ValueError(
            f"`{name}` holds integers (dtype {y.dtype}) of the output's shape that are not "
            f"one-hot rows: {name}[{', '.join(map(str, index))}] is {values[index].tolist()}; "
            f"{advice}"
        )
    return y


def check_opt_state(model, optimiser, opt_state) -> None:
    """Raise a ValueError naming `opt_state` unless it has the structure, leaf shapes
    and dtypes of `optimiser.init(eqx.filter(model, eqx.is_array))`, i.e. was made for
    this model (a state of a model of another width or depth would otherwise end in a
    raw JAX error inside the update). Costs one abstract evaluation of `optimiser.init`
    (`jax.eval_shape`: tracing only, no computation)."""
    fix = "initialise it for this model with opt_state = optimiser.init(eqx.filter(model, eqx.is_array))"
    params = eqx.filter(model, eqx.is_array)
    try:
        expected = jax.eval_shape(optimiser.init, params)
    except (TypeError, ValueError):
        raise ValueError(
            "`optimiser` cannot be initialised on this model's parameters (their pytree differs "
            "from the one it was built for), so it and `opt_state` were made for another model; "
            "build both for this model: optimiser = pcscale.make_optimiser(model, config), then "
            f"{fix}."
        ) from None
    expected_leaves, expected_def = jax.tree_util.tree_flatten_with_path(expected)
    leaves, treedef = jax.tree_util.tree_flatten_with_path(opt_state)
    if treedef != expected_def:
        raise ValueError(
            "`opt_state` does not fit this model and optimiser: its pytree structure differs "
            f"from that of optimiser.init for this model ({len(leaves)} leaves against "
            f"{len(expected_leaves)}, or the model metadata they record), so it was made for "
            f"another model (width, depth or architecture) or another optimiser; {fix}."
        )
    # Equal tree structures (checked above) give equally many leaves.
    for (path, leaf), (_, spec) in zip(leaves, expected_leaves, strict=True):
        shape, dtype = tuple(jnp.shape(leaf)), getattr(leaf, "dtype", None)
        if dtype is not None:  # as jit would see it (float64 is float32 without x64)
            dtype = jax.dtypes.canonicalize_dtype(dtype)
        if shape != tuple(spec.shape) or (dtype is not None and dtype != spec.dtype):
            raise ValueError(
                f"`opt_state` does not fit this model: its leaf {jax.tree_util.keystr(path)} has "
                f"shape {shape} and dtype {dtype}, where optimiser.init for this model gives "
                f"shape {tuple(spec.shape)} and dtype {spec.dtype}, so it was made for another "
                f"model (width, depth or dtype); {fix}."
            )


def validated(model, x: ArrayLike, y: ArrayLike, z=None) -> tuple[Array, Array]:
    """Shape checks and dtype casts of `model._check` (static: inside jit they run at
    trace time only), then finiteness checks on device."""
    checked_x, checked_y = model._check(x, y, z)
    return check_finite(checked_x, "x"), check_finite(checked_y, "y")
