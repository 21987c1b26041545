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


def check_key(key) -> None:
    """A typed key (`jax.random.key`) or a legacy uint32[2] key (`jax.random.PRNGKey`)."""
    dtype, shape = getattr(key, "dtype", None), getattr(key, "shape", None)
    if dtype is not None and shape is not None:
        if jnp.issubdtype(dtype, jax.dtypes.prng_key) and tuple(shape) == ():
            return
        if dtype == jnp.uint32 and tuple(shape) == (2,):
            return
        got = f"{type(key).__name__} of dtype {dtype} and shape {tuple(shape)}"
    else:
        got = f"{type(key).__name__} {key!r}"
    seed = key if isinstance(key, int) and not isinstance(key, bool) else 0
    raise TypeError(
        f"`key` must be a JAX PRNG key, got {got}; use key=jax.random.key({seed}) (a single "
        "key, not a batch of keys)."
    )


def check_parameterisation(parameterisation) -> None:
    if not isinstance(parameterisation, AbstractParameterisation):
        raise TypeError(
            f"`parameterisation` must be a pcscale parameterisation such as pcscale.MuPC(), got "
            f"{parameterisation!r}."
        )


def check_dtype(dtype) -> None:
    try:
        floating = jnp.issubdtype(jnp.dtype(dtype), jnp.floating)
    except TypeError:
        floating = False
    if not floating:
        name = getattr(dtype, "__name__", None) or repr(dtype)
        raise TypeError(
            f"`dtype` must be a floating dtype, got {name}; PC weights and activities are "
            "real-valued: use e.g. dtype=jnp.float32 (or jnp.float64, jnp.bfloat16)."
        )
    if jnp.dtype(dtype) == jnp.float64 and not jax.config.read("jax_enable_x64"):
        raise ValueError(
            "`dtype` is float64 but JAX's 64-bit mode is off, so the weights would silently be "
            'float32; call jax.config.update("jax_enable_x64", True) before creating any array.'
        )
