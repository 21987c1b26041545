"""What the linear theory needs from a PCModel: validation that it is linear, the shapes
of its activities, the transposes of its layer maps, and an optional dtype switch."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array

from .._energy import MSE
from .._layer import PCLayer, identity
from .._model import PCModel
from .._validation import as_float_array
from ..nn._mlp import Linear

# Below this relative size, S − I/λ is not resolved by float32 arithmetic: fewer than
# three significant digits of the gap survive when it is added to the identity.
_FLOAT32_GAP_FLOOR = 1e3 * float(jnp.finfo(jnp.float32).eps)


def enable_float64() -> None:
    """Switch JAX to 64-bit mode, so that models built with `dtype=jnp.float64` and the
    `dtype=jnp.float64` option of the theory functions compute in float64.

    Call it at the start of a program, before any JAX array exists (arrays created
    earlier stay float32). It is the same as `jax.config.update("jax_enable_x64", True)`.
    """
    jax.config.update("jax_enable_x64", True)


def check_model(model, function: str, *, nonlinear_ok: bool = False) -> None:
    """Raise a clear error unless `model` is a PCModel the theory function supports."""
    if not isinstance(model, PCModel):
        raise TypeError(f"`model` must be a pcscale.PCModel, got {type(model).__name__}.")
    if nonlinear_ok:
        return
    if not isinstance(model.output_energy, MSE):
        raise ValueError(
            f"{function} supports linear networks with an MSE output only, got output energy "
            f"{type(model.output_energy).__name__}; build the model with "
            "output_energy=pcscale.MSE() (the closed form does not exist for cross-entropy)."
        )
    for index, layer in enumerate(model.layers):
        if index > 0 and layer.activation is not identity:
            name = getattr(layer.activation, "__name__", repr(layer.activation))
            raise ValueError(
                f"{function} supports linear networks only, but model.layers[{index}] has "
                f"activation {name!r}; build the model with activation='linear' (pcscale.nn "
                "builders) or leave PCLayer's activation at its identity default (the closed "
                "form holds for φ = identity), or use the numerical tools (infer, "
                "hessian_spectrum) for nonlinear networks."
            )
        if layer.bias is not None:
            raise ValueError(
                f"{function} supports networks without biases only, but model.layers[{index}] "
                "has a bias; build the model with use_bias=False (the paper's MLPs have none)."
            )


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
    if dtype == jnp.float64 and not jax.config.jax_enable_x64:
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


def input_shape(model: PCModel, x) -> tuple[int, ...]:
    """Per-sample input shape: from `x` if given, else from a `pcscale.nn.Linear` first
    layer."""
    if x is not None:
        return tuple(jnp.shape(x)[1:])
    module = model.layers[0].module
    if isinstance(module, Linear):
        return (module.weight.shape[1],)
    raise ValueError(
        f"the first layer's module is a {type(module).__name__}, whose input shape cannot be "
        "read from its weights; pass an example batch `x` (only its shape is used)."
    )


def activity_shapes(model: PCModel, shape: tuple[int, ...]):
    """Shapes (jax.ShapeDtypeStruct) of z_1 … z_H and of the output, per sample."""
    example = jax.ShapeDtypeStruct(shape, model.dtype)
    try:
        hidden = jax.eval_shape(model.activities_one, example)
        out = jax.eval_shape(model.forward_one, example)
    except (TypeError, ValueError) as error:
        raise ValueError(
            f"the model cannot take inputs of per-sample shape {shape}: {error}. Check the "
            "input dimension the model was built with."
        ) from error
    return tuple(hidden), out


def transpose_of(layer: PCLayer, shape: jax.ShapeDtypeStruct, index: int):
    """v ↦ A_lᵀ v for the linear map of `layer` on inputs of `shape`.

    `jax.linear_transpose` rejects maps with non-linear operations when traced, which is
    how nonlinear modules are caught. It would silently drop a constant offset, so a
    module that is not a `pcscale.nn.Linear` is also checked (on device) to map 0 to 0.
    """
    zero = jnp.zeros(shape.shape, shape.dtype)
    try:
        transpose = jax.linear_transpose(layer, zero)
        jax.eval_shape(transpose, jax.ShapeDtypeStruct(jax.eval_shape(layer, zero).shape, shape.dtype))
    except (NotImplementedError, AssertionError, TypeError, ValueError, RuntimeError) as error:
        raise ValueError(
            f"model.layers[{index}] is not a linear map of its input ({type(error).__name__}: "
            f"{str(error)[:120]}); the linear theory supports linear layer maps only (no "
            "activations or other nonlinear operations inside modules)."
        ) from None
    if not isinstance(layer.module, Linear):
        offset = jnp.max(jnp.abs(layer(zero))) if zero.size else jnp.zeros(())
        transpose_checked = transpose

        def transpose(v):
            v = eqx.error_if(
                v,
                offset > 0,
                f"model.layers[{index}] maps 0 to a non-zero output (an affine map, e.g. a bias inside "
                "its module); the linear theory supports linear maps without offsets.",
            )
            return transpose_checked(v)

    return lambda v: transpose(v)[0]


def prepare(model, x, y, dtype, function: str):
    """Checked, dtype-cast model and data for a linear-theory entry point. Shapes and
    finiteness are validated inside the jitted computation (`validated`), so that they
    are checked at trace time and on device rather than re-traced on every call."""
    check_model(model, function)
    return cast_model(model, x, y, dtype)


def warn_if_unresolved(gap: Callable[[], Array], model: PCModel, function: str) -> None:
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
            stacklevel=3,
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
