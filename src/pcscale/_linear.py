"""The structure of linear PC networks, read from a model: whether it is linear (φ =
identity, no biases, MSE output, linear layer maps), its activity shapes and each layer
map's transpose. The linear theory and the automatic solver choice build on these."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp

from ._energy import MSE
from ._layer import PCLayer, identity
from ._model import PCModel
from .nn._mlp import Linear


def check_model(model, function: str, *, nonlinear_ok: bool = False) -> None:
    """Raise a clear error unless `model` is a PCModel the theory function supports."""
    if not isinstance(model, PCModel):
        raise TypeError(f"`model` must be a pcscale.PCModel, got {type(model).__name__}.")
    learnt = [i for i, layer in enumerate(model.layers) if layer.log_variance is not None]
    if learnt:
        raise ValueError(
            f"{function} supports fixed precisions only, but model.layers{learnt} learn a variance "
            "(log_variance), whose log-determinant term the closed forms leave out; fix the precisions "
            "instead (pcscale.with_precisions), or use the numerical tools (infer) for such a model."
        )
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


def is_linear(model: PCModel, shape: tuple[int, ...]) -> bool:
    """Whether the energy of `model` is quadratic in the activities with a Hessian that
    does not depend on the data: φ = identity, no biases, MSE, and layer maps 2 … L that
    are linear (traced by `jax.linear_transpose`) and map 0 to 0 (checked on the
    concrete weights)."""
    try:
        check_model(model, "")
        hidden, _ = activity_shapes(model, shape)
        for index in range(1, model.depth):
            transpose_of(model.layers[index], hidden[index - 1], index)
            if not isinstance(model.layers[index].module, Linear):
                zero = jnp.zeros(hidden[index - 1].shape, hidden[index - 1].dtype)
                if float(jnp.max(jnp.abs(model.layers[index](zero)))) != 0.0:
                    return False
    except (TypeError, ValueError):
        return False
    return True
