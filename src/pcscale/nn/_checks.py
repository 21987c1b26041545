"""Argument checks shared by the builders."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from .._parameterisation import AbstractParameterisation


def positive_int(value, name: str, hint: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or int(value) < 1:
        raise ValueError(f"`{name}` must be a positive integer, got {value!r}; {hint}.")
    return int(value)


def check_parameterisation(parameterisation) -> None:
    if not isinstance(parameterisation, AbstractParameterisation):
        raise TypeError(
            f"`parameterisation` must be a pcscale parameterisation such as pcscale.MuPC(), got "
            f"{parameterisation!r}."
        )


def check_dtype(dtype) -> None:
    if jnp.dtype(dtype) == jnp.float64 and not jax.config.jax_enable_x64:
        raise ValueError(
            "`dtype` is float64 but JAX's 64-bit mode is off, so the weights would silently be "
            'float32; call jax.config.update("jax_enable_x64", True) before creating any array.'
        )
